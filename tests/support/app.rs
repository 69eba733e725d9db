//! The tokenjar binary as a child process (`serve` on port 0 with a fresh,
//! empty config dir), with per-endpoint helpers and a response type that the
//! awc and raw-socket clients share.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use awc::http::Method;
use bytes::Bytes;
use serde_json::Value;

use crate::{RecordingApi, TempDir};

/// How long a tokenjar gets to log its listening address.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Largest response body the awc helpers read.
const BODY_LIMIT: usize = 64 * 1024 * 1024;

/// A response as a test sees it (from awc or a raw socket).
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-case, repeats kept in order.
    pub headers: Vec<(String, String)>,
    /// The whole body.
    pub body: Bytes,
}

impl Reply {
    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON; panics with the body text otherwise.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "expected a JSON body ({err}); status {}, body {:?}",
                self.status,
                self.text()
            )
        })
    }

    /// Every value of header `name` (case-insensitive).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        crate::values_named(&self.headers, name)
    }

    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_all(name).into_iter().next()
    }

    /// Every `Set-Cookie`, parsed.
    pub fn set_cookies(&self) -> Vec<SetCookie> {
        self.header_all("set-cookie")
            .into_iter()
            .map(SetCookie::parse)
            .collect()
    }

    /// The `Set-Cookie` for cookie `name`, if exactly one; panics if several.
    pub fn set_cookie_for(&self, name: &str) -> Option<SetCookie> {
        let mut found: Vec<SetCookie> = self
            .set_cookies()
            .into_iter()
            .filter(|c| c.name == name)
            .collect();
        assert!(
            found.len() <= 1,
            "several Set-Cookie for {name}: {:?}",
            self.header_all("set-cookie")
        );
        found.pop()
    }

    /// Whether `needle` appears in the body or in any header name or value.
    pub fn leaks(&self, needle: &str) -> bool {
        self.text().contains(needle)
            || self
                .headers
                .iter()
                .any(|(n, v)| n.contains(needle) || v.contains(needle))
    }

    /// Asserts a tokenjar error: `status` and a JSON body
    /// `{"error": code, "message": <non-empty string>}`.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(
            self.status,
            status,
            "expected status {status} ({code}); got {} with body {:?}",
            self.status,
            self.text()
        );
        let body = self.json();
        assert_eq!(body["error"], code, "expected error code {code:?}; body {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "error body should carry a human `message`: {body}"
        );
    }
}

/// A parsed `Set-Cookie` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetCookie {
    /// The full header value as received.
    pub raw: String,
    /// Cookie name.
    pub name: String,
    /// Cookie value.
    pub value: String,
    /// Attributes (`HttpOnly` has no value, `Path=/` has one), names as sent.
    pub attributes: Vec<(String, Option<String>)>,
}

impl SetCookie {
    /// Parses a `Set-Cookie` header value.
    pub fn parse(raw: &str) -> Self {
        let mut parts = raw.split(';');
        let (name, value) = parts
            .next()
            .and_then(|pair| pair.split_once('='))
            .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
            .unwrap_or_default();
        let attributes = parts
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((n, v)) => (n.trim().to_owned(), Some(v.trim().to_owned())),
                None => (p.to_owned(), None),
            })
            .collect();
        Self {
            raw: raw.to_owned(),
            name,
            value,
            attributes,
        }
    }

    /// The attribute `name` (case-insensitive): `None` if absent,
    /// `Some(None)` for a flag, `Some(Some(v))` for a value.
    pub fn attr(&self, name: &str) -> Option<Option<&str>> {
        self.attributes
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref())
    }

    /// The `Max-Age` attribute as a number.
    pub fn max_age(&self) -> Option<i64> {
        self.attr("max-age").flatten().and_then(|v| v.parse().ok())
    }

    /// `name=value`, as a browser would send it back in `Cookie`.
    pub fn pair(&self) -> String {
        format!("{}={}", self.name, self.value)
    }
}

/// The cookie pair `name=value` with one character of the value changed
/// (the middle one, to `A`, or `B` where it already is `A`): a sealed value
/// that no longer opens, yet keeps its length and alphabet.
pub fn tamper(pair: &str) -> String {
    let (name, value) = pair.split_once('=').expect("a name=value cookie pair");
    let mut chars: Vec<char> = value.chars().collect();
    let at = chars.len() / 2;
    chars[at] = if chars[at] == 'A' { 'B' } else { 'A' };
    format!("{name}={}", chars.into_iter().collect::<String>())
}

