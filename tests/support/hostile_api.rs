//! The hostile API: a raw HTTP/1.1 server on loopback that keeps connections
//! alive and answers with exact bytes, including what no well-behaved
//! framework sends: interim 1xx answers before the final one (with a pause
//! between them, as a slow API emitting `103 Early Hints` does), bodies cut
//! short of their `Content-Length`, answers followed by stray bytes, answers
//! without any length, and protocol switches nobody asked for.
//!
//! Every final answer names the request it answers, so a test can check
//! that each client only ever receives its own answer. By the last path
//! segments (under any base path):
//! - `…/login`: the interim answers, then 200
//!   `{"authToken": "tok-<username>", "user": "<username>"}` for a JSON body
//!   `{"username": …}`, or for `GET …/login?username=…` (an API that takes
//!   a login by GET, as some do);
//! - `…/status/NNN/login`: status NNN with `{"authToken": "tok-x", "error": "…"}`
//!   (a refusal that still carries a token);
//! - `…/short/N`: `Content-Length: N` but only `{"cut":true}`, then the
//!   connection closes;
//! - `…/short-login`: `Content-Length: 100` but only the 23 bytes of a
//!   complete login answer `{"authToken":"tok-cut"}`, then the close;
//! - `…/until-close`: an HTTP/1.1 200 with neither length nor chunking
//!   (its body runs until the close), `{"echo": "<target>"}`;
//! - `…/stray`: a complete answer followed at once by a second, unasked
//!   answer `{"stray": true}` in the same write;
//! - `…/switch`: `101 Switching Protocols` to a plain request;
//! - anything else: the interim answers, then 200 `{"echo": "<target>"}`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::load::chunked_progress;
use crate::raw::{dechunk, find};

/// Interim answers, as whole heads with their final CRLF CRLF.
pub const EARLY_HINTS: &str = "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\n";
/// `100 Continue`, sent whether or not it was asked for.
pub const CONTINUE: &str = "HTTP/1.1 100 Continue\r\n\r\n";
/// `102 Processing` (WebDAV).
pub const PROCESSING: &str = "HTTP/1.1 102 Processing\r\n\r\n";

/// How the API behaves before each final answer.
#[derive(Debug, Clone, Default)]
pub struct Interim {
    /// Interim heads sent first, in order.
    pub heads: Vec<&'static str>,
    /// Pause after the interim heads, before the final answer: the API is
    /// slow by design, so the final answer arrives well after the interim
    /// one (the window in which a proxy that took the interim answer as
    /// final would hand its connection to someone else).
    pub pause: Duration,
}

/// One request as the hostile API read it.
#[derive(Debug, Clone)]
struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The hostile API server; stops accepting on drop.
#[derive(Debug)]
pub struct HostileApi {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    requests: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
}

impl HostileApi {
    /// Starts on 127.0.0.1 port 0, sending `interim` before each final
    /// answer of the echo and login routes.
    pub fn start(interim: Interim) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(AtomicU64::new(0));
        let (stop_flag, counted, accepted) =
            (Arc::clone(&stop), Arc::clone(&requests), Arc::clone(&connections));
        let interim = Arc::new(interim);
        std::thread::Builder::new()
            .name("hostile-api".to_owned())
            .spawn(move || {
                for conn in listener.incoming() {
                    if stop_flag.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let (interim, counted) = (Arc::clone(&interim), Arc::clone(&counted));
                    std::thread::spawn(move || serve_connection(conn, &interim, &counted));
                }
            })
            .expect("spawn the hostile API thread");
        Self {
            addr,
            stop,
            requests,
            connections,
        }
    }

    /// `http://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Requests read so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for HostileApi {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so the thread sees the flag and ends.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

/// Answers requests on one keep-alive connection until it closes.
fn serve_connection(mut conn: TcpStream, interim: &Interim, counted: &AtomicU64) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(60)));
    let _ = conn.set_nodelay(true);
    let mut buf = Vec::new();
    while let Some(request) = read_request(&mut conn, &mut buf) {
        counted.fetch_add(1, Ordering::SeqCst);
        if !answer(&mut conn, &request, interim) {
            let _ = conn.shutdown(std::net::Shutdown::Both);
            return;
        }
    }
}

