//! End-to-end tests that a `text/event-stream` answer reaches the client as
//! the API sends it (SPEC §13): each event is passed on when it arrives, not
//! held back until more data or the end of the stream. No timing is assumed:
//! the API sends the next event only once the client has received the last
//! one, so a proxy that held events back would stall the test instead of
//! merely slowing it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokenjar_e2e::spawn_app;

/// How long one step (an event's way through tokenjar) may take before the
/// test calls it stalled: far above any real delay, only a bound on failure.
const STEP: Duration = Duration::from_secs(10);

/// An API with one event stream at any path: it answers with the stream's
/// head, then sends event `n` each time it is told that event `n - 1`
/// arrived, and ends the stream after the last.
struct EventApi {
    url: String,
    /// Tells the API to send the next event.
    next: mpsc::Sender<()>,
    /// What the API received: the request head.
    head: mpsc::Receiver<String>,
    thread: JoinHandle<()>,
}

impl EventApi {
    fn start(events: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (next, go) = mpsc::channel::<()>();
        let (report, head) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            stream.set_read_timeout(Some(STEP)).unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                    break;
                }
                request.push_str(&line);
            }
            report.send(request).unwrap();
            let mut out = stream;
            out.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\
                  transfer-encoding: chunked\r\n\r\n",
            )
            .unwrap();
            for n in 1..=events {
                if n > 1 && go.recv_timeout(STEP).is_err() {
                    return; // the client never saw the last event: the test fails there
                }
                let event = format!("id: {n}\ndata: event {n}\n\n");
                write!(out, "{:x}\r\n{event}\r\n", event.len()).unwrap();
                out.flush().unwrap();
            }
            out.write_all(b"0\r\n\r\n").unwrap();
        });
        Self {
            url,
            next,
            head,
            thread,
        }
    }
}

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
