//! A WebSocket API for tests (actix-web and actix-ws on a loopback port of
//! its own thread): it logs users in, refuses handshakes on demand, echoes
//! what it is sent, follows a few text commands, and reports what it saw —
//! each handshake's headers, and each socket's end — so that a test can
//! check both sides of tokenjar's relay (SPEC §13).
//!
//! Any base path works; it answers by the last segments of the path:
//! - `POST …/login`: `{"authToken": <JWT, exp in an hour>}` (any body);
//! - `GET …/refuse/NNN`: status NNN with a small text body, no switch;
//! - any other handshake: switches, choosing subprotocol `chat.v2` when
//!   offered, then echoes text, binary and continuation frames as they
//!   come, answers a ping with a pong of the same bytes, tells a pong as
//!   text `pong:<bytes>`, answers a close with the same close, and follows
//!   these text commands:
//!   - `whoami`: answers `token:<the auth-token header>` (or `token:`);
//!   - `close:CODE:REASON`: closes with that code and reason;
//!   - `fragments:N`: sends a text message in N frames, `part0`…;
//!   - `ping:DATA`: sends a ping with DATA;
//!   - `big:N`: sends a binary message of N bytes.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use actix_ws::{CloseCode, CloseReason, Item, Message};
use bytes::Bytes;

use crate::pattern::make_jwt;

/// The subprotocol the API picks when the client offers it.
pub const CHOSEN_PROTOCOL: &str = "chat.v2";

/// What the API saw of one handshake.
#[derive(Debug, Clone)]
pub struct Handshake {
    /// Path and query as received.
    pub target: String,
    /// The `auth-token` header, if any.
    pub token: Option<String>,
    /// Whether a `Cookie` header arrived.
    pub cookie: bool,
    /// The `Sec-WebSocket-Protocol` offered, if any.
    pub protocols: Option<String>,
    /// The `Sec-WebSocket-Extensions` offered, if any.
    pub extensions: Option<String>,
}

/// How one socket ended at the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// The API received a close with this code (none: no code) and reason.
    Closed(Option<u16>, String),
    /// The connection ended, or failed, without a close.
    Gone,
}

#[derive(Default)]
struct Seen {
    handshakes: Vec<Handshake>,
    ended: Vec<Ended>,
    pongs: Vec<Vec<u8>>,
}

#[derive(Default)]
struct State {
    seen: Mutex<Seen>,
    changed: Condvar,
}

impl State {
    fn record(&self, change: impl FnOnce(&mut Seen)) {
        change(&mut self.seen.lock().expect("lock"));
        self.changed.notify_all();
    }
}

/// The WebSocket test API; stopped on drop.
pub struct WsApi {
    addr: SocketAddr,
    /// Served over TLS (`wss://` through tokenjar).
    tls: bool,
    handle: ServerHandle,
    state: Arc<State>,
    _thread: JoinHandle<()>,
}

impl WsApi {
    /// Starts the API on a free loopback port and waits until it is bound.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// Like [`WsApi::start`], over https with `tls`.
    pub fn start_tls(tls: rustls::ServerConfig) -> Self {
        Self::start_with(Some(tls))
    }

    fn start_with(tls: Option<rustls::ServerConfig>) -> Self {
        let over_tls = tls.is_some();
        let state = Arc::new(State::default());
        let shared = Arc::clone(&state);
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("ws-api".to_owned())
            .spawn(move || {
                actix_rt::System::new().block_on(async move {
                    let data = web::Data::from(shared);
                    let server = HttpServer::new(move || {
                        App::new().app_data(data.clone()).default_service(web::to(answer))
                    })
                    .workers(1)
                    .disable_signals()
                    .shutdown_timeout(0);
                    let server = match tls {
                        None => server.bind(("127.0.0.1", 0)),
                        Some(tls) => server.bind_rustls_0_23(("127.0.0.1", 0), tls),
                    }
                    .expect("bind the WebSocket test API");
                    let addr = server.addrs()[0];
                    let running = server.run();
                    tx.send((addr, running.handle())).expect("report the address");
                    let _ = running.await;
                });
            })
            .expect("spawn the WebSocket test API");
        let (addr, handle) = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the WebSocket test API did not start");
        Self {
            addr,
            tls: over_tls,
            handle,
            state,
            _thread: thread,
        }
    }

