//! The recording API: a real HTTP server on 127.0.0.1 (actix-web on its own
//! thread and System) that plays the upstream API and records every request
//! tokenjar forwards to it.
//!
//! It answers by the last segments of the path, so it works under any base
//! path a test chooses (e.g. `/v1`):
//! - `POST …/login` (as a lenient real API router would take it: letter case
//!   compared after Unicode upper-casing like Python's `.upper()`, so
//!   `log%C4%B1n` (`ı`) is `LOGIN`; a `.format` suffix and `;params` on the
//!   last segment, trailing or repeated slashes and percent-encoding
//!   ignored): the next canned reply if a test queued one, else
//!   `{"authToken": <JWT>, "user": {...}}` for demo/demo and 401
//!   `{"error":"bad credentials"}` otherwise;
//! - `…/download/N`: N pattern bytes, streamed chunk by chunk with a
//!   `Content-Length`;
//! - `…/upload`: `{"received": N, "intact": bool}` after consuming the body;
//! - `…/hang`: never answers;
//! - `…/gated/N`: N pieces of `pattern::CHUNK_LEN` pattern bytes with a
//!   `Content-Length`, piece `i` sent only once the test released more than
//!   `i` pieces ([`RecordingApi::release_gated`]), so a test decides exactly
//!   when each part of a download exists (no timing involved);
//! - `…/gate`: held until the test calls [`RecordingApi::open_gate`] (at most
//!   60 s), then the default answer below;
//! - `…/delay/MS`: the default answer below, after MS milliseconds (a slow
//!   API, for upstream timeouts);
//! - `…/status/NNN`: status NNN with header `x-upstream: yes`;
//! - anything else: 200 `{"ok": true, "method": M, "target": T}` with header
//!   `x-upstream: yes`.
//!
//! [`RecordingApi::start_counting`] starts one that only counts requests
//! instead of keeping them, for long load tests whose memory must not grow,
//! and [`RecordingApi::stop`] / [`RecordingApi::restart`] take it down and
//! bring it back on the same port, as an API redeploy would.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use bytes::Bytes;
use futures_util::StreamExt as _;
use serde_json::{json, Value};

use crate::pattern::{chunks, make_jwt, PatternCheck, CHUNK_LEN};

/// How many body bytes of each request are kept verbatim.
const KEEP_BODY: usize = 64 * 1024;

/// One request as the API received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The method, e.g. `GET`.
    pub method: String,
    /// Path and query exactly as received, e.g. `/v1/users/7?x=1`.
    pub target: String,
    /// Every header, names lower-case, in arrival order (repeats kept).
    pub headers: Vec<(String, String)>,
    /// Number of body bytes received.
    pub body_len: u64,
    /// The first 64 KiB of the body.
    pub body: Vec<u8>,
    /// Whether the body ended cleanly (false: the stream failed).
    pub body_complete: bool,
    /// Whether the body matched the streaming test pattern (`pattern::chunks`).
    pub pattern_intact: bool,
    /// The HTTP version it came in (`HTTP/1.1`, `HTTP/2.0`).
    pub version: String,
    /// The connection's far end (requests on one connection share it).
    pub peer: Option<SocketAddr>,
}

impl Recorded {
    /// Every value of header `name` (case-insensitive).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        crate::values_named(&self.headers, name)
    }

    /// The first value of header `name`, if any.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_all(name).into_iter().next()
    }

    /// Whether any header value (or name) contains `needle`.
    pub fn headers_contain(&self, needle: &str) -> bool {
        self.headers
            .iter()
            .any(|(n, v)| n.contains(needle) || v.contains(needle))
    }
}

/// A reply a test queues for the next login request.
#[derive(Debug, Clone)]
pub struct CannedReply {
    /// Status code.
    pub status: u16,
    /// Extra headers (appended, so repeats are allowed).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Bytes,
}

impl CannedReply {
    /// A reply with a JSON body.
    pub fn json(status: u16, body: &Value) -> Self {
        Self::raw(status, "application/json", body.to_string())
    }

