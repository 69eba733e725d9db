//! Helpers for load and endurance tests: a keep-alive HTTP/1.1 client on a
//! blocking socket that reports failures instead of panicking (a load test
//! counts them), a scripted upstream whose every byte and hang-up the test
//! drives, and readings of a process's memory and open descriptors.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::app::{Reply, TestApp};
use crate::raw::{find, framing, parse_head, Framing};

/// A field of `/proc/PID/status` in KiB (`VmRSS`, `VmHWM`, ...).
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|err| panic!("read /proc/{pid}/status: {err}"));
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Number of open file descriptors of process `pid` (`/proc/PID/fd`).
pub fn proc_fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|err| panic!("list /proc/{pid}/fd: {err}"))
        .count()
}

/// The soft limit on open files of this process (`/proc/self/limits`);
/// `None` when unlimited or unreadable. Child processes inherit it.
pub fn open_files_soft_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

impl TestApp {
    /// Current resident memory of the child (`VmRSS`), in KiB.
    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.pid, "VmRSS")
    }

    /// Open file descriptors of the child: sockets (clients, listener,
    /// upstream pool), pipes, epoll and event fds.
    pub fn fd_count(&self) -> usize {
        proc_fd_count(self.pid)
    }

    /// Waits until the child's fd count is at most `limit` (checked every
    /// 20 ms, at most `within`); the last count seen.
    ///
    /// Connections close asynchronously on the server's side, so a test
    /// waits for the condition rather than reading once.
    pub fn wait_fds_at_most(&self, limit: usize, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            let count = self.fd_count();
            if count <= limit || Instant::now() >= deadline {
                return count;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the child's fd count stops changing (the same for five
    /// readings 50 ms apart, at most `within`) and returns it: a baseline
    /// once closing connections are gone.
    pub fn settled_fd_count(&self, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        let mut last = self.fd_count();
        let mut same = 0;
        while same < 5 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            let count = self.fd_count();
            same = if count == last { same + 1 } else { 0 };
            last = count;
        }
        last
    }

    /// Waits until the child's `VmRSS` is at most `limit_kib` (checked every
    /// 50 ms, at most `within`); the last reading.
    pub fn wait_rss_at_most(&self, limit_kib: u64, within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            let rss = self.rss_kib();
            if rss <= limit_kib || Instant::now() >= deadline {
                return rss;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// One client connection that keeps alive across requests. Every failure is
/// an `Err` (the load test decides what it means), never a panic.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// The server said `Connection: close` or ended the body by closing.
    pub closed: bool,
}

impl Conn {
    /// Connects to `addr`; every read and write times out after `timeout`.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> std::io::Result<Self> {
        // A bounded connect: a full accept queue makes a plain connect retry
        // its SYN for minutes.
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: Vec::new(),
            closed: false,
        })
    }

    /// Changes the read and write timeout.
    pub fn set_timeout(&self, timeout: Duration) -> std::io::Result<()> {
        self.stream.set_read_timeout(Some(timeout))?;
        self.stream.set_write_timeout(Some(timeout))
    }

    /// Writes `bytes` (a request, or part of one).
    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Sends one request and reads its response.
    pub fn request(&mut self, request: &[u8]) -> std::io::Result<Reply> {
        self.send(request)?;
        self.read_response(request.starts_with(b"HEAD "))
    }

    fn fill(&mut self) -> std::io::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::new(
                ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// Reads a response head: status and headers (names lower-case). Body
    /// bytes that came with it stay buffered for the next read.
    pub fn read_head(&mut self) -> std::io::Result<(u16, Vec<(String, String)>)> {
        let head_end = loop {
            if let Some(at) = find(&self.buf, b"\r\n\r\n") {
                break at;
            }
            self.fill()?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        self.buf.drain(..head_end + 4);
        parse_head(&head)
            .ok_or_else(|| std::io::Error::new(ErrorKind::InvalidData, format!("bad head {head:?}")))
    }

    /// The next bytes from the server, buffered ones first: empty when it
    /// closed the connection; `Err` on a reset or a timeout.
    pub fn read_some(&mut self) -> std::io::Result<Vec<u8>> {
        if !self.buf.is_empty() {
            return Ok(std::mem::take(&mut self.buf));
        }
        let mut chunk = vec![0u8; 64 * 1024];
        let n = self.stream.read(&mut chunk)?;
        chunk.truncate(n);
        Ok(chunk)
    }

    /// Bytes waiting in this socket's receive queue (up to `max`), without
    /// consuming them: how far a server got writing to a client that does
    /// not read.
    pub fn queued_bytes(&self, max: usize) -> std::io::Result<usize> {
        self.stream.set_nonblocking(true)?;
        let mut probe = vec![0u8; max];
        let seen = match self.stream.peek(&mut probe) {
            Ok(n) => Ok(n),
            Err(err) if err.kind() == ErrorKind::WouldBlock => Ok(0),
            Err(err) => Err(err),
        };
        self.stream.set_nonblocking(false)?;
        seen.map(|n| n + self.buf.len())
    }

    /// Reads one whole response (body by `Content-Length`, chunked coding or
    /// until the server closes).
    pub fn read_response(&mut self, head_only: bool) -> std::io::Result<Reply> {
        let (status, headers) = self.read_head()?;
        let connection = headers.iter().find(|(n, _)| n == "connection");
        if connection.is_some_and(|(_, v)| v.to_ascii_lowercase().contains("close")) {
            self.closed = true;
        }
        let framing = if head_only {
            Framing::Empty
        } else {
            framing(status, &headers)
        };
        let body = match framing {
            Framing::Empty => Vec::new(),
            Framing::Chunked => self.read_chunked()?,
            Framing::Length(len) => {
                while self.buf.len() < len {
                    self.fill()?;
                }
                self.buf.drain(..len).collect()
            }
            Framing::UntilClose => {
                // Delimited by the end of the connection.
                loop {
                    match self.fill() {
                        Ok(()) => {}
                        Err(err) if err.kind() == ErrorKind::UnexpectedEof => break,
                        Err(err) => return Err(err),
                    }
                }
                self.closed = true;
                std::mem::take(&mut self.buf)
            }
        };
        Ok(Reply {
            status,
            headers,
            body: Bytes::from(body),
        })
    }

    fn read_chunked(&mut self) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let line_end = loop {
                if let Some(at) = find(&self.buf, b"\r\n") {
                    break at;
                }
                self.fill()?;
            };
            let text = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
            let size =
                usize::from_str_radix(text.split(';').next().unwrap_or("").trim(), 16).map_err(|_| {
                    std::io::Error::new(ErrorKind::InvalidData, format!("bad chunk size {text:?}"))
                })?;
            self.buf.drain(..line_end + 2);
            if size == 0 {
                // No trailers are sent in these tests: just the final CRLF.
                while self.buf.len() < 2 {
                    self.fill()?;
                }
                self.buf.drain(..2);
                return Ok(out);
            }
            while self.buf.len() < size + 2 {
                self.fill()?;
            }
            out.extend_from_slice(&self.buf[..size]);
            self.buf.drain(..size + 2);
        }
    }
}