    /// `http://127.0.0.1:PORT` (`https://` over TLS) followed by `path`.
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.addr)
    }

    /// Waits (at most 10 s) until `ready` holds of what was seen; panics
    /// with what was seen otherwise.
    fn wait<T>(&self, what: &str, ready: impl Fn(&Seen) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = self.state.seen.lock().expect("lock");
        loop {
            if let Some(found) = ready(&seen) {
                return found;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "the WebSocket API never saw {what}; it saw {:?} and {:?}",
                seen.handshakes,
                seen.ended
            );
            seen = self.state.changed.wait_timeout(seen, left).expect("lock").0;
        }
    }

    /// The `n`th handshake (from 1) once it arrived.
    pub fn handshake(&self, n: usize) -> Handshake {
        self.wait(&format!("handshake {n}"), |seen| {
            seen.handshakes.get(n - 1).cloned()
        })
    }

    /// Handshakes seen so far.
    pub fn handshakes(&self) -> usize {
        self.state.seen.lock().expect("lock").handshakes.len()
    }

    /// How the `n`th socket to end (from 1) ended, once it did.
    pub fn ended(&self, n: usize) -> Ended {
        self.wait(&format!("socket end {n}"), |seen| seen.ended.get(n - 1).cloned())
    }

    /// The pongs the API received, once there are `n`.
    pub fn pongs(&self, n: usize) -> Vec<Vec<u8>> {
        self.wait(&format!("{n} pongs"), |seen| {
            (seen.pongs.len() >= n).then(|| seen.pongs.clone())
        })
    }
}

