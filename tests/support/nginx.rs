//! nginx as a round-robin load balancer in front of two tokenjar instances
//! (`tests/nginx/lb.conf.template`), for the tests of several instances
//! (scale.rs, refresh_instances.rs): started on a free loopback port in a
//! prefix directory of its own, stopped with its worker on drop.

use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::external::send_signal;
use crate::{workspace_root, TempDir};

/// Longest wait for nginx to start.
const WAIT: Duration = Duration::from_secs(20);

/// How often the start is re-checked.
const POLL: Duration = Duration::from_millis(20);

/// nginx: started in its own process group so that stopping it takes its
/// worker too.
#[derive(Debug)]
pub struct Nginx {
    child: Child,
    port: u16,
    prefix: TempDir,
}

impl Nginx {
    /// Fills in the template for instances `a` and `b` and starts nginx on a
    /// free loopback port; retries with another port if that one was taken
    /// in between (ports are picked by binding port 0 and letting go).
    pub fn start(program: &Path, a: SocketAddr, b: SocketAddr) -> Self {
        let template = std::fs::read_to_string(workspace_root().join("tests/nginx/lb.conf.template"))
            .expect("read tests/nginx/lb.conf.template");
        let mut last_error = String::new();
        for _ in 0..5 {
            let prefix = TempDir::new("nginx");
            let port = free_port();
            let conf = fill(&template, prefix.path(), port, a, b);
            prefix.write("nginx.conf", &conf);
            let child = Command::new(program)
                .arg("-p")
                .arg(prefix.path())
                .arg("-c")
                .arg(prefix.path().join("nginx.conf"))
                .arg("-e")
                .arg(prefix.path().join("error.log"))
                .process_group(0)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|err| panic!("could not start {}: {err}", program.display()));
            let mut nginx = Self { child, port, prefix };
            match nginx.wait_until_listening() {
                Ok(()) => return nginx,
                Err(error) => last_error = error,
            }
            if !last_error.contains("Address already in use") {
                break;
            }
        }
        panic!("nginx did not start:\n{last_error}");
    }

    /// nginx writes its pid file only once its listening socket is bound;
    /// an early exit means it failed (the error log says why).
    fn wait_until_listening(&mut self) -> Result<(), String> {
        let pid_file = self.prefix.path().join("nginx.pid");
        let deadline = Instant::now() + WAIT;
        loop {
            let pid = std::fs::read_to_string(&pid_file).unwrap_or_default();
            if pid.trim() == self.child.id().to_string() {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("nginx exited ({status}):\n{}", self.error_log()));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "nginx wrote no pid file within {WAIT:?}:\n{}",
                    self.error_log()
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    /// `http://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The loopback address nginx listens on.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `http://127.0.0.1:PORT`: the origin a browser using the balancer has.
    pub fn origin(&self) -> String {
        self.url("")
    }

    /// nginx's error log so far.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.prefix.path().join("error.log")).unwrap_or_default()
    }

    /// nginx's access log so far: one line per request, naming the
    /// instance that answered it (`upstream=127.0.0.1:PORT`).
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.prefix.path().join("access.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        send_signal(self.child.id(), "KILL", true);
        let _ = self.child.wait();
    }
}

/// The template with every `@NAME@` replaced.
fn fill(template: &str, prefix: &Path, port: u16, a: SocketAddr, b: SocketAddr) -> String {
    // As root, nginx would run its worker as `nobody`; keep the test's own
    // identity instead. Not root: nginx cannot switch users, so say nothing.
    let root = std::fs::metadata("/proc/self").is_ok_and(|meta| meta.uid() == 0);
    let filled = template
        .replace("@USER_DIRECTIVE@", if root { "user root root;" } else { "" })
        .replace("@PREFIX@", &prefix.display().to_string())
        .replace("@LISTEN_PORT@", &port.to_string())
        .replace("@PORT_A@", &a.port().to_string())
        .replace("@PORT_B@", &b.port().to_string());
    let unfilled = filled
        .lines()
        .find(|l| !l.trim_start().starts_with('#') && l.contains('@'));
    assert!(
        unfilled.is_none(),
        "unfilled placeholder in the nginx template: {unfilled:?}"
    );
    filled
}

/// A loopback port nothing listens on right now.
fn free_port() -> u16 {
    let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}
