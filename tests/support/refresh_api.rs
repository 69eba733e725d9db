//! An identity-provider-like API for the token refresh tests (SPEC §14): it
//! issues opaque access and refresh tokens, rotates the refresh token on
//! every refresh, and treats a spent refresh token sent again as theft,
//! revoking its whole family — the behaviour tokenjar's single flight and
//! reuse window exist for. A real HTTP server on a loopback port of its own
//! thread (actix-web, as in `api.rs` and `ws_api.rs`).
//!
//! Paths (no base path):
//! - `POST /login`: a new family, `{"authToken", "refreshToken",
//!   "expiresIn": <login TTL>, "user"}`;
//! - `POST /refresh` `{"refreshToken": R}`: R current → rotated, 200 in the
//!   login's shape with the refresh TTL; R spent → the family revoked, 401
//!   `{"error":"invalid_grant"}`; unknown or revoked → 401. Answers 503 while
//!   the API is [`RefreshApi::set_down`], and waits while the gate is
//!   [`RefreshApi::hold_refreshes`] (until [`RefreshApi::release_refreshes`]);
//! - `POST /revoke` `{"refreshToken": R}`: the family revoked, 200;
//! - anything else: 200 `{"ok", "path", "token": <label>}` when the
//!   `auth-token` header holds a valid access token (issued, not expired by
//!   its own TTL, not revoked), else 401 `{"error":"invalid_token"}`. The
//!   label (`f0a1`: family 0, its access token 1) tells which token came
//!   without putting a token in an answer that reaches the browser.
//!
//! Every request is recorded ([`Seen`]). Tests run in an async runtime that
//! also drives their requests, so waiting for a condition is async
//! ([`RefreshApi::until`]): it re-checks instead of blocking the thread.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use bytes::Bytes;
use serde_json::{json, Value};

/// Longest a held refresh waits for the gate (a test that forgets to release
/// it still ends).
const GATE_LIMIT: Duration = Duration::from_secs(60);

/// How often held refreshes and [`RefreshApi::until`] look again.
const POLL: Duration = Duration::from_millis(5);

/// Longest [`RefreshApi::until`] waits.
const WAIT: Duration = Duration::from_secs(20);

/// One request as the API received it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The method, e.g. `POST`.
    pub method: String,
    /// The path, e.g. `/refresh`.
    pub path: String,
    /// The `auth-token` header, if any.
    pub token: Option<String>,
    /// Whether a `Cookie` header arrived.
    pub cookie: bool,
    /// The body, as (lossy) UTF-8.
    pub body: String,
}

/// One login's tokens: the refresh tokens in the order issued (the last is
/// the current one, the rest are spent) and every access token with its
/// expiry (Unix seconds).
#[derive(Debug, Default)]
struct Family {
    refresh: Vec<String>,
    access: Vec<(String, u64)>,
    revoked: bool,
}

impl Family {
    fn current(&self) -> Option<&str> {
        self.refresh.last().map(String::as_str)
    }
}

#[derive(Debug, Default)]
struct Inner {
    seen: Vec<Seen>,
    families: Vec<Family>,
    /// Access tokens refused on their own (the family lives on).
    refused_access: Vec<String>,
    /// Refresh tokens received at `/revoke`.
    revocations: Vec<String>,
}

impl Inner {
    fn family_of_refresh(&mut self, refresh: &str) -> Option<&mut Family> {
        self.families
            .iter_mut()
            .find(|f| f.refresh.iter().any(|r| r == refresh))
    }

    fn family_of_token(&mut self, token: &str) -> Option<&mut Family> {
        self.families
            .iter_mut()
            .find(|f| f.refresh.iter().any(|r| r == token) || f.access.iter().any(|(a, _)| a == token))
    }

    /// The public label of access token `token`: `f<family>a<index>`, both
    /// counted from 0.
    fn label_of(&self, token: &str) -> Option<String> {
        self.families.iter().enumerate().find_map(|(f, family)| {
            let a = family.access.iter().position(|(access, _)| access == token)?;
            Some(format!("f{f}a{a}"))
        })
    }