    /// A reply with any body and content type.
    pub fn raw(status: u16, content_type: &str, body: impl Into<Bytes>) -> Self {
        Self {
            status,
            headers: vec![("content-type".to_owned(), content_type.to_owned())],
            body: body.into(),
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    fn to_response(&self) -> HttpResponse {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::OK);
        let mut builder = HttpResponse::build(status);
        for (name, value) in &self.headers {
            builder.append_header((name.as_str(), value.as_str()));
        }
        builder.body(self.body.clone())
    }
}

/// A token the API issued on a successful default login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// The JWT-shaped token.
    pub token: String,
    /// Its `exp` claim (Unix seconds).
    pub exp: u64,
}

#[derive(Default)]
struct State {
    requests: Mutex<Vec<Recorded>>,
    canned_logins: Mutex<VecDeque<CannedReply>>,
    issued: Mutex<Vec<Issued>>,
    gated: PieceGate,
    gate_open: AtomicBool,
    /// Count instead of record (no per-request memory, no issued tokens).
    counting: AtomicBool,
    /// Requests received, in either mode.
    received: AtomicU64,
    /// Body bytes of `…/download/N` answers handed to the server so far.
    download_sent: AtomicU64,
}

/// Longest a `…/gate` request is held (a test that forgets to open the gate
/// still ends).
const GATE_LIMIT: Duration = Duration::from_secs(60);

/// How often a held `…/gate` request checks whether the gate opened.
const GATE_POLL: Duration = Duration::from_millis(5);

/// The shared gate of the `…/gated/N` downloads: how many pieces the test
/// has released so far, and the streams waiting for more.
#[derive(Default)]
struct PieceGate {
    inner: Mutex<PieceGateInner>,
}

#[derive(Default)]
struct PieceGateInner {
    released: u64,
    waiting: Vec<Waker>,
}

impl PieceGate {
    fn release(&self, pieces: u64) {
        let mut inner = self.inner.lock().expect("lock");
        inner.released += pieces;
        for waker in inner.waiting.drain(..) {
            waker.wake();
        }
    }

