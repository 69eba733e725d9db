//! End-to-end tests that a `text/event-stream` answer reaches the client as
//! the API sends it (SPEC §13): each event is passed on when it arrives, not
//! held back until more data or the end of the stream. No timing is assumed:
//! the API sends the next event only once the client has received the last
//! one, so a proxy that held events back would stall the test instead of
//! merely slowing it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;

use tokenjar_e2e::event_api::{EventApi, STEP};
use tokenjar_e2e::spawn_app;

/// Reads from `stream` until `needle` has arrived; everything read so far.
fn read_until(stream: &mut TcpStream, seen: &mut String, needle: &str) {
    let mut buf = [0u8; 4096];
    while !seen.contains(needle) {
        let n = stream
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("waiting for {needle:?} (got {seen:?}): {e}"));
        assert!(n > 0, "the stream ended before {needle:?}; got {seen:?}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

#[test]
fn each_event_reaches_the_client_before_the_api_sends_the_next() {
    const EVENTS: usize = 5;
    let api = EventApi::start(EVENTS);
    let app = spawn_app(&api.url, &[]);

    let mut client = TcpStream::connect(app.address).unwrap();
    client.set_read_timeout(Some(STEP)).unwrap();
    client
        .write_all(
            b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\
              Connection: close\r\n\r\n",
        )
        .unwrap();
    let mut seen = String::new();
    read_until(&mut client, &mut seen, "\r\n\r\n");
    let head = seen.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{seen}");
    assert!(head.contains("content-type: text/event-stream"), "{seen}");

    for n in 1..=EVENTS {
        // Event n must arrive while the API waits: the next is sent only now.
        read_until(&mut client, &mut seen, &format!("data: event {n}\n\n"));
        if n < EVENTS {
            api.next.send(()).unwrap();
        }
    }
    // The end of the stream reaches the client too.
    read_until(&mut client, &mut seen, "0\r\n\r\n");
    let request = api.head.recv_timeout(STEP).unwrap();
    assert!(request.starts_with("GET /events HTTP/1.1"), "{request}");
    api.thread.join().unwrap();
}