    /// A new access and refresh token for `family` (index), the access token
    /// living `ttl` seconds.
    fn issue(&mut self, family: usize, ttl: u64) -> Value {
        let access = format!("access-{}", crate::unique());
        let refresh = format!("refresh-{}", crate::unique());
        let family = &mut self.families[family];
        family.access.push((access.clone(), crate::unix_now() + ttl));
        family.refresh.push(refresh.clone());
        json!({"authToken": access, "refreshToken": refresh, "expiresIn": ttl})
    }
}

#[derive(Default)]
struct State {
    inner: Mutex<Inner>,
    login_ttl: AtomicU64,
    refresh_ttl: AtomicU64,
    down: AtomicBool,
    refuse_all: AtomicBool,
    held: AtomicBool,
    /// Refresh requests waiting at the gate right now.
    waiting: AtomicU64,
    refresh_calls: AtomicU64,
    /// Refresh calls that presented a spent refresh token.
    replays: AtomicU64,
}

impl State {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().expect("lock")
    }
}

/// The refresh test API; stopped on drop.
pub struct RefreshApi {
    addr: SocketAddr,
    handle: ServerHandle,
    state: Arc<State>,
    _thread: JoinHandle<()>,
}

impl std::fmt::Debug for RefreshApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshApi")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl RefreshApi {
    /// Starts the API on a free loopback port: logins issue access tokens
    /// living `login_ttl` seconds, refreshes ones living `refresh_ttl`.
    pub fn start(login_ttl: u64, refresh_ttl: u64) -> Self {
        let state = Arc::new(State::default());
        state.login_ttl.store(login_ttl, Ordering::SeqCst);
        state.refresh_ttl.store(refresh_ttl, Ordering::SeqCst);
        let shared = Arc::clone(&state);
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("refresh-api".to_owned())
            .spawn(move || {
                actix_rt::System::new().block_on(async move {
                    let data = web::Data::from(shared);
                    let server = HttpServer::new(move || {
                        App::new().app_data(data.clone()).default_service(web::to(answer))
                    })
                    // Two workers: a refresh held at the gate must not stop
                    // the API from answering anything else.
                    .workers(2)
                    .disable_signals()
                    .shutdown_timeout(0)
                    .bind(("127.0.0.1", 0))
                    .expect("bind the refresh test API");
                    let addr = server.addrs()[0];
                    let running = server.run();
                    tx.send((addr, running.handle())).expect("report the address");
                    let _ = running.await;
                });
            })
            .expect("spawn the refresh test API");
        let (addr, handle) = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the refresh test API did not start");
        Self {
            addr,
            handle,
            state,
            _thread: thread,
        }
    }

    /// `http://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request received so far, in arrival order.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().seen.clone()
    }

    /// The requests received at `path`.
    pub fn seen_at(&self, path: &str) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.path == path).collect()
    }

    /// Refresh calls received (at `/refresh`, whatever their answer).
    pub fn refresh_calls(&self) -> u64 {
        self.state.refresh_calls.load(Ordering::SeqCst)
    }

    /// Refresh calls that presented an already spent refresh token.
    pub fn replays(&self) -> u64 {
        self.state.replays.load(Ordering::SeqCst)
    }

    /// Refresh tokens received at `/revoke`.
    pub fn revocations(&self) -> Vec<String> {
        self.state.lock().revocations.clone()
    }

    /// Every token the API ever issued, access and refresh: none may reach
    /// a browser.
    pub fn all_tokens(&self) -> Vec<String> {
        let inner = self.state.lock();
        inner
            .families
            .iter()
            .flat_map(|f| {
                f.refresh
                    .iter()
                    .cloned()
                    .chain(f.access.iter().map(|(a, _)| a.clone()))
            })
            .collect()
    }

    /// The newest access token of the newest family.
    pub fn last_access(&self) -> String {
        let inner = self.state.lock();
        let family = inner.families.last().expect("no login reached the API");
        family
            .access
            .last()
            .expect("a family has an access token")
            .0
            .clone()
    }

    /// The label the API answers with for access token `token` (what a
    /// test compares an answer's `token` with); panics if it never issued it.
    pub fn label(&self, token: &str) -> String {
        self.state
            .lock()
            .label_of(token)
            .unwrap_or_else(|| panic!("the API never issued {token}"))
    }

    /// The current refresh token of the newest family.
    pub fn last_refresh(&self) -> String {
        let inner = self.state.lock();
        let family = inner.families.last().expect("no login reached the API");
        family.current().expect("a family has a refresh token").to_owned()
    }

    /// Whether the family holding `token` (access or refresh) is revoked.
    pub fn is_revoked(&self, token: &str) -> bool {
        self.state
            .lock()
            .family_of_token(token)
            .is_some_and(|f| f.revoked)
    }

    /// Revokes the whole family holding `token` (access or refresh).
    pub fn revoke_family(&self, token: &str) {
        if let Some(family) = self.state.lock().family_of_token(token) {
            family.revoked = true;
        }
    }

    /// Refuses access token `token` from now on, as an API whose own clock
    /// or revocation list says it is over while its holder thinks it fresh;
    /// its family's refresh token stays good.
    pub fn refuse_access(&self, token: &str) {
        self.state.lock().refused_access.push(token.to_owned());
    }

    /// While `refuse` holds, every access token is refused (401), however
    /// fresh: an API that will not take a token tokenjar just got.
    pub fn refuse_every_access(&self, refuse: bool) {
        self.state.refuse_all.store(refuse, Ordering::SeqCst);
    }

    /// `/refresh` answers 503 while `down` (the API "down"), as usual after.
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    /// Holds every refresh that arrives from now on until
    /// [`RefreshApi::release_refreshes`].
    pub fn hold_refreshes(&self) {
        self.state.held.store(true, Ordering::SeqCst);
    }

    /// Lets held and future refreshes through.
    pub fn release_refreshes(&self) {
        self.state.held.store(false, Ordering::SeqCst);
    }

    /// Refresh requests waiting at the gate right now.
    pub fn waiting_refreshes(&self) -> u64 {
        self.state.waiting.load(Ordering::SeqCst)
    }

    /// Waits (at most 20 s, without blocking the runtime that drives the
    /// test's own requests) until `ready` holds; panics naming `what`.
    pub async fn until(&self, what: &str, ready: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !ready(self) {
            assert!(
                Instant::now() < deadline,
                "the refresh API never saw {what} within {WAIT:?}; it saw {:?}",
                self.seen()
            );
            actix_rt::time::sleep(POLL).await;
        }
    }
}

