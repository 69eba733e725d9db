//! Raw-socket helpers: an HTTP/1.1 client that sends exact bytes (no path
//! normalisation, any header), a raw upstream that answers canned bytes or
//! hangs up, and a URL nothing listens on.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use crate::app::Reply;

/// Alias kept for readability at call sites that use raw sockets.
pub type RawResponse = Reply;

const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Where `needle` first occurs in `haystack`.
pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Connects to `addr` with the I/O timeouts set and sends `request` whole.
fn connect_and_send(addr: SocketAddr, request: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("connect to tokenjar");
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
    stream.write_all(request).expect("send the raw request");
    stream
}

/// Reads from `stream` until a complete response head has arrived: every
/// byte read so far (the head and any body bytes that came with it), and
/// where the head's closing CRLF CRLF starts.
fn read_head(stream: &mut TcpStream) -> (Vec<u8>, usize) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(at) = find(&buf, b"\r\n\r\n") {
            return (buf, at);
        }
        let n = stream.read(&mut chunk).unwrap_or_else(|err| {
            panic!(
                "reading the response head failed ({err}); got so far: {:?}",
                String::from_utf8_lossy(&buf)
            )
        });
        assert!(
            n > 0,
            "connection closed before a complete response head; got: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The status and headers (names lower-case, values trimmed) of a response
/// head without its closing CRLF CRLF; `None` when the status line carries
/// no status code.
pub(crate) fn parse_head(head: &str) -> Option<(u16, Vec<(String, String)>)> {
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|s| s.parse::<u16>().ok())?;
    let headers = lines
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            Some((name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        })
        .collect();
    Some((status, headers))
}

/// How a response body is delimited.
pub(crate) enum Framing {
    /// No body at all (1xx, 204, 304, or the answer to a HEAD).
    Empty,
    /// Chunked transfer coding.
    Chunked,
    /// Exactly this many bytes (`Content-Length`).
    Length(usize),
    /// Everything up to the end of the connection.
    UntilClose,
}

/// The framing of a body with `status` and `headers` (names lower-case); a
/// chunked `Transfer-Encoding` wins over `Content-Length`.
pub(crate) fn framing(status: u16, headers: &[(String, String)]) -> Framing {
    let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    if status < 200 || status == 204 || status == 304 {
        Framing::Empty
    } else if header("transfer-encoding").is_some_and(|te| te.to_ascii_lowercase().contains("chunked")) {
        Framing::Chunked
    } else if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        Framing::Length(len)
    } else {
        Framing::UntilClose
    }
}

/// Sends `request` verbatim to `addr` and reads one response.
///
/// The body is read by `Content-Length`, chunked coding or until the server
/// closes; a response to a request starting with `HEAD ` has no body.
pub fn raw_request(addr: SocketAddr, request: &[u8]) -> Reply {
    let mut stream = connect_and_send(addr, request);
    let (buf, head_end) = read_head(&mut stream);
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut rest = buf[head_end + 4..].to_vec();
    let (status, headers) = parse_head(&head).unwrap_or_else(|| {
        let status_line = head.split("\r\n").next().unwrap_or("");
        panic!("bad status line {status_line:?}")
    });
    let framing = if request.starts_with(b"HEAD ") {
        Framing::Empty
    } else {
        framing(status, &headers)
    };
    let body = match framing {
        Framing::Empty => Vec::new(),
        Framing::Chunked => read_chunked(&mut stream, rest),
        Framing::Length(len) => {
            let mut chunk = [0u8; 16 * 1024];
            while rest.len() < len {
                let n = stream.read(&mut chunk).expect("read the response body");
                assert!(n > 0, "connection closed inside the response body");
                rest.extend_from_slice(&chunk[..n]);
            }
            rest.truncate(len);
            rest
        }
        Framing::UntilClose => {
            let _ = stream.read_to_end(&mut rest);
            rest
        }
    };
    Reply {
        status,
        headers,
        body: Bytes::from(body),
    }
}

fn read_chunked(stream: &mut TcpStream, mut buf: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let mut fill = |buf: &mut Vec<u8>, want: usize| {
        while buf.len() < want {
            let n = stream.read(&mut chunk).expect("read a chunk");
            assert!(n > 0, "connection closed inside a chunked body");
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    loop {
        let line_end = loop {
            if let Some(at) = find(&buf, b"\r\n") {
                break at;
            }
            let want = buf.len() + 1;
            fill(&mut buf, want);
        };
        let size_text = String::from_utf8_lossy(&buf[..line_end]).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size line {size_text:?}"));
        buf.drain(..line_end + 2);
        if size == 0 {
            return out;
        }
        fill(&mut buf, size + 2);
        out.extend_from_slice(&buf[..size]);
        buf.drain(..size + 2);
    }
}

/// Sends `request` verbatim, half-closes the connection (so the server sees
/// the end of everything the client will ever send) and returns every byte the
/// server wrote until it closed.
///
/// For requests whose exact bytes matter beyond one response: pipelined or
/// smuggled requests, or heads the server may refuse by closing. A server
/// that keeps a half-closed connection open past the I/O timeout (30 s) ends
/// the read as well.
pub fn raw_conversation(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).expect("connect to tokenjar");
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
    // The server may refuse the head and close before reading it all: a
    // failed write is part of the conversation, not a test failure.
    let _ = stream.write_all(request);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
        }
    }
    out
}