/// Writes the answer to `request`; false when the connection must close.
fn answer(conn: &mut TcpStream, request: &Request, interim: &Interim) -> bool {
    let segments: Vec<&str> = request
        .target
        .split('?')
        .next()
        .unwrap_or("")
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let last = segments.last().copied().unwrap_or("");
    let before_last = segments.len().checked_sub(2).map_or("", |i| segments[i]);
    let echo = json!({ "echo": request.target });

    if before_last == "short" {
        let declared: usize = last.parse().unwrap_or(100);
        let _ = conn.write_all(&cut_short(declared, &json!({ "cut": true })));
        return false;
    }
    match last {
        "short-login" => {
            let _ = conn.write_all(&cut_short(100, &json!({ "authToken": "tok-cut" })));
            return false;
        }
        "until-close" => {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n";
            let _ = conn.write_all(format!("{head}{echo}").as_bytes());
            return false;
        }
        "stray" => {
            let mut both = whole(200, &echo);
            both.extend_from_slice(&whole(200, &json!({ "stray": true })));
            return conn.write_all(&both).is_ok();
        }
        "switch" => {
            let head =
                "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n";
            let _ = conn.write_all(head.as_bytes());
            return false;
        }
        _ => {}
    }
    for head in &interim.heads {
        if conn.write_all(head.as_bytes()).is_err() {
            return false;
        }
    }
    let _ = conn.flush();
    if !interim.pause.is_zero() {
        // The slow API of the scenario: the final answer comes later.
        std::thread::sleep(interim.pause);
    }
    let refusal_status = segments
        .len()
        .checked_sub(3)
        .filter(|&i| last == "login" && segments[i] == "status")
        .and_then(|_| before_last.parse::<u16>().ok());
    let final_answer = if let Some(status) = refusal_status {
        whole(status, &json!({ "authToken": "tok-refused", "error": "refused" }))
    } else if last == "login" && request.method == "POST" {
        let creds: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        let user = creds["username"].as_str().unwrap_or("nobody");
        whole(200, &json!({ "authToken": format!("tok-{user}"), "user": user }))
    } else if last == "login" && request.method == "GET" {
        let query = request.target.split_once('?').map_or("", |(_, q)| q);
        let user = query
            .split('&')
            .find_map(|pair| pair.strip_prefix("username="))
            .unwrap_or("nobody");
        whole(200, &json!({ "authToken": format!("tok-{user}"), "user": user }))
    } else {
        whole(200, &echo)
    };
    conn.write_all(&final_answer).is_ok()
}

/// A whole answer with a `Content-Length`.
fn whole(status: u16, body: &Value) -> Vec<u8> {
    let body = body.to_string();
    format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// An answer announcing `declared` body bytes but carrying only `body`'s
/// JSON text (complete in itself, shorter than announced).
fn cut_short(declared: usize, body: &Value) -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {declared}\r\n\r\n{body}")
        .into_bytes()
}

/// Reads one request (head and body, by `Content-Length` or chunked) from
/// `conn`, keeping what follows in `buf`; `None` when the connection ends.
fn read_request(conn: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Request> {
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(at) = find(buf, b"\r\n\r\n") {
            break at;
        }
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_owned();
    let target = first.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            Some((name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        })
        .collect();
    buf.drain(..head_end + 4);
    let mut request = Request {
        method,
        target,
        headers,
        body: Vec::new(),
    };
    let chunked = request
        .header("transfer-encoding")
        .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
    if chunked {
        while !chunked_progress(buf).1 {
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let (body, used) = dechunk(buf);
        request.body = body;
        buf.drain(..used);
    } else {
        let length: usize = request
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < length {
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        request.body = buf.drain(..length).collect();
    }
    Some(request)
}