/// How far a chunked body got: the data bytes and whether the final
/// zero-size chunk arrived (a complete body) or the bytes ended before it
/// (a cut stream).
pub fn chunked_progress(mut bytes: &[u8]) -> (usize, bool) {
    let mut data = 0;
    loop {
        let Some(line_end) = find(bytes, b"\r\n") else {
            return (data, false);
        };
        let text = String::from_utf8_lossy(&bytes[..line_end]).into_owned();
        let Ok(size) = usize::from_str_radix(text.split(';').next().unwrap_or("").trim(), 16) else {
            return (data, false);
        };
        bytes = &bytes[line_end + 2..];
        if size == 0 {
            return (data, bytes.starts_with(b"\r\n"));
        }
        if bytes.len() < size + 2 {
            return (data + bytes.len().min(size), false);
        }
        data += size;
        bytes = &bytes[size + 2..];
    }
}

/// An upstream whose connections the test drives byte by byte: it accepts
/// on 127.0.0.1 and hands each connection to the test, which decides what
/// to write and how to hang up (cleanly, or with a reset).
#[derive(Debug)]
pub struct ScriptedUpstream {
    addr: SocketAddr,
    accepted: mpsc::Receiver<TcpStream>,
    stop: Arc<AtomicBool>,
}

impl ScriptedUpstream {
    /// Starts accepting on a free port.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, accepted) = mpsc::channel();
        let stop_flag = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("scripted-upstream".to_owned())
            .spawn(move || {
                for conn in listener.incoming() {
                    if stop_flag.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    if tx.send(conn).is_err() {
                        break;
                    }
                }
            })
            .expect("spawn the scripted upstream thread");
        Self { addr, accepted, stop }
    }

    /// `http://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The next connection tokenjar opened (waits at most `within`).
    pub fn next_conn(&self, within: Duration) -> ScriptedConn {
        let stream = self
            .accepted
            .recv_timeout(within)
            .unwrap_or_else(|_| panic!("no connection reached the scripted upstream within {within:?}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        stream
            .set_write_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        ScriptedConn { stream }
    }

    /// Answers the next request with `200 ok` and `Connection: close` (so it
    /// is not pooled) and returns the request head.
    pub fn serve_ok(&self, within: Duration) -> String {
        let mut conn = self.next_conn(within);
        let head = conn.read_head();
        conn.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        conn.close();
        head
    }
}

impl Drop for ScriptedUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so the thread sees the flag and ends.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

/// One connection of a [`ScriptedUpstream`].
#[derive(Debug)]
pub struct ScriptedConn {
    stream: TcpStream,
}

impl ScriptedConn {
    /// Waits for the whole request head without consuming it (so that a
    /// later [`ScriptedConn::reset`] has unread data to reset with).
    pub fn peek_head(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut probe = vec![0u8; 64 * 1024];
        loop {
            let n = self.stream.peek(&mut probe).expect("peek the request head");
            if let Some(at) = find(&probe[..n], b"\r\n\r\n") {
                return String::from_utf8_lossy(&probe[..at + 4]).into_owned();
            }
            assert!(n > 0, "tokenjar closed before sending a request head");
            assert!(Instant::now() < deadline, "no complete request head within 10 s");
            // Part of the head is there; the rest follows at once on loopback.
            std::thread::yield_now();
        }
    }

    /// Reads (consumes) the request head.
    pub fn read_head(&mut self) -> String {
        let head = self.peek_head();
        let mut sink = vec![0u8; head.len()];
        self.stream.read_exact(&mut sink).expect("read the request head");
        head
    }

    /// Writes exact bytes.
    pub fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to tokenjar");
        self.stream.flush().expect("flush");
    }

    /// Closes the connection with a TCP reset. Linux answers a close with a
    /// RST instead of a FIN when received data was never read, so the
    /// request must still be unread ([`ScriptedConn::peek_head`]); std has no
    /// stable `SO_LINGER` to do it otherwise.
    pub fn reset(self) {
        self.stream.set_nonblocking(true).expect("nonblocking");
        let mut probe = [0u8; 1];
        let unread = matches!(self.stream.peek(&mut probe), Ok(n) if n > 0);
        assert!(
            unread,
            "a reset needs unread request bytes: use peek_head, not read_head"
        );
        drop(self.stream);
    }

    /// Closes the connection cleanly (FIN) after reading whatever tokenjar
    /// still sends, so that no reset happens.
    pub fn close(mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
        let _ = self.stream.set_read_timeout(Some(Duration::from_secs(2)));
        let mut sink = [0u8; 4096];
        while matches!(self.stream.read(&mut sink), Ok(n) if n > 0) {}
    }
}