/// A running tokenjar; killed on drop.
#[derive(Debug)]
pub struct TestApp {
    /// The address tokenjar listens on (from its log line).
    pub address: SocketAddr,
    /// `http`, or `https` when tokenjar listens with TLS (from the same line).
    pub scheme: &'static str,
    /// The child's process id.
    pub pid: u32,
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
    output: Arc<OutputWatch>,
    _config_dir: TempDir,
}

/// Progress of the child's output, so tests can wait for a log line or for
/// the end of the output on a condition instead of sleeping.
#[derive(Debug, Default)]
struct OutputWatch {
    /// (lines read so far, output streams still open)
    state: Mutex<(usize, usize)>,
    changed: Condvar,
}

impl OutputWatch {
    fn line(&self) {
        self.state.lock().expect("lock").0 += 1;
        self.changed.notify_all();
    }

    fn closed(&self) {
        let mut state = self.state.lock().expect("lock");
        state.1 = state.1.saturating_sub(1);
        self.changed.notify_all();
    }
}

/// Starts tokenjar (`serve`) in front of `upstream_url`, with a fresh empty
/// config dir, port 0, the plain-http cookie of the repo's
/// `config/local.toml` (`auth-token`, not Secure: the default `__Host-` name
/// requires Secure), the fixed key [`crate::KEY_1`] and `RUST_LOG=info`;
/// `extra_env` comes last and wins.
/// Waits (at most 20 s) for the `listening on http://…` line.
pub fn spawn_app(upstream_url: &str, extra_env: &[(&str, &str)]) -> TestApp {
    spawn_custom(
        TempDir::new("config"),
        Some("serve"),
        Some(upstream_url),
        extra_env,
    )
}

/// A fresh recording API and a tokenjar (as [`spawn_app`] starts it) whose
/// `upstream.url` carries the base path `/v1`: the setup most tests share.
pub fn setup() -> (RecordingApi, TestApp) {
    setup_with(&[])
}

/// Like [`setup`], with `env` passed on to [`spawn_app`].
pub fn setup_with(env: &[(&str, &str)]) -> (RecordingApi, TestApp) {
    let api = RecordingApi::start();
    let app = spawn_app(&api.url("/v1"), env);
    (api, app)
}

/// Like [`spawn_app`], with a given config dir (which may hold files), any
/// subcommand (`None`: none at all) and `TOKENJAR_UPSTREAM__URL` left unset
/// when `upstream_url` is `None`.
pub fn spawn_custom(
    config_dir: TempDir,
    subcommand: Option<&str>,
    upstream_url: Option<&str>,
    extra_env: &[(&str, &str)],
) -> TestApp {
    let mut cmd = Command::new(crate::tokenjar_bin());
    cmd.args(subcommand)
        .arg("--config-dir")
        .arg(config_dir.path())
        .current_dir(config_dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("TOKENJAR_") {
            cmd.env_remove(name);
        }
    }
    // The cookie settings mirror config/local.toml, which the empty config
    // dir does not hold.
    cmd.env("TOKENJAR_SERVER__PORT", "0")
        .env("TOKENJAR_COOKIE__NAME", "auth-token")
        .env("TOKENJAR_COOKIE__SECURE", "false")
        .env("TOKENJAR_COOKIE__KEYS", crate::KEY_1)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .env_remove("RUST_BACKTRACE");
    if let Some(url) = upstream_url {
        cmd.env("TOKENJAR_UPSTREAM__URL", url);
    }
    for (name, value) in extra_env {
        cmd.env(name, value);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|err| panic!("could not start {}: {err}", crate::tokenjar_bin().display()));
    let pid = child.id();
    let logs = Arc::new(Mutex::new(Vec::new()));
    let output = Arc::new(OutputWatch::default());
    output.state.lock().expect("lock").1 = 2;
    let (tx, rx) = mpsc::channel::<Option<(&'static str, SocketAddr)>>();
    let stderr = child.stderr.take().expect("piped stderr");
    let stdout = child.stdout.take().expect("piped stdout");
    drain(stderr, "", Arc::clone(&logs), Arc::clone(&output), tx.clone());
    drain(stdout, "stdout: ", Arc::clone(&logs), Arc::clone(&output), tx);

    let mut open_streams = 2;
    let (scheme, address) = loop {
        match rx.recv_timeout(READY_TIMEOUT) {
            Ok(Some(found)) => break found,
            Ok(None) => {
                open_streams -= 1;
                if open_streams == 0 {
                    let status = child.wait().ok();
                    panic!(
                        "tokenjar exited ({status:?}) before logging `listening on`; output:\n{}",
                        logs.lock().expect("lock").join("\n")
                    );
                }
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "tokenjar did not log `listening on http(s)://…` within {READY_TIMEOUT:?}; output:\n{}",
                    logs.lock().expect("lock").join("\n")
                );
            }
        }
    };
    TestApp {
        address,
        scheme,
        pid,
        child,
        logs,
        output,
        _config_dir: config_dir,
    }
}