    /// Ready once piece `index` (0-based) may be sent.
    fn poll_piece(&self, index: u64, cx: &mut Context<'_>) -> Poll<()> {
        let mut inner = self.inner.lock().expect("lock");
        if index < inner.released {
            return Poll::Ready(());
        }
        if !inner.waiting.iter().any(|w| w.will_wake(cx.waker())) {
            inner.waiting.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// The recording API server; stopped on drop.
pub struct RecordingApi {
    addr: SocketAddr,
    /// Served over TLS with this configuration, when set.
    tls: Option<rustls::ServerConfig>,
    handle: ServerHandle,
    state: Arc<State>,
    /// The thread running the server's System; ends once the server stopped.
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for RecordingApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingApi")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl RecordingApi {
    /// Starts the API on 127.0.0.1 port 0 and waits until it is bound.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// Like [`RecordingApi::start`], but over https with `tls`.
    pub fn start_tls(tls: rustls::ServerConfig) -> Self {
        Self::start_with(Some(tls))
    }

    fn start_with(tls: Option<rustls::ServerConfig>) -> Self {
        let state = Arc::new(State::default());
        let (addr, handle, thread) = serve(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            Arc::clone(&state),
            tls.clone(),
        );
        Self {
            addr,
            tls,
            handle,
            state,
            thread: Some(thread),
        }
    }

    /// Like [`RecordingApi::start`], but requests are only counted
    /// ([`RecordingApi::received`]), never kept, and default logins keep no
    /// issued token: memory stays flat however long a load test runs.
    pub fn start_counting() -> Self {
        let api = Self::start();
        api.state.counting.store(true, Ordering::SeqCst);
        api
    }

    /// Stops the server at once, as a crashed or redeployed API would: the
    /// listener is closed (new connections are refused) and open connections
    /// are dropped, with requests in flight unanswered. Returns once the
    /// listener is closed. What was recorded is kept.
    pub fn stop(&mut self) {
        drop(self.handle.stop(false));
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the recording API thread panicked");
        }
    }

    /// Starts the server again on the same address (after
    /// [`RecordingApi::stop`]), with the same state and mode. Returns once it
    /// accepts connections.
    pub fn restart(&mut self) {
        self.stop();
        let (addr, handle, thread) = serve(self.addr, Arc::clone(&self.state), self.tls.clone());
        assert_eq!(addr, self.addr, "the API must come back on the same address");
        self.handle = handle;
        self.thread = Some(thread);
    }

    /// Requests received so far (counted in both modes).
    pub fn received(&self) -> u64 {
        self.state.received.load(Ordering::SeqCst)
    }

    /// Body bytes of `…/download/N` answers handed to the HTTP server so far:
    /// with a reader that stalls, this stops growing once the socket buffers
    /// are full, unless someone in between buffers without bound.
    pub fn download_bytes_sent(&self) -> u64 {
        self.state.download_sent.load(Ordering::SeqCst)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (`https://` over TLS) followed by `path`
    /// (e.g. a base path `/v1`).
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.addr)
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().expect("lock").clone()
    }

    /// The most recent request; panics if there was none.
    pub fn last_request(&self) -> Recorded {
        self.requests().pop().expect("the API received no request at all")
    }

    /// Queues a reply for the next login request (replies are used in order).
    pub fn push_login_reply(&self, reply: CannedReply) {
        self.state.canned_logins.lock().expect("lock").push_back(reply);
    }

    /// Lets every held and future `…/gate` request through.
    pub fn open_gate(&self) {
        self.state.gate_open.store(true, Ordering::SeqCst);
    }

    /// Tokens issued by default logins so far.
    pub fn issued(&self) -> Vec<Issued> {
        self.state.issued.lock().expect("lock").clone()
    }

    /// Lets every `…/gated/N` download send `pieces` more pieces (the count
    /// is shared: piece `i` of any gated download goes once more than `i`
    /// pieces were released in total).
    pub fn release_gated(&self, pieces: u64) {
        self.state.gated.release(pieces);
    }

    /// The most recently issued token; panics if none was issued.
    pub fn last_issued(&self) -> Issued {
        self.issued()
            .pop()
            .expect("the API issued no token (no successful login reached it)")
    }
}

impl Drop for RecordingApi {
    fn drop(&mut self) {
        // The stop command is sent at once; the returned future only waits.
        drop(self.handle.stop(false));
    }
}

/// Runs the API server on `addr` on a thread of its own; its bound address,
/// handle and thread once it accepts connections.
fn serve(
    addr: SocketAddr,
    shared: Arc<State>,
    tls: Option<rustls::ServerConfig>,
) -> (SocketAddr, ServerHandle, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("recording-api".to_owned())
        .spawn(move || {
            let system = actix_rt::System::new();
            system.block_on(async move {
                let data = web::Data::from(shared);
                let started = match tls {
                    // actix-web's TLS listener offers `h2` and `http/1.1`
                    // whatever the configuration says: an API that offers
                    // HTTP/1.1 alone is actix-http's HTTP/1 service.
                    Some(tls) if !tls.alpn_protocols.iter().any(|p| p == b"h2") => {
                        serve_h1_tls(addr, data, tls)
                    }
                    tls => {
                        let server = HttpServer::new(move || {
                            App::new().app_data(data.clone()).default_service(web::to(handle))
                        })
                        .workers(1)
                        .disable_signals()
                        .shutdown_timeout(0);
                        let server = match tls {
                            None => server.bind(addr),
                            Some(tls) => server.bind_rustls_0_23(addr, tls),
                        };
                        server.map(|server| (server.addrs()[0], server.run()))
                    }
                };
                let (addr, running) = match started {
                    Ok(started) => started,
                    Err(err) => {
                        let _ = tx.send(Err(err.to_string()));
                        return;
                    }
                };
                let _ = tx.send(Ok((addr, running.handle())));
                let _ = running.await;
            });
        })
        .expect("spawn the recording API thread");
    let (addr, handle) = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the recording API did not start within 20 s")
        .unwrap_or_else(|err| panic!("the recording API could not bind {addr}: {err}"));
    (addr, handle, thread)
}

/// The API over TLS with HTTP/1.1 only, ALPN as `tls` says.
fn serve_h1_tls(
    addr: SocketAddr,
    data: web::Data<State>,
    tls: rustls::ServerConfig,
) -> std::io::Result<(SocketAddr, actix_web::dev::Server)> {
    let listener = std::net::TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    let server = actix_server::Server::build()
        .workers(1)
        .disable_signals()
        .shutdown_timeout(0)
        .listen("recording-api-h1", listener, move || {
            let app = App::new().app_data(data.clone()).default_service(web::to(handle));
            actix_http::HttpService::build()
                .h1(actix_service::map_config(app, |()| {
                    actix_web::dev::AppConfig::default()
                }))
                .rustls_0_23(tls.clone())
        })?
        .run();
    Ok((bound, server))
}

/// Lower-cases ASCII, percent-decodes unreserved characters and non-ASCII
/// bytes (so `%C4%B1` is `ı`; `%2F` and the like stay encoded), collapses
/// repeated slashes and drops a trailing slash and the query: how a lenient
/// API router would see the path.
fn route_path(target: &str) -> String {
    let path = target.split('?').next().unwrap_or("");
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(value) = u8::from_str_radix(hex, 16) {
                if value.is_ascii_alphanumeric() || b"-._~".contains(&value) || !value.is_ascii() {
                    decoded.push(value);
                    i += 3;
                    continue;
                }
            }
        }
        decoded.push(bytes[i]);
        i += 1;
    }
    let lower = String::from_utf8_lossy(&decoded).to_ascii_lowercase();
    let mut out = String::with_capacity(lower.len());
    for segment in lower.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// Whether a last segment of a [`route_path`] names the login: its name