/// Splits the bytes a server sent on one connection into responses (bodies
/// delimited by `Content-Length`, chunked coding, or the end of the bytes).
/// Trailing bytes that do not form a complete head are ignored; a body cut
/// short is kept as far as it goes.
pub fn parse_responses(mut bytes: &[u8]) -> Vec<Reply> {
    let mut out = Vec::new();
    while let Some(head_end) = find(bytes, b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&bytes[..head_end]).into_owned();
        let Some((status, headers)) = parse_head(&head) else {
            break;
        };
        let rest = &bytes[head_end + 4..];
        let (body, used) = match framing(status, &headers) {
            Framing::Empty => (Vec::new(), 0),
            Framing::Chunked => dechunk(rest),
            Framing::Length(len) => {
                let len = len.min(rest.len());
                (rest[..len].to_vec(), len)
            }
            Framing::UntilClose => (rest.to_vec(), rest.len()),
        };
        out.push(Reply {
            status,
            headers,
            body: Bytes::from(body),
        });
        bytes = &rest[used..];
    }
    out
}

/// Decodes a chunked body from `bytes`: the body and the bytes it used.
pub(crate) fn dechunk(bytes: &[u8]) -> (Vec<u8>, usize) {
    let mut body = Vec::new();
    let mut at = 0;
    while let Some(line_end) = find(&bytes[at..], b"\r\n") {
        let size_text = String::from_utf8_lossy(&bytes[at..at + line_end]).into_owned();
        let Ok(size) = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16) else {
            break;
        };
        at += line_end + 2;
        if size == 0 {
            // The last chunk; skip the (empty) trailer section's CRLF.
            if bytes[at..].starts_with(b"\r\n") {
                at += 2;
            }
            return (body, at);
        }
        let end = (at + size).min(bytes.len());
        body.extend_from_slice(&bytes[at..end]);
        at = (end + 2).min(bytes.len());
    }
    (body, at)
}

/// A response read as it arrives: the head at once, the body piece by piece,
/// so a test can act (signal the server, release more of the API's answer)
/// in the middle of a download.
#[derive(Debug)]
pub struct RawStream {
    stream: TcpStream,
    /// Status code.
    pub status: u16,
    /// Headers, names lower-case.
    pub headers: Vec<(String, String)>,
    pending: Vec<u8>,
}

impl RawStream {
    /// Sends `request` verbatim and reads the response head (body bytes that
    /// came with it are kept for [`RawStream::read_some`]).
    pub fn open(addr: SocketAddr, request: &[u8]) -> Self {
        let mut stream = connect_and_send(addr, request);
        let (buf, head_end) = read_head(&mut stream);
        let (status, headers) =
            parse_head(&String::from_utf8_lossy(&buf[..head_end])).expect("a response head");
        Self {
            stream,
            status,
            headers,
            pending: buf[head_end + 4..].to_vec(),
        }
    }

    /// The first value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The next body bytes as they arrive: `Ok(empty)` when the server closed
    /// the connection, `Err` when it reset it or nothing came for 30 s.
    pub fn read_some(&mut self) -> std::io::Result<Vec<u8>> {
        if !self.pending.is_empty() {
            return Ok(std::mem::take(&mut self.pending));
        }
        let mut chunk = vec![0u8; 64 * 1024];
        let n = self.stream.read(&mut chunk)?;
        chunk.truncate(n);
        Ok(chunk)
    }
}

/// A URL on loopback where nothing listens (a port bound, then closed).
pub fn refused_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("http://{addr}")
}

/// A raw upstream on loopback: for each connection it reads the request head,
/// records it, then either writes canned bytes and closes, or just closes.
#[derive(Debug)]
pub struct RawUpstream {
    addr: SocketAddr,
    tls: bool,
    stop: Arc<AtomicBool>,
    heads: Arc<Mutex<Vec<String>>>,
}

impl RawUpstream {
    /// Answers every request with `response` (exact bytes) and closes.
    pub fn answering(response: &[u8]) -> Self {
        Self::start(Some(response.to_vec()), None)
    }

    /// Like [`RawUpstream::answering`], over TLS with `tls`: the bytes
    /// are what the TLS session carries.
    pub fn answering_tls(response: &[u8], tls: rustls::ServerConfig) -> Self {
        Self::start(Some(response.to_vec()), Some(Arc::new(tls)))
    }

    /// Closes every connection after reading the request head, answering
    /// nothing.
    pub fn closing() -> Self {
        Self::start(None, None)
    }