impl Drop for RefreshApi {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

fn reply(status: u16, body: &Value) -> HttpResponse {
    let status = actix_web::http::StatusCode::from_u16(status).expect("a valid status");
    HttpResponse::build(status)
        .content_type("application/json")
        .body(body.to_string())
}

/// The refresh token in a `{"refreshToken": R}` body, if any.
fn refresh_token_in(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    value.get("refreshToken")?.as_str().map(str::to_owned)
}

async fn answer(request: HttpRequest, body: Bytes, state: web::Data<State>) -> HttpResponse {
    let path = request.path().to_owned();
    let token = request
        .headers()
        .get("auth-token")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    state.lock().seen.push(Seen {
        method: request.method().as_str().to_owned(),
        path: path.clone(),
        token: token.clone(),
        cookie: request.headers().contains_key("cookie"),
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let post = request.method() == actix_web::http::Method::POST;
    match path.as_str() {
        "/login" if post => {
            let ttl = state.login_ttl.load(Ordering::SeqCst);
            let mut inner = state.lock();
            inner.families.push(Family::default());
            let at = inner.families.len() - 1;
            let mut issued = inner.issue(at, ttl);
            issued["user"] = json!({"name": "demo"});
            reply(200, &issued)
        }
        "/refresh" if post => refresh(&state, &body).await,
        "/revoke" if post => {
            let mut inner = state.lock();
            if let Some(refresh) = refresh_token_in(&body) {
                if let Some(family) = inner.family_of_refresh(&refresh) {
                    family.revoked = true;
                }
                inner.revocations.push(refresh);
            }
            reply(200, &json!({"revoked": true}))
        }
        _ => {
            let now = crate::unix_now();
            let mut inner = state.lock();
            let refused = state.refuse_all.load(Ordering::SeqCst)
                || token.as_ref().is_some_and(|t| inner.refused_access.contains(t));
            let valid = token.as_deref().is_some_and(|t| {
                inner.family_of_token(t).is_some_and(|family| {
                    !family.revoked && family.access.iter().any(|(a, exp)| a == t && now < *exp)
                })
            });
            if valid && !refused {
                // Which token, by its public label: the token itself in an
                // answer would reach the browser.
                let label = token.as_deref().and_then(|t| inner.label_of(t));
                reply(200, &json!({"ok": true, "path": path, "token": label}))
            } else {
                reply(401, &json!({"error": "invalid_token"}))
            }
        }
    }
}

async fn refresh(state: &State, body: &[u8]) -> HttpResponse {
    state.refresh_calls.fetch_add(1, Ordering::SeqCst);
    if state.held.load(Ordering::SeqCst) {
        state.waiting.fetch_add(1, Ordering::SeqCst);
        let deadline = Instant::now() + GATE_LIMIT;
        while state.held.load(Ordering::SeqCst) && Instant::now() < deadline {
            actix_rt::time::sleep(POLL).await;
        }
        state.waiting.fetch_sub(1, Ordering::SeqCst);
    }
    if state.down.load(Ordering::SeqCst) {
        return reply(503, &json!({"error": "down"}));
    }
    let Some(presented) = refresh_token_in(body) else {
        return reply(400, &json!({"error": "invalid_request"}));
    };
    let ttl = state.refresh_ttl.load(Ordering::SeqCst);
    let mut inner = state.lock();
    let Some(at) = inner.families.iter().position(|f| f.refresh.contains(&presented)) else {
        return reply(401, &json!({"error": "invalid_grant"}));
    };
    let family = &mut inner.families[at];
    if family.current() != Some(presented.as_str()) {
        // A spent token again: someone holds a copy. Like a real provider
        // with rotation, end everything issued to this login.
        state.replays.fetch_add(1, Ordering::SeqCst);
        family.revoked = true;
        return reply(401, &json!({"error": "invalid_grant"}));
    }
    if family.revoked {
        return reply(401, &json!({"error": "invalid_grant"}));
    }
    reply(200, &inner.issue(at, ttl))
}

/// The settings that turn refresh on against this API (SPEC §14), for
/// `spawn_app`: the refresh path and where the login answer keeps the
/// refresh token and the lifetime.
pub const REFRESH_ENV: [(&str, &str); 3] = [
    ("TOKENJAR_REFRESH__PATH", "/refresh"),
    ("TOKENJAR_TOKEN__REFRESH_FIELD", "/refreshToken"),
    ("TOKENJAR_TOKEN__EXPIRES_IN_FIELD", "/expiresIn"),
];

/// Asserts that no token `api` ever issued (access or refresh) appears in
/// `reply`, headers or body.
pub fn assert_no_tokens(reply: &crate::Reply, api: &RefreshApi, context: &str) {
    for token in api.all_tokens() {
        assert!(
            !reply.leaks(&token),
            "{context}: token {token} reached the browser: status {}, headers {:?}, body {:?}",
            reply.status,
            reply.headers,
            reply.text()
        );
    }
}