/// before any `;params` and `.format` suffix, upper-cased in full Unicode
/// (`ı` and `i` are both `I`, as for Python's `.upper()` or Java's
/// `toUpperCase()`), is `LOGIN`.
fn is_login(last: &str) -> bool {
    let name = last.split([';', '.']).next().unwrap_or("");
    name.to_uppercase() == "LOGIN"
}

async fn handle(req: HttpRequest, mut payload: web::Payload, state: web::Data<State>) -> HttpResponse {
    let target = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_else(|| req.uri().to_string());
    let headers = crate::header_pairs(req.headers());
    state.received.fetch_add(1, Ordering::SeqCst);
    let counting = state.counting.load(Ordering::SeqCst);
    let index = if counting {
        // Never read in counting mode; no entry exists.
        usize::MAX
    } else {
        let mut requests = state.requests.lock().expect("lock");
        requests.push(Recorded {
            method: req.method().as_str().to_owned(),
            target: target.clone(),
            headers,
            body_len: 0,
            body: Vec::new(),
            body_complete: false,
            pattern_intact: true,
            version: format!("{:?}", req.version()),
            peer: req.peer_addr(),
        });
        requests.len() - 1
    };

    let mut check = PatternCheck::new();
    let mut kept = Vec::new();
    let mut complete = true;
    while let Some(piece) = payload.next().await {
        match piece {
            Ok(bytes) => {
                check.feed(&bytes);
                let room = KEEP_BODY.saturating_sub(kept.len());
                kept.extend_from_slice(&bytes[..bytes.len().min(room)]);
            }
            Err(_) => {
                complete = false;
                break;
            }
        }
    }
    if !counting {
        let mut requests = state.requests.lock().expect("lock");
        let entry = &mut requests[index];
        entry.body_len = check.received();
        entry.body = kept.clone();
        entry.body_complete = complete;
        entry.pattern_intact = check.intact();
    }
    if !complete {
        return HttpResponse::BadRequest().finish();
    }

    let path = route_path(&target);
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let last = segments.last().copied().unwrap_or("");
    let before_last = if segments.len() >= 2 {
        segments[segments.len() - 2]
    } else {
        ""
    };

    if is_login(last) && req.method() == actix_web::http::Method::POST {
        return login(&state, &kept);
    }
    if last == "hang" {
        return futures_util::future::pending::<HttpResponse>().await;
    }
    if last == "gate" {
        // Holds the request in flight, so a test can act while a proxy waits.
        let deadline = std::time::Instant::now() + GATE_LIMIT;
        while !state.gate_open.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
            actix_rt::time::sleep(GATE_POLL).await;
        }
    }
    if last == "upload" {
        return json_response(
            StatusCode::OK,
            &json!({"received": check.received(), "intact": check.intact()}),
        );
    }
    if before_last == "delay" {
        if let Ok(millis) = last.parse::<u64>() {
            // A slow API by design: the answer is late, not the test.
            actix_rt::time::sleep(Duration::from_millis(millis)).await;
        }
    }
    if before_last == "download" {
        if let Ok(total) = last.parse::<u64>() {
            let state = state.into_inner();
            let stream = futures_util::stream::iter(chunks(total)).map(move |piece| {
                // Counted as the server pulls each piece, i.e. as the socket
                // to the reader takes it.
                state
                    .download_sent
                    .fetch_add(piece.len() as u64, Ordering::SeqCst);
                Ok::<_, std::io::Error>(piece)
            });
            return HttpResponse::Ok()
                .content_type("application/octet-stream")
                .no_chunking(total)
                .streaming(stream);
        }
    }
    if before_last == "gated" {
        if let Ok(pieces) = last.parse::<u64>() {
            let state = state.into_inner();
            let stream = futures_util::stream::unfold(0u64, move |index| {
                let state = Arc::clone(&state);
                async move {
                    if index >= pieces {
                        return None;
                    }
                    futures_util::future::poll_fn(|cx| state.gated.poll_piece(index, cx)).await;
                    let piece = chunks(CHUNK_LEN as u64).next().unwrap_or_default();
                    Some((Ok::<_, std::io::Error>(piece), index + 1))
                }
            });
            return HttpResponse::Ok()
                .content_type("application/octet-stream")
                .no_chunking(pieces * CHUNK_LEN as u64)
                .streaming(stream);
        }
    }
    if before_last == "status" {
        if let Some(status) = last
            .parse::<u16>()
            .ok()
            .and_then(|s| StatusCode::from_u16(s).ok())
        {
            return HttpResponse::build(status)
                .insert_header(("x-upstream", "yes"))
                .content_type("application/json")
                .body(json!({"status": status.as_u16()}).to_string());
        }
    }
    HttpResponse::Ok()
        .insert_header(("x-upstream", "yes"))
        .content_type("application/json")
        .body(json!({"ok": true, "method": req.method().as_str(), "target": target}).to_string())
}