/// Reads lines from a child's stream into `logs`; sends the listening address
/// once seen and `None` at end of stream.
fn drain(
    stream: impl Read + Send + 'static,
    prefix: &'static str,
    logs: Arc<Mutex<Vec<String>>>,
    output: Arc<OutputWatch>,
    tx: mpsc::Sender<Option<(&'static str, SocketAddr)>>,
) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut raw = Vec::new();
        loop {
            raw.clear();
            match reader.read_until(b'\n', &mut raw) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let line = strip_ansi(&String::from_utf8_lossy(&raw));
            let line = line.trim_end().to_owned();
            if let Some(addr) = listening_address(&line) {
                let _ = tx.send(Some((listening_scheme(&line), addr)));
            }
            logs.lock().expect("lock").push(format!("{prefix}{line}"));
            output.line();
        }
        output.closed();
        let _ = tx.send(None);
    });
}

fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The port in a `listening on http://HOST:PORT` (or `https://`) line, as a
/// loopback address.
fn listening_address(line: &str) -> Option<SocketAddr> {
    let scheme = listening_scheme(line);
    let marker = format!("listening on {scheme}://");
    let at = line.find(&marker)?;
    let rest = &line[at + marker.len()..];
    let authority: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']' | '-'))
        .collect();
    let port: u16 = authority.rsplit(':').next()?.parse().ok()?;
    Some(SocketAddr::from(([127, 0, 0, 1], port)))
}

/// The scheme of a `listening on` line: `https` for tokenjar's TLS
/// listener, else `http`.
fn listening_scheme(line: &str) -> &'static str {
    if line.contains("listening on https://") {
        "https"
    } else {
        "http"
    }
}