    fn start(response: Option<Vec<u8>>, tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let over_tls = tls.is_some();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (stop_flag, seen) = (Arc::clone(&stop), Arc::clone(&heads));
        std::thread::Builder::new()
            .name("raw-upstream".to_owned())
            .spawn(move || {
                for conn in listener.incoming() {
                    if stop_flag.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(tcp) = conn else { continue };
                    let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut conn = match &tls {
                        None => Conn::Plain(tcp),
                        Some(tls) => match rustls::ServerConnection::new(Arc::clone(tls)) {
                            Ok(session) => Conn::Tls(Box::new(rustls::StreamOwned::new(session, tcp))),
                            Err(_) => continue,
                        },
                    };
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while find(&buf, b"\r\n\r\n").is_none() {
                        match conn.read(&mut chunk) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    if buf.is_empty() {
                        // A bare connect (e.g. a reachability probe) is no request.
                        continue;
                    }
                    seen.lock()
                        .expect("lock")
                        .push(String::from_utf8_lossy(&buf).into_owned());
                    if let Some(response) = &response {
                        let _ = conn.write_all(response);
                        let _ = conn.flush();
                    }
                    conn.close();
                }
            })
            .expect("spawn the raw upstream thread");
        Self {
            addr,
            tls: over_tls,
            stop,
            heads,
        }
    }

    /// `http://127.0.0.1:PORT` (`https://` over TLS) followed by `path`.
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.addr)
    }

    /// The request heads received so far (request line and headers).
    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().expect("lock").clone()
    }
}

/// A raw upstream's connection: plain, or a TLS session over it.
enum Conn {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>),
}

impl Conn {
    /// Ends the connection (TLS: with its close_notify first).
    fn close(&mut self) {
        if let Self::Tls(tls) = self {
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
        let tcp = match self {
            Self::Plain(tcp) => tcp,
            Self::Tls(tls) => &mut tls.sock,
        };
        let _ = tcp.shutdown(std::net::Shutdown::Both);
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Self::Plain(tcp) => tcp.read(buf),
            Self::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::Plain(tcp) => tcp.write(buf),
            Self::Tls(tls) => tls.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Plain(tcp) => tcp.flush(),
            Self::Tls(tls) => tls.flush(),
        }
    }
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so the thread sees the flag and ends.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_responses, raw_conversation, raw_request, refused_url, RawStream, RawUpstream};
    use crate::RecordingApi;
    use std::io::{Read, Write};

    #[test]
    fn raw_client_and_upstreams_work() {
        let api = RecordingApi::start();
        let reply = raw_request(
            api.addr(),
            b"GET /v1/a/../b?x=%2F HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json()["target"], "/v1/a/../b?x=%2F");
        assert_eq!(api.last_request().target, "/v1/a/../b?x=%2F");

        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let upstream = RawUpstream::answering(chunked);
        let addr = upstream.url("").trim_start_matches("http://").parse().unwrap();
        let reply = raw_request(addr, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!((reply.status, reply.text().as_str()), (200, "abcde"));
        assert_eq!(reply.header("x-a"), Some("1"));
        assert_eq!(upstream.heads(), vec!["GET / HTTP/1.1\r\nHost: h\r\n\r\n"]);

        let closing = RawUpstream::closing();
        let addr: std::net::SocketAddr = closing.url("").trim_start_matches("http://").parse().unwrap();
        let mut conn = std::net::TcpStream::connect(addr).unwrap();
        conn.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let mut answer = Vec::new();
        let _ = conn.read_to_end(&mut answer);
        assert!(answer.is_empty(), "a closing upstream answers nothing");

        let refused: std::net::SocketAddr = refused_url().trim_start_matches("http://").parse().unwrap();
        assert!(std::net::TcpStream::connect(refused).is_err());
    }

    #[test]
    fn conversations_split_into_responses() {
        let bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiHTTP/1.1 404 Not Found\r\n\
            Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nHTTP/1.1 400 Bad Request\r\n\r\ntail";
        let replies = parse_responses(bytes);
        let seen: Vec<(u16, String)> = replies.iter().map(|r| (r.status, r.text())).collect();
        assert_eq!(
            seen,
            vec![(200, "hi".into()), (404, "abc".into()), (400, "tail".into())]
        );
        assert!(parse_responses(b"").is_empty());
        assert!(parse_responses(b"HTTP/1.1 200 OK\r\nContent-Le").is_empty());

        // Against a real server: two pipelined requests, two answers, and a
        // streamed read of the second one's head and body.
        let api = crate::RecordingApi::start();
        let two = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n";
        let replies = parse_responses(&raw_conversation(api.addr(), two));
        assert_eq!(replies.len(), 2);
        assert_eq!(replies[1].json()["target"], "/b");
        let mut stream = RawStream::open(
            api.addr(),
            b"GET /download/10 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(
            (stream.status, stream.header("content-length")),
            (200, Some("10"))
        );
        let mut body = Vec::new();
        loop {
            let bytes = stream.read_some().unwrap();
            if bytes.is_empty() {
                break;
            }
            body.extend_from_slice(&bytes);
        }
        assert_eq!(body, (0u8..10).collect::<Vec<_>>());
    }
}