fn json_response(status: StatusCode, body: &Value) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("application/json")
        .body(body.to_string())
}

fn login(state: &State, body: &[u8]) -> HttpResponse {
    if let Some(canned) = state.canned_logins.lock().expect("lock").pop_front() {
        return canned.to_response();
    }
    let creds: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if creds["username"] == "demo" && creds["password"] == "demo" {
        let exp = crate::unix_now() + 86_400;
        let token = make_jwt(exp);
        if !state.counting.load(Ordering::SeqCst) {
            state.issued.lock().expect("lock").push(Issued {
                token: token.clone(),
                exp,
            });
        }
        json_response(
            StatusCode::OK,
            &json!({"authToken": token, "user": {"name": "demo"}}),
        )
    } else {
        json_response(StatusCode::UNAUTHORIZED, &json!({"error": "bad credentials"}))
    }
}

#[cfg(test)]
mod tests {
    use super::{is_login, route_path, CannedReply, RecordingApi};
    use crate::pattern::{chunks, PatternCheck, CHUNK_LEN};
    use futures_util::StreamExt as _;
    use std::time::Duration;

    #[test]
    fn route_path_is_lenient() {
        assert_eq!(route_path("/v1/LOGIN"), "/v1/login");
        assert_eq!(route_path("/v1//login/?x=1"), "/v1/login");
        assert_eq!(route_path("/v1/%6Cogin"), "/v1/login");
        assert_eq!(route_path("/v1/a%2Fb"), "/v1/a%2fb");
        assert_eq!(route_path(""), "/");
        assert_eq!(route_path("/v1/LOG%C4%B1N.json"), "/v1/logın.json");
        assert_eq!(route_path("/v1/login;jsessionid=1/"), "/v1/login;jsessionid=1");
        let login = |path: &str| is_login(route_path(path).rsplit('/').next().unwrap_or(""));
        for path in [
            "/v1/login",
            "/v1/LOGIN.json",
            "/v1/login.",
            "/v1/login;jsessionid=1",
            "/v1/login.json;x",
            "/v1/log%C4%B1n",
            "/v1/LOG%C4%B1N.xml",
        ] {
            assert!(login(path), "{path}");
        }
        // `.upper()` leaves `İ` as it is, so `LOGİN` is another name.
        for path in [
            "/v1/LOG%C4%B0N",
            "/v1/login2",
            "/v1/xlogin",
            "/v1/logins",
            "/v1/login/x",
        ] {
            assert!(!login(path), "{path}");
        }
    }

