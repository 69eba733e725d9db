//! A real Redis for the session-store tests (SPEC §17): Debian's
//! `redis-server` on a free loopback port with persistence off, started and
//! killed by the test, restartable on the same port, and `redis-cli` (from
//! the same package) to look at what tokenjar wrote (every key, its value
//! and TTL). Without `redis-server` a test skips with the install
//! hint, except under `CI=true`, where it fails.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::external::{find_program, programs_or_skip, send_signal};

/// Longest wait for the server to answer PING after a start.
const START_WAIT: Duration = Duration::from_secs(20);

/// A `redis-server` child process; killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    program: PathBuf,
    cli: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one on a free loopback port and waits until it answers.
    /// `None` (after printing why) without `redis-server`, outside CI.
    pub fn start() -> Option<Self> {
        let found = programs_or_skip(
            vec![
                find_program("redis-server", &["/usr/bin/redis-server"]),
                find_program("redis-cli", &["/usr/bin/redis-cli"]),
            ],
            "redis-server",
            "apt-get install redis-server",
        )?;
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|listener| listener.local_addr())
            .expect("a free loopback port")
            .port();
        let mut server = Self {
            program: found[0].clone(),
            cli: found[1].clone(),
            port,
            child: None,
        };
        server.spawn();
        Some(server)
    }

    fn spawn(&mut self) {
        let child = Command::new(&self.program)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {}: {e}", self.program.display()));
        self.child = Some(child);
        let deadline = Instant::now() + START_WAIT;
        while !self.cli(&["PING"]).is_ok_and(|pong| pong.trim() == "PONG") {
            assert!(
                Instant::now() < deadline,
                "redis-server on {} never answered",
                self.port
            );
            // A polling interval while the server starts, not a timing guess.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops it (SIGKILL, as a crash would).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            send_signal(child.id(), "KILL", false);
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Runs `redis-cli` against it with `args`; its output, one reply
    /// line each (`--raw`: values as they are).
    ///
    /// # Errors
    /// `redis-cli` could not run or the server did not answer.
    pub fn cli(&self, args: &[&str]) -> std::io::Result<String> {
        let output = Command::new(&self.cli)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "--raw"])
            .args(args)
            .stdin(Stdio::null())
            .output()?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        if !output.status.success() || text.starts_with("Could not connect") {
            return Err(std::io::Error::other(format!("redis-cli {args:?}: {text}")));
        }
        Ok(text)
    }

    /// Every key (`--scan`).
    pub fn keys(&self) -> Vec<String> {
        self.cli(&["--scan"])
            .expect("scan the keys")
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Everything stored under `key`, whatever its type (a string's value,
    /// a set's members, one a line).
    pub fn contents(&self, key: &str) -> String {
        match self.cli(&["TYPE", key]).expect("TYPE").trim() {
            "string" => self.cli(&["GET", key]).expect("GET"),
            "set" => self.cli(&["SMEMBERS", key]).expect("SMEMBERS"),
            other => panic!("{key} is a {other}"),
        }
    }

    /// The key's remaining lifetime in milliseconds (`PTTL`: -1 none, -2
    /// no such key).
    pub fn pttl(&self, key: &str) -> i64 {
        let text = self.cli(&["PTTL", key]).expect("PTTL");
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("PTTL {key}: {text:?}"))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
