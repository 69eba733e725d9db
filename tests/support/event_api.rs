//! A server-sent events API for tests: it answers one request with an event
//! stream and sends each next event only when told, so that a test can
//! check that each event reached the client before the API sends the next
//! (SPEC §13) without assuming any timing.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How long one step (an event's way through tokenjar) may take before the
/// test calls it stalled: far above any real delay, only a bound on failure.
pub const STEP: Duration = Duration::from_secs(10);

/// An API with one event stream at any path: it answers with the stream's
/// head, then sends event `n` each time it is told that event `n - 1`
/// arrived, and ends the stream after the last.
pub struct EventApi {
    /// The API's base URL.
    pub url: String,
    /// Tells the API to send the next event.
    pub next: mpsc::Sender<()>,
    /// What the API received: the request head.
    pub head: mpsc::Receiver<String>,
    /// The API's thread; it ends after the last event.
    pub thread: JoinHandle<()>,
}

impl EventApi {
    /// Listens on a free loopback port for one request; sends `events` events.
    pub fn start(events: usize) -> Self {
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