    /// The harness itself: the API records, logs in, streams and hangs as the
    /// end-to-end tests expect (checked without tokenjar in between).
    #[actix_web::test]
    async fn the_recording_api_behaves() {
        let api = RecordingApi::start();
        let client = awc::Client::builder().timeout(Duration::from_secs(10)).finish();

        let mut res = client
            .post(api.url("/v1//LOGIN/?x=1"))
            .send_body(r#"{"username":"demo","password":"demo"}"#)
            .await
            .unwrap();
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["authToken"], api.last_issued().token.as_str());
        assert_eq!(api.last_request().target, "/v1//LOGIN/?x=1");

        api.push_login_reply(CannedReply::raw(201, "text/plain", "canned"));
        let mut res = client.post(api.url("/login")).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 201);
        assert_eq!(res.body().await.unwrap(), "canned");
        let res = client.post(api.url("/login")).send_body("{}").await.unwrap();
        assert_eq!(res.status().as_u16(), 401);

        let total = 3 * 1024 * 1024 + 17;
        let stream = futures_util::stream::iter(chunks(total).map(Ok::<_, std::io::Error>));
        let mut res = client
            .post(api.url("/v1/upload"))
            .insert_header(("x-test", "1"))
            .send_stream(stream)
            .await
            .unwrap();
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["received"], total);
        assert_eq!(body["intact"], true);
        assert_eq!(api.last_request().header("x-test"), Some("1"));

        let mut res = client
            .get(api.url(&format!("/download/{total}")))
            .send()
            .await
            .unwrap();
        let mut check = PatternCheck::new();
        while let Some(piece) = res.next().await {
            check.feed(&piece.unwrap());
        }
        assert_eq!(check.received(), total);
        assert!(check.intact());

        let mut corrupt = PatternCheck::new();
        corrupt.feed(&[0, 1, 2, 4]);
        assert!(!corrupt.intact());

        let hang = client
            .get(api.url("/hang"))
            .timeout(Duration::from_millis(200))
            .send()
            .await;
        assert!(hang.is_err(), "/hang must not answer");
    }

    /// A gated download sends exactly the pieces released so far.
    #[actix_web::test]
    async fn gated_downloads_wait_for_each_release() {
        let api = RecordingApi::start();
        let client = awc::Client::builder().timeout(Duration::from_secs(10)).finish();
        api.release_gated(1);
        let mut res = client.get(api.url("/v1/gated/3")).send().await.unwrap();
        let piece = CHUNK_LEN as u64;
        assert_eq!(
            res.headers().get("content-length").unwrap().to_str().unwrap(),
            (3 * piece).to_string()
        );
        let mut check = PatternCheck::new();
        while check.received() < piece {
            check.feed(&res.next().await.unwrap().unwrap());
        }
        assert_eq!(check.received(), piece, "only the released piece may come");
        api.release_gated(2);
        while let Some(bytes) = res.next().await {
            check.feed(&bytes.unwrap());
        }
        assert_eq!(check.received(), 3 * piece);
        assert!(check.intact());
    }
}