impl Drop for WsApi {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

async fn answer(request: HttpRequest, body: web::Payload, state: web::Data<State>) -> HttpResponse {
    let path = request.uri().path().to_owned();
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    if path.ends_with("/login") {
        let exp = crate::unix_now() + 3600;
        return HttpResponse::Ok().json(serde_json::json!({ "authToken": make_jwt(exp) }));
    }
    if let Some(status) = path
        .rsplit_once("/refuse/")
        .and_then(|(_, code)| code.parse::<u16>().ok())
        .and_then(|code| StatusCode::from_u16(code).ok())
    {
        return HttpResponse::build(status).body("refused by the API");
    }
    let handshake = Handshake {
        target: request.uri().to_string(),
        token: header("auth-token"),
        cookie: request.headers().contains_key("cookie"),
        protocols: header("sec-websocket-protocol"),
        extensions: header("sec-websocket-extensions"),
    };
    let token = handshake.token.clone().unwrap_or_default();
    state.record(|seen| seen.handshakes.push(handshake));
    match actix_ws::handle_with_protocols(&request, body, &[CHOSEN_PROTOCOL]) {
        Ok((response, session, stream)) => {
            let state = state.into_inner();
            actix_rt::spawn(echo(session, stream.max_frame_size(16 << 20), state, token));
            response
        }
        Err(e) => HttpResponse::BadRequest().body(format!("not a handshake: {e}")),
    }
}

async fn echo(
    mut session: actix_ws::Session,
    mut stream: actix_ws::MessageStream,
    state: Arc<State>,
    token: String,
) {
    let ended = loop {
        let Some(Ok(message)) = stream.recv().await else {
            break Ended::Gone;
        };
        let sent = match message {
            Message::Text(text) => command(&mut session, &text, &token).await,
            Message::Binary(bytes) => session.binary(bytes).await,
            Message::Continuation(item) => session.continuation(item).await,
            Message::Ping(bytes) => session.pong(&bytes).await,
            Message::Pong(bytes) => {
                let text = format!("pong:{}", String::from_utf8_lossy(&bytes));
                state.record(|seen| seen.pongs.push(bytes.to_vec()));
                session.text(text).await
            }
            Message::Close(reason) => {
                let ended = match &reason {
                    Some(r) => Ended::Closed(Some(r.code.into()), r.description.clone().unwrap_or_default()),
                    None => Ended::Closed(None, String::new()),
                };
                let _ = session.close(reason).await;
                break ended;
            }
            Message::Nop => Ok(()),
        };
        if sent.is_err() {
            break Ended::Gone;
        }
    };
    state.record(|seen| seen.ended.push(ended));
}

async fn command(session: &mut actix_ws::Session, text: &str, token: &str) -> Result<(), actix_ws::Closed> {
    if text == "whoami" {
        return session.text(format!("token:{token}")).await;
    }
    if let Some(rest) = text.strip_prefix("close:") {
        let (code, reason) = rest.split_once(':').unwrap_or((rest, ""));
        let code: u16 = code.parse().unwrap_or(1000);
        let reason = CloseReason {
            code: CloseCode::from(code),
            description: Some(reason.to_owned()),
        };
        return session.clone().close(Some(reason)).await;
    }
    if let Some(n) = text
        .strip_prefix("fragments:")
        .and_then(|n| n.parse::<usize>().ok())
    {
        for i in 0..n {
            let part = Bytes::from(format!("part{i}"));
            let item = match i {
                0 => Item::FirstText(part),
                i if i + 1 == n => Item::Last(part),
                _ => Item::Continue(part),
            };
            session.continuation(item).await?;
        }
        return Ok(());
    }
    if let Some(data) = text.strip_prefix("ping:") {
        return session.ping(data.as_bytes()).await;
    }
    if let Some(n) = text.strip_prefix("big:").and_then(|n| n.parse::<usize>().ok()) {
        return session.binary(vec![b'x'; n]).await;
    }
    session.text(text.to_owned()).await
}

/// A client's end of a WebSocket through tokenjar (awc's client).
pub type Socket = actix_codec::Framed<awc::BoxedSocket, awc::ws::Codec>;

/// How long a test waits for one frame before it calls the socket stuck:
/// far above any real delay, only a bound on failure.
pub const FRAME_WAIT: Duration = Duration::from_secs(10);

/// A browser-like handshake to `url`: `Origin` and `Cookie` when given,
/// subprotocols when given. Frames up to 16 MiB are read.
pub async fn connect(
    url: &str,
    origin: Option<&str>,
    cookie: Option<&str>,
    protocols: &[&str],
) -> Result<(awc::ClientResponse, Socket), awc::error::WsClientError> {
    let client = awc::Client::builder().timeout(Duration::from_secs(30)).finish();
    let mut request = client.ws(url).max_frame_size(16 << 20);
    if let Some(origin) = origin {
        request = request.origin(origin);
    }
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    if !protocols.is_empty() {
        request = request.protocols(protocols);
    }
    request.connect().await
}

/// The next frame, waiting at most [`FRAME_WAIT`]; `None` when the socket
/// ended.
pub async fn next_frame(socket: &mut Socket) -> Option<awc::ws::Frame> {
    use futures_util::StreamExt as _;
    match actix_rt::time::timeout(FRAME_WAIT, socket.next()).await {
        Ok(Some(Ok(frame))) => Some(frame),
        Ok(Some(Err(e))) => panic!("the socket failed: {e}"),
        Ok(None) => None,
        Err(_) => panic!("no frame within {FRAME_WAIT:?}"),
    }
}

/// Reads until the close frame and answers it; its code and reason
/// (`None`: a close without a code). Panics when the socket ends first.
pub async fn close_of(socket: &mut Socket) -> (Option<u16>, String) {
    use futures_util::SinkExt as _;
    loop {
        match next_frame(socket).await {
            Some(awc::ws::Frame::Close(reason)) => {
                let _ = socket.send(awc::ws::Message::Close(reason.clone())).await;
                return match reason {
                    Some(r) => (Some(r.code.into()), r.description.unwrap_or_default()),
                    None => (None, String::new()),
                };
            }
            Some(_) => {}
            None => panic!("the socket ended without a close frame"),
        }
    }
}

/// Waits until tokenjar at `address` reports `value` open WebSockets
/// (`tokenjar_websockets_open` on `/metrics`); panics after `within`.
pub async fn websockets_open_reaches(address: SocketAddr, value: f64, within: Duration) {
    let deadline = Instant::now() + within;
    let client = awc::Client::default();
    loop {
        let mut response = client
            .get(format!("http://{address}/metrics"))
            .send()
            .await
            .expect("GET /metrics");
        let body = response.body().limit(1 << 20).await.expect("read /metrics");
        let now =
            crate::metrics::metric_sum(&String::from_utf8_lossy(&body), "tokenjar_websockets_open", &[]);
        if now == value {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "tokenjar_websockets_open stayed {now}, not {value}"
        );
        actix_rt::task::yield_now().await;
    }
}