impl TestApp {
    /// `SCHEME://ADDRESS` followed by `path` (`http`, or `https` on a TLS
    /// listener).
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.address)
    }

    /// Everything the child wrote so far, one entry per line (stdout lines
    /// prefixed with `stdout: `).
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().expect("lock").clone()
    }

    /// Waits until a log line contains `needle` (at most `within`); true if
    /// one did.
    pub fn wait_for_log(&self, needle: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let mut state = self.output.state.lock().expect("lock");
        loop {
            if self.logs.lock().expect("lock").iter().any(|l| l.contains(needle)) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || state.1 == 0 {
                // Out of time, or the child's output ended: no line will come.
                return self.logs.lock().expect("lock").iter().any(|l| l.contains(needle));
            }
            state = self.output.changed.wait_timeout(state, left).expect("lock").0;
        }
    }

    /// Sends the signal `name` (`TERM`, `INT`, ...) to the child with
    /// `kill -s`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args(["-s", name, &self.pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -s {name} {} failed: {status}", self.pid);
    }

    /// The child's exit status if it has exited, without waiting.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait on tokenjar")
    }

    /// Waits (at most `within`) for the child to exit and for its output to
    /// be read to the end; its exit status, or `None` if it still runs.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        // The output ends when the process closes its streams, i.e. exits.
        let output = Arc::clone(&self.output);
        {
            let mut state = output.state.lock().expect("lock");
            while state.1 > 0 {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    drop(state);
                    return self.exit_status();
                }
                state = output.changed.wait_timeout(state, left).expect("lock").0;
            }
        }
        // Streams closed: the exit itself follows at once; poll it briefly.
        loop {
            if let Some(status) = self.exit_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::yield_now();
        }
    }

    /// Peak resident memory of the child (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .expect("read /proc/<pid>/status of tokenjar");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/<pid>/status")
    }

    /// An awc client with a 30 s timeout.
    pub fn client(&self) -> awc::Client {
        awc::Client::builder().timeout(Duration::from_secs(30)).finish()
    }

    /// Sends one request through awc and reads the whole response.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Reply {
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.client().request(method.clone(), self.url(path));
        for header in headers {
            req = req.append_header(*header);
        }
        let body: Bytes = body.into();
        let sent = if body.is_empty() && (method == Method::GET || method == Method::HEAD) {
            req.send().await
        } else {
            req.send_body(body).await
        };
        let mut res = sent.unwrap_or_else(|err| panic!("{path}: request failed: {err}"));
        let status = res.status().as_u16();
        let headers = crate::header_pairs(res.headers());
        let body = res
            .body()
            .limit(BODY_LIMIT)
            .await
            .unwrap_or_else(|err| panic!("{path}: reading the body failed: {err}"));
        Reply {
            status,
            headers,
            body,
        }
    }

    /// `GET path`, with `cookie` as the `Cookie` header if given.
    pub async fn get_api(&self, path: &str, cookie: Option<&str>) -> Reply {
        let mut headers = Vec::new();
        if let Some(cookie) = cookie {
            headers.push(("cookie", cookie));
        }
        self.send("GET", path, &headers, Bytes::new()).await
    }

    /// `POST /api/login` with a JSON `{"username", "password"}` body and
    /// `x-csrf: 1`.
    pub async fn login(&self, user: &str, pass: &str) -> Reply {
        self.login_at("/api/login", user, pass).await
    }

    /// Like [`TestApp::login`] at another path.
    pub async fn login_at(&self, path: &str, user: &str, pass: &str) -> Reply {
        let body = serde_json::json!({"username": user, "password": pass}).to_string();
        self.send(
            "POST",
            path,
            &[("content-type", "application/json"), ("x-csrf", "1")],
            body,
        )
        .await
    }

    /// Logs in as demo/demo, asserts success and returns the `Cookie` header
    /// value (`auth-token=…`) a browser would send back.
    pub async fn login_cookie(&self) -> String {
        let reply = self.login("demo", "demo").await;
        assert_eq!(reply.status, 200, "demo login failed: {}", reply.text());
        reply
            .set_cookie_for("auth-token")
            .unwrap_or_else(|| panic!("login set no auth-token cookie: {:?}", reply.headers))
            .pair()
    }

    /// `GET /api/session`.
    pub async fn session(&self, cookie: Option<&str>) -> Reply {
        self.get_api("/api/session", cookie).await
    }

    /// `POST /api/logout` with `x-csrf: 1`.
    pub async fn logout(&self, cookie: Option<&str>) -> Reply {
        let mut headers = vec![("x-csrf", "1")];
        if let Some(cookie) = cookie {
            headers.push(("cookie", cookie));
        }
        self.send("POST", "/api/logout", &headers, Bytes::new()).await
    }

    /// Sends exact bytes over a fresh TCP connection (see
    /// [`crate::raw_request`]).
    pub fn raw(&self, request: &str) -> Reply {
        crate::raw_request(self.address, request.as_bytes())
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::{listening_address, listening_scheme, strip_ansi, SetCookie};

    #[test]
    fn finds_the_listening_port() {
        let line =
            strip_ansi("\u{1b}[32m INFO\u{1b}[0m tokenjar: listening on http://127.0.0.1:41234 workers=2");
        assert_eq!(listening_address(&line).map(|a| a.port()), Some(41234));
        let json = r#"{"fields":{"message":"listening on http://127.0.0.1:5555"}}"#;
        assert_eq!(listening_address(json).map(|a| a.port()), Some(5555));
        assert_eq!(listening_address("starting"), None);
        let tls = "INFO tokenjar: listening on https://127.0.0.1:8443";
        assert_eq!(listening_address(tls).map(|a| a.port()), Some(8443));
        assert_eq!(listening_scheme(tls), "https");
        assert_eq!(listening_scheme(&line), "http");
    }

    #[test]
    fn parses_set_cookie() {
        let c = SetCookie::parse("auth-token=abc; HttpOnly; SameSite=Lax; Path=/; Max-Age=10");
        assert_eq!(c.pair(), "auth-token=abc");
        assert_eq!(c.attr("httponly"), Some(None));
        assert_eq!(c.attr("samesite"), Some(Some("Lax")));
        assert_eq!(c.max_age(), Some(10));
        assert_eq!(c.attr("secure"), None);
    }
}