#[cfg(test)]
mod tests {
    use super::{chunked_progress, open_files_soft_limit, Conn, ScriptedUpstream};
    use crate::RecordingApi;
    use std::io::ErrorKind;
    use std::time::{Duration, Instant};

    #[test]
    fn chunked_progress_tells_complete_from_cut() {
        assert_eq!(chunked_progress(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), (5, true));
        assert_eq!(chunked_progress(b"3\r\nabc\r\n2\r\nde\r\n"), (5, false));
        assert_eq!(chunked_progress(b"3\r\nabc\r\n5\r\nde"), (5, false));
        assert_eq!(chunked_progress(b""), (0, false));
        assert!(open_files_soft_limit().is_some_and(|n| n > 0));
    }

    /// The keep-alive client against the recording API, and a scripted
    /// upstream's reset seen by a plain client.
    #[test]
    fn keep_alive_client_and_scripted_upstream_work() {
        let api = RecordingApi::start_counting();
        let mut conn = Conn::connect(api.addr(), Duration::from_secs(10)).unwrap();
        for i in 0..3 {
            let reply = conn
                .request(format!("GET /n/{i} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes())
                .unwrap();
            assert_eq!(reply.json()["target"], format!("/n/{i}"));
        }
        let reply = conn
            .request(b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc")
            .unwrap();
        assert_eq!(reply.json()["received"], 3);
        assert_eq!(api.received(), 4);
        assert!(api.requests().is_empty(), "counting mode keeps no records");

        let upstream = ScriptedUpstream::start();
        let addr = upstream.url("").trim_start_matches("http://").parse().unwrap();
        let mut client = Conn::connect(addr, Duration::from_secs(10)).unwrap();
        client.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
        let mut conn = upstream.next_conn(Duration::from_secs(10));
        assert!(conn.peek_head().starts_with("GET / HTTP/1.1"));
        conn.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
        let (status, _) = client.read_head().unwrap();
        assert_eq!(status, 200);
        let mut got = Vec::new();
        while got.len() < 3 {
            got.extend(client.read_some().unwrap());
        }
        conn.reset();
        let err = client.read_some().expect_err("a reset, not a clean end");
        assert_eq!(err.kind(), ErrorKind::ConnectionReset);
    }

    /// A stopped recording API refuses connections and drops open ones; a
    /// restarted one answers on the same port, keeping its count.
    #[test]
    fn the_recording_api_stops_and_restarts_on_its_port() {
        let mut api = RecordingApi::start_counting();
        let mut kept = Conn::connect(api.addr(), Duration::from_secs(10)).unwrap();
        assert_eq!(
            kept.request(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
                .unwrap()
                .status,
            200
        );
        api.stop();
        let refused = std::net::TcpStream::connect(api.addr()).expect_err("nothing listens");
        assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
        // A forced stop does not wait for the worker thread, which drops its
        // connections as it winds down a moment later: until then it may
        // still answer on them (actix-server 2 `worker.rs`).
        let deadline = Instant::now() + Duration::from_secs(10);
        let dropped = loop {
            if kept.request(b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n").is_err() {
                break true;
            }
            if Instant::now() > deadline {
                break false;
            }
        };
        assert!(dropped, "open connections are dropped");
        let before_restart = api.received();
        api.restart();
        let mut fresh = Conn::connect(api.addr(), Duration::from_secs(10)).unwrap();
        assert_eq!(
            fresh
                .request(b"GET /c HTTP/1.1\r\nHost: h\r\n\r\n")
                .unwrap()
                .status,
            200
        );
        assert_eq!(api.received(), before_restart + 1);
    }
}
