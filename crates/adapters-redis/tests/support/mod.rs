//! A real `redis-server` for the tests: started on a free loopback port with
//! persistence off, as a child process that dies with its handle; stopped,
//! paused and restarted on the same port to play an outage.

// Test support: a failed setup step is the test's failure, so unwrap.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod tls;

/// The program the tests start (Debian's `redis-server` package).
const PROGRAM: &str = "redis-server";

/// How long a starting server may take to answer.
const START_WITHIN: Duration = Duration::from_secs(10);

/// A running `redis-server`, killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    /// The port it listens on (its TLS port for a TLS server).
    pub port: u16,
    /// Arguments beyond the port and the persistence settings.
    extra: Vec<String>,
    /// Whether it speaks TLS only (readiness is then a TCP accept).
    tls: bool,
    dir: PathBuf,
}

/// Whether the tests can run: `redis-server` is installed. Without it they
/// skip with a note, except under `CI=true`, where a missing server is a
/// failure rather than a silent pass.
pub fn available() -> bool {
    let found = Command::new(PROGRAM)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "redis-server is not installed (apt-get install redis-server), and CI=true"
        );
        println!("skipped: redis-server not installed (apt-get install redis-server)");
    }
    found
}

/// A port nobody listens on now (the kernel's pick; released at once, so a
/// server started on it may still lose a race, which [`RedisServer`]
/// retries).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .unwrap()
}

impl RedisServer {
    /// A plain server; `None` when the test is to skip (see [`available`]).
    pub fn start() -> Option<Self> {
        Self::start_with(&[])
    }

    /// A plain server with `extra` arguments (`--requirepass`, …).
    pub fn start_with(extra: &[&str]) -> Option<Self> {
        if !available() {
            return None;
        }
        Some(Self::launch(extra, false))
    }

    /// A server that speaks TLS only, with `extra` naming its certificate
    /// (`--tls-cert-file`, …); `port` is its TLS port.
    pub fn start_tls(extra: &[&str]) -> Option<Self> {
        if !available() {
            return None;
        }
        Some(Self::launch(extra, true))
    }

    /// A plain server on `port` (for a store made before its server);
    /// the caller checked [`available`].
    pub fn start_on(port: u16) -> Self {
        let mut server = Self::unstarted(&[], false);
        server.port = port;
        server.spawn().unwrap();
        server
    }

    fn unstarted(extra: &[&str], tls: bool) -> Self {
        let dir = std::env::temp_dir().join(format!("tokenjar-redis-{}-{}", std::process::id(), unique()));
        std::fs::create_dir_all(&dir).unwrap();
        Self {
            child: None,
            port: 0,
            extra: extra.iter().map(|&a| a.to_owned()).collect(),
            tls,
            dir,
        }
    }

    fn launch(extra: &[&str], tls: bool) -> Self {
        let mut server = Self::unstarted(extra, tls);
        // The port was free a moment ago; another test may take it first.
        for _ in 0..5 {
            server.port = free_port();
            if server.spawn().is_ok() {
                return server;
            }
        }
        panic!("redis-server did not start on any of 5 ports");
    }

    /// Starts the server on its port and waits until it answers; an error
    /// when it exited instead (its port taken).
    fn spawn(&mut self) -> Result<(), String> {
        let port = self.port.to_string();
        let mut command = Command::new(PROGRAM);
        if self.tls {
            command.args(["--port", "0", "--tls-port", &port]);
        } else {
            command.args(["--port", &port]);
        }
        command
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--loglevel", "warning", "--logfile", ""])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = command.spawn().unwrap();
        let deadline = Instant::now() + START_WITHIN;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return Err(format!("redis-server exited: {status}"));
            }
            if self.answers() {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("redis-server did not answer on port {port} within {START_WITHIN:?}");
            }
            // Polling for readiness, not waiting blind: the next try comes
            // as soon as this short pause ends.
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Whether the server answers: PING for a plain one (an error such as
    /// NOAUTH is an answer too), an accepted connection for a TLS one.
    fn answers(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        if self.tls {
            return true;
        }
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        let mut reply = [0u8; 64];
        stream.write_all(b"PING\r\n").is_ok()
            && stream
                .read(&mut reply)
                .is_ok_and(|n| n > 0 && matches!(reply[0], b'+' | b'-'))
    }

    /// `redis://127.0.0.1:PORT` (or `rediss://` for a TLS server).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The process id, for signals.
    fn pid(&self) -> String {
        self.child.as_ref().map(|c| c.id().to_string()).unwrap()
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.pid()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} failed");
    }

    /// Freezes the server (SIGSTOP): its connections stay open, nothing
    /// answers, as with a Redis stuck or a network that drops packets.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Lets a paused server go on.
    pub fn resume(&self) {
        self.signal("CONT");
    }

    /// Kills the server; its port refuses connections until
    /// [`RedisServer::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (empty: persistence is
    /// off) and waits until it answers.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn().unwrap();
    }

    /// Where its files go (the TLS test's certificates too).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // SIGKILL ends a paused process too.
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A number not handed out before in this process.
pub fn unique() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// A plain connection to the server beside the store's, for looking at
/// what the store wrote.
pub async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Every key in the server's database 0, walked with SCAN.
pub async fn all_keys(connection: &mut redis::aio::MultiplexedConnection) -> Vec<String> {
    let mut keys = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(100)
            .query_async(connection)
            .await
            .unwrap();
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    keys.sort();
    keys.dedup();
    keys
}

/// A key's remaining lifetime in milliseconds (-1: none, -2: no such key).
pub async fn pttl(connection: &mut redis::aio::MultiplexedConnection, key: &str) -> i64 {
    redis::cmd("PTTL").arg(key).query_async(connection).await.unwrap()
}
