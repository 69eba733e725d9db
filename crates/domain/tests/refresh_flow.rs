//! Token refresh through the whole request flow (SPEC §14), in memory: an
//! API that rotates refresh tokens and treats a replayed one as theft, a
//! clock moved by hand, and a browser's cookie store; concurrent requests
//! of one session on threads standing in for server workers.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokenjar_domain::memory::{
    json_response, CookieStore, InMemoryUpstream, ManualClock, RecordedRequest, SeededRandom,
};
use tokenjar_domain::{
    ClientRequest, Clock, CookieJar, CookieKeys, CookiePolicy, CsrfRules, Forwarding, Gateway, Handled,
    Headers, LoginRules, RefreshResult, RefreshRules, ReplyBody, Routes, Rules, TokenRules, UpstreamBase,
    UpstreamError, UpstreamResponse,
};

const NOW: i64 = 1_700_000_000;
const LEEWAY: u64 = 60;
const WINDOW: i64 = 30;

/// One login's tokens at the API: the refresh token in force, the ones
/// already spent, and every access token with its expiry.
#[derive(Default)]
struct Family {
    current: String,
    spent: Vec<String>,
    access: HashMap<String, i64>,
    revoked: bool,
}

/// An API that rotates refresh tokens and, like real identity providers,
/// revokes the whole family when a spent one comes back.
struct Api {
    clock: Arc<ManualClock>,
    families: Mutex<Vec<Family>>,
    issued: AtomicUsize,
    refresh_calls: AtomicUsize,
    replays: AtomicUsize,
    revocations: Mutex<Vec<String>>,
    /// Lifetimes the login and refresh answers give.
    login_ttl: i64,
    refresh_ttl: i64,
    down: AtomicBool,
    /// Every access token is refused.
    refuse_all: AtomicBool,
    /// Refresh answers wait here while closed.
    gate: (Mutex<bool>, Condvar),
}

impl Api {
    fn new(clock: Arc<ManualClock>, login_ttl: i64, refresh_ttl: i64) -> Arc<Self> {
        Arc::new(Self {
            clock,
            families: Mutex::new(Vec::new()),
            issued: AtomicUsize::new(0),
            refresh_calls: AtomicUsize::new(0),
            replays: AtomicUsize::new(0),
            revocations: Mutex::new(Vec::new()),
            login_ttl,
            refresh_ttl,
            down: AtomicBool::new(false),
            refuse_all: AtomicBool::new(false),
            gate: (Mutex::new(true), Condvar::new()),
        })
    }

    fn fresh(&self, kind: &str) -> String {
        format!("{kind}-{}", self.issued.fetch_add(1, Ordering::SeqCst))
    }

    fn grant(&self, family: &mut Family, ttl: i64) -> Value {
        let access = self.fresh("access");
        let refresh = self.fresh("refresh");
        family.access.insert(access.clone(), self.clock.now() + ttl);
        family.current = refresh.clone();
        json!({ "authToken": access, "refreshToken": refresh, "expiresIn": ttl, "user": "ada" })
    }

    fn field(request: &RecordedRequest) -> String {
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        body["refreshToken"].as_str().unwrap_or_default().to_owned()
    }

    fn handle(&self, request: &RecordedRequest) -> Result<UpstreamResponse<Vec<u8>>, UpstreamError> {
        let mut families = self.families.lock().unwrap();
        match request.path() {
            "/login" => {
                let mut family = Family::default();
                let answer = self.grant(&mut family, self.login_ttl);
                families.push(family);
                Ok(json_response(200, &answer))
            }
            "/refresh" => {
                drop(families);
                let (open, opened) = &self.gate;
                let _open = opened.wait_while(open.lock().unwrap(), |open| !*open).unwrap();
                let mut families = self.families.lock().unwrap();
                self.refresh_calls.fetch_add(1, Ordering::SeqCst);
                if self.down.load(Ordering::SeqCst) {
                    return Ok(json_response(503, &json!({"error": "maintenance"})));
                }
                let token = Self::field(request);
                let Some(family) = families
                    .iter_mut()
                    .find(|f| f.current == token || f.spent.contains(&token))
                else {
                    return Ok(json_response(401, &json!({"error": "invalid_grant"})));
                };
                if family.revoked {
                    return Ok(json_response(401, &json!({"error": "invalid_grant"})));
                }
                if family.current != token {
                    // A spent token again: stolen, as far as the API can
                    // tell. Everything of the family ends.
                    self.replays.fetch_add(1, Ordering::SeqCst);
                    family.revoked = true;
                    return Ok(json_response(401, &json!({"error": "invalid_grant"})));
                }
                family.spent.push(token);
                let answer = self.grant(family, self.refresh_ttl);
                Ok(json_response(200, &answer))
            }
            "/revoke" => {
                let token = Self::field(request);
                self.revocations.lock().unwrap().push(token.clone());
                if let Some(family) = families.iter_mut().find(|f| f.current == token) {
                    family.revoked = true;
                }
                Ok(json_response(200, &json!({})))
            }
            _ => {
                let presented = request.headers.get_str("auth-token").unwrap_or_default();
                let now = self.clock.now();
                let valid = !self.refuse_all.load(Ordering::SeqCst)
                    && families
                        .iter()
                        .any(|f| !f.revoked && f.access.get(presented).is_some_and(|&exp| now < exp));
                if valid {
                    Ok(json_response(200, &json!({ "ok": true })))
                } else {
                    Ok(json_response(401, &json!({"error": "unauthorized"})))
                }
            }
        }
    }

    /// Ends one access token early, as an API that revoked it would.
    fn expire_access(&self, token: &str) {
        for family in self.families.lock().unwrap().iter_mut() {
            if let Some(exp) = family.access.get_mut(token) {
                *exp = 0;
            }
        }
    }

    fn close_gate(&self) {
        *self.gate.0.lock().unwrap() = false;
    }

    fn open_gate(&self) {
        *self.gate.0.lock().unwrap() = true;
        self.gate.1.notify_all();
    }
}

fn rules(window_s: u64) -> Arc<Rules> {
    Arc::new(Rules {
        routes: Routes::new("/api", "/api/login", "/api/logout", "/api/session").unwrap(),
        upstream: UpstreamBase::parse("http://api.internal:9000").unwrap(),
        token: TokenRules::default(),
        login: LoginRules::new("/authToken")
            .unwrap()
            .with_refresh("/refreshToken")
            .unwrap()
            .with_expires_in("/expiresIn")
            .unwrap(),
        cookies: CookieJar::new(
            CookiePolicy::default(),
            CookieKeys::generate(&SeededRandom::new(1)).unwrap(),
        ),
        csrf: CsrfRules::default(),
        forwarding: Forwarding::default(),
        refresh: Some(RefreshRules::new("/refresh", "refreshToken", LEEWAY, window_s, "/revoke").unwrap()),
        oidc: None,
        store: None,
    })
}

type Flow = Gateway<InMemoryUpstream, Arc<ManualClock>, SeededRandom>;

/// One worker's gateway over the shared API.
fn worker(rules: &Arc<Rules>, api: &Arc<Api>, clock: &Arc<ManualClock>, seed: u64) -> Flow {
    let api = api.clone();
    Gateway::new(
        rules.clone(),
        InMemoryUpstream::new(move |request| api.handle(request)),
        clock.clone(),
        SeededRandom::new(seed),
    )
}

struct App {
    rules: Arc<Rules>,
    api: Arc<Api>,
    clock: Arc<ManualClock>,
    gateway: Flow,
}

impl App {
    fn new(login_ttl: i64, refresh_ttl: i64, window_s: u64) -> Self {
        let clock = Arc::new(ManualClock::new(NOW));
        let api = Api::new(clock.clone(), login_ttl, refresh_ttl);
        let rules = rules(window_s);
        let gateway = worker(&rules, &api, &clock, 3);
        Self {
            rules,
            api,
            clock,
            gateway,
        }
    }

    fn standard() -> Self {
        Self::new(300, 300, WINDOW.unsigned_abs())
    }

    fn login(&self, browser: &mut CookieStore) -> Handled<Vec<u8>> {
        let handled = self.send(browser, "POST", "/api/login", b"{}");
        assert_eq!(handled.reply.status, 200);
        handled
    }

    /// Sends from `browser`, which takes in the reply's cookies.
    fn send(&self, browser: &mut CookieStore, method: &str, path: &str, body: &[u8]) -> Handled<Vec<u8>> {
        let handled = send(&self.gateway, &browser.header(), method, path, body);
        browser.apply(handled.reply.headers.get_all("set-cookie"));
        handled
    }

    fn refresh_calls(&self) -> usize {
        self.api.refresh_calls.load(Ordering::SeqCst)
    }

    /// The access token of the API call recorded last.
    fn last_token_sent(&self) -> String {
        let requests = self.gateway.upstream().requests();
        let last = requests
            .iter()
            .rev()
            .find(|r| r.path().starts_with("/me"))
            .unwrap();
        last.headers.get_str("auth-token").unwrap_or_default().to_owned()
    }

    fn current_access(&self) -> String {
        let families = self.api.families.lock().unwrap();
        let family = families.last().unwrap();
        let newest = family
            .access
            .keys()
            .max_by_key(|k| k[7..].parse::<u32>().unwrap())
            .unwrap();
        newest.clone()
    }
}

fn send<S: tokenjar_domain::SessionStore>(
    gateway: &Gateway<InMemoryUpstream, Arc<ManualClock>, SeededRandom, S>,
    cookie: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> Handled<Vec<u8>> {
    let mut headers = Headers::new();
    headers.append("host", "app.example");
    headers.append("x-csrf", "1");
    if !cookie.is_empty() {
        headers.append("cookie", cookie);
    }
    if !body.is_empty() {
        headers.append("content-length", body.len().to_string());
    }
    let request = ClientRequest {
        method: method.into(),
        path: path.to_owned(),
        query: None,
        headers,
        peer: Some("192.0.2.7".parse().unwrap()),
        scheme: "http",
        body: body.to_vec(),
    };
    pollster::block_on(gateway.handle(request))
}

fn json_of(handled: &Handled<Vec<u8>>) -> Value {
    let body = match &handled.reply.body {
        ReplyBody::Full(b) => b,
        ReplyBody::Stream { body, .. } => body,
    };
    serde_json::from_slice(body).unwrap()
}

/// Everything the browser got: status line aside, headers and body.
fn everything(handled: &Handled<Vec<u8>>) -> String {
    let mut all = String::new();
    for (name, value) in handled.reply.headers.iter() {
        all.push_str(&format!("{name}: {}\n", String::from_utf8_lossy(value)));
    }
    all.push_str(&json_of(handled).to_string());
    all
}

fn deletes_cookie(handled: &Handled<Vec<u8>>) -> bool {
    handled
        .reply
        .headers
        .get_all("set-cookie")
        .any(|v| String::from_utf8_lossy(v).contains("Max-Age=0"))
}

#[test]
fn a_login_seals_both_tokens_and_the_page_sees_neither() {
    let app = App::standard();
    let mut browser = CookieStore::new();
    let login = app.login(&mut browser);
    assert_eq!(
        json_of(&login),
        json!({"expiresIn": 300, "user": "ada", "loggedIn": true})
    );
    let page_sees = everything(&login);
    assert!(
        !page_sees.contains("access-") && !page_sees.contains("refresh-"),
        "{page_sees}"
    );

    let session = app.send(&mut browser, "GET", "/api/session", b"");
    assert_eq!(
        json_of(&session),
        json!({"loggedIn": true, "expiresAt": NOW + 300, "refreshable": true})
    );
}

#[test]
fn a_due_session_is_refreshed_once_and_the_answer_carries_the_new_cookie() {
    let app = App::standard();
    let mut browser = CookieStore::new();
    app.login(&mut browser);
    let first = app.current_access();

    // Outside the leeway: no refresh.
    app.clock.advance(300 - 61);
    let call = app.send(&mut browser, "GET", "/api/me", b"");
    assert_eq!((call.reply.status, call.refresh), (200, None));
    assert_eq!(app.last_token_sent(), first);

    // Inside it: refreshed first, the call goes on with the new token.
    app.clock.advance(1);
    let before = browser.header();
    let call = app.send(&mut browser, "GET", "/api/me", b"");
    assert_eq!((call.reply.status, call.refresh), (200, Some(RefreshResult::Ok)));
    assert_eq!(app.refresh_calls(), 1);
    let second = app.current_access();
    assert_ne!(second, first);
    assert_eq!(app.last_token_sent(), second);
    assert_ne!(browser.header(), before, "a new cookie was set");
    assert!(!everything(&call).contains("access-") && !everything(&call).contains("refresh-"));

    // The new cookie carries on without another refresh.
    let call = app.send(&mut browser, "GET", "/api/me", b"");
    assert_eq!((call.reply.status, call.refresh), (200, None));
    assert_eq!(app.refresh_calls(), 1);
    let session = app.send(&mut browser, "GET", "/api/session", b"");
    assert_eq!(json_of(&session)["expiresAt"], json!(NOW + 300 + 300 - 60));
}

#[test]
fn the_old_cookie_within_the_window_gets_the_same_result_without_a_call() {
    let app = App::standard();
    let mut browser = CookieStore::new();
    app.login(&mut browser);
    let mut late = browser.clone();
    app.clock.advance(300);
    app.send(&mut browser, "GET", "/api/me", b"");
    assert_eq!(app.refresh_calls(), 1);

    app.clock.advance(WINDOW - 1);
    let call = app.send(&mut late, "GET", "/api/me", b"");
    assert_eq!(
        (call.reply.status, call.refresh),
        (200, Some(RefreshResult::Reused))
    );
    assert_eq!(app.refresh_calls(), 1, "no second refresh call");
    assert_eq!(app.last_token_sent(), app.current_access());
    // Both browsers now hold the same session's tokens.
    let opened = |store: &CookieStore| match app
        .rules
        .cookies
        .open([store.header().as_bytes()], app.clock.now())
    {
        tokenjar_domain::CookieState::Valid(s) => s.token,
        other => panic!("{other:?}"),
    };
    assert_eq!(opened(&late), opened(&browser));
}

#[test]
fn after_the_window_the_old_cookie_replays_and_the_session_ends() {
    let app = App::standard();
    let mut browser = CookieStore::new();
    app.login(&mut browser);
    let mut late = browser.clone();
    app.clock.advance(300);
    app.send(&mut browser, "GET", "/api/me", b"");

    app.clock.advance(WINDOW);
    let call = app.send(&mut late, "GET", "/api/me", b"");
    assert_eq!(call.reply.status, 401);
    assert_eq!(json_of(&call)["error"], "session_expired");
    assert_eq!(call.refresh, Some(RefreshResult::Refused));
    assert!(deletes_cookie(&call));
    assert!(late.names().is_empty(), "every cookie of the session deleted");
    assert_eq!(
        (app.refresh_calls(), app.api.replays.load(Ordering::SeqCst)),
        (2, 1)
    );

    // The API revoked the family: the other browser's session ends too,
    // at its next refresh or at the API's first 401.
    let call = app.send(&mut browser, "GET", "/api/me", b"");
    assert_eq!(call.reply.status, 401);
}

#[test]
fn a_401_to_a_bodiless_get_is_refreshed_and_retried_once() {
    let app = App::standard();
    let mut browser = CookieStore::new();
    app.login(&mut browser);
    let first = app.current_access();
    app.api.expire_access(&first);

    let call = app.send(&mut browser, "GET", "/api/me", b"");
    assert_eq!((call.reply.status, call.refresh), (200, Some(RefreshResult::Ok)));
    let requests = app.gateway.upstream().requests();
    let paths: Vec<&str> = requests.iter().map(RecordedRequest::path).collect();
    assert_eq!(paths, ["/login", "/me", "/refresh", "/me"]);
    assert_eq!(app.last_token_sent(), app.current_access());
    assert!(browser.header() != "", "new cookie");

    // A POST is not sent twice: its 401 passes through.
    let second = app.current_access();
    app.api.expire_access(&second);
    let post = app.send(&mut browser, "POST", "/api/me", b"{}");
    assert_eq!((post.reply.status, post.refresh), (401, None));
    assert_eq!(app.refresh_calls(), 1);

    // A retry that gets 401 again is answered with it, not retried again.
    app.api.refuse_all.store(true, Ordering::SeqCst);
    let call = app.send(&mut browser, "GET", "/api/me", b"");
    assert_eq!((call.reply.status, call.refresh), (401, Some(RefreshResult::Ok)));
    assert_eq!(app.refresh_calls(), 2);
}

#[test]
fn a_refused_refresh_ends_the_session_and_deletes_its_cookies() {
    let app = App::standard();
    let mut browser = CookieStore::new();
    app.login(&mut browser);
    // The API forgets the family (revoked elsewhere).
    app.api.families.lock().unwrap().last_mut().unwrap().revoked = true;
    app.clock.advance(300);
    let call = app.send(&mut browser, "GET", "/api/me", b"");
    assert_eq!(call.reply.status, 401);
    assert_eq!(json_of(&call)["error"], "session_expired");
    assert!(deletes_cookie(&call));
    assert!(browser.names().is_empty());
    let session = app.send(&mut browser, "GET", "/api/session", b"");
    assert_eq!(json_of(&session), json!({"loggedIn": false}));
}

#[test]
fn the_api_down_during_a_refresh_keeps_the_session_for_the_next_try() {
    let app = App::standard();
    let mut browser = CookieStore::new();
    app.login(&mut browser);
    app.clock.advance(300);
    app.api.down.store(true, Ordering::SeqCst);
    let kept = browser.header();
    let call = app.send(&mut browser, "GET", "/api/me", b"");
    assert_eq!(call.reply.status, 502);
    assert_eq!(json_of(&call)["error"], "upstream_unavailable");
    assert_eq!(call.refresh, Some(RefreshResult::Failed));
    assert!(call.reply.headers.get_all("set-cookie").next().is_none());
    assert_eq!(browser.header(), kept);

    app.api.down.store(false, Ordering::SeqCst);
    let call = app.send(&mut browser, "GET", "/api/me", b"");
    assert_eq!((call.reply.status, call.refresh), (200, Some(RefreshResult::Ok)));
    assert_eq!(app.refresh_calls(), 2);
}

#[test]
fn logout_tells_the_api_the_refresh_token() {
    let app = App::standard();
    let mut browser = CookieStore::new();
    app.login(&mut browser);
    let refresh = app.api.families.lock().unwrap().last().unwrap().current.clone();
    let logout = app.send(&mut browser, "POST", "/api/logout", b"");
    assert_eq!(logout.reply.status, 200);
    assert_eq!(*app.api.revocations.lock().unwrap(), [refresh]);
    assert!(browser.names().is_empty());
    // Best effort: a revocation that fails does not stop the logout.
    let app = App::standard();
    let mut browser = CookieStore::new();
    app.login(&mut browser);
    app.api.families.lock().unwrap().clear();
    assert_eq!(
        app.send(&mut browser, "POST", "/api/logout", b"").reply.status,
        200
    );
}

#[test]
fn fifty_concurrent_requests_across_an_expiry_share_one_refresh() {
    let app = App::standard();
    let mut browser = CookieStore::new();
    app.login(&mut browser);
    app.clock.advance(300);
    app.api.close_gate();
    let cookie = browser.header();
    let flights = app.rules.refresh.clone().unwrap();

    let workers: Vec<_> = (0..50)
        .map(|i| {
            let gateway = worker(&app.rules, &app.api, &app.clock, 100 + i);
            let cookie = cookie.clone();
            std::thread::spawn(move || {
                let handled = send(&gateway, &cookie, "GET", "/api/me", b"");
                let sent = gateway.upstream().requests();
                let token = sent
                    .iter()
                    .rev()
                    .find(|r| r.path() == "/me")
                    .and_then(|r| r.headers.get_str("auth-token").map(str::to_owned));
                (handled.reply.status, handled.refresh, token)
            })
        })
        .collect();
    // Every other request waits for the one refreshing: no sleeping for a
    // guess at timing, the table says when they are all there.
    let deadline = Instant::now() + Duration::from_secs(30);
    while flights.flights().waiting() < 49 {
        assert!(
            Instant::now() < deadline,
            "only {} waiting",
            flights.flights().waiting()
        );
        std::thread::yield_now();
    }
    app.api.open_gate();
    let results: Vec<_> = workers.into_iter().map(|w| w.join().unwrap()).collect();

    assert_eq!(app.refresh_calls(), 1, "exactly one refresh call");
    let new = app.current_access();
    assert!(results
        .iter()
        .all(|(status, _, token)| *status == 200 && token.as_deref() == Some(new.as_str())));
    let count = |r: RefreshResult| results.iter().filter(|(_, got, _)| *got == Some(r)).count();
    assert_eq!((count(RefreshResult::Ok), count(RefreshResult::Reused)), (1, 49));
}

/// A WebSocket handshake to `/api/socket` from `browser`'s page.
fn handshake(app: &App, browser: &CookieStore) -> Result<tokenjar_domain::WebSocketPlan, Handled<Vec<u8>>> {
    let headers: Headers = [
        ("host", "app.example"),
        ("origin", "http://app.example"),
        ("upgrade", "websocket"),
        ("connection", "Upgrade"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("sec-websocket-version", "13"),
        ("cookie", browser.header().as_str()),
    ]
    .into_iter()
    .collect();
    let request = ClientRequest {
        method: "GET".into(),
        path: "/api/socket".to_owned(),
        query: None,
        headers,
        peer: Some("192.0.2.7".parse().unwrap()),
        scheme: "http",
        body: (),
    };
    let route = app
        .gateway
        .route(tokenjar_domain::Listener::Main, &request.path)
        .unwrap();
    assert!(app.gateway.is_websocket(&route, &request));
    pollster::block_on(app.gateway.websocket(&route, request))
}

#[test]
fn a_due_session_is_refreshed_before_a_websocket_handshake() {
    let app = App::standard();
    let mut browser = CookieStore::new();
    app.login(&mut browser);
    let plan = handshake(&app, &browser).unwrap();
    assert_eq!(plan.refresh, None);
    assert!(plan.reply_headers.get_all("set-cookie").next().is_none());

    app.clock.advance(300);
    let plan = handshake(&app, &browser).unwrap();
    assert_eq!(plan.refresh, Some(RefreshResult::Ok));
    assert_eq!(
        plan.headers.get_str("auth-token"),
        Some(app.current_access().as_str())
    );
    let before = browser.header();
    browser.apply(plan.reply_headers.get_all("set-cookie"));
    assert_ne!(browser.header(), before, "the 101 carries the new cookie");

    // Refused: the handshake is answered 401 and the session deleted.
    app.api.families.lock().unwrap().last_mut().unwrap().revoked = true;
    app.clock.advance(300);
    let refused = handshake(&app, &browser).unwrap_err();
    assert_eq!(refused.reply.status, 401);
    assert_eq!(json_of(&refused)["error"], "session_expired");
    assert_eq!(refused.refresh, Some(RefreshResult::Refused));
    assert!(deletes_cookie(&refused));
}

#[test]
fn a_hostile_refresh_answer_fails_the_request_and_keeps_the_session() {
    let huge = format!(r#"{{"authToken":"a-2","pad":"{}"}}"#, "x".repeat(1024 * 1024));
    type Answer = Result<UpstreamResponse<Vec<u8>>, UpstreamError>;
    let cases: Vec<(&str, Answer, u16, &str)> = vec![
        (
            "not JSON",
            Ok(tokenjar_domain::memory::bytes_response(
                200,
                "text/html",
                b"<html>".to_vec(),
            )),
            502,
            "upstream_unavailable",
        ),
        (
            "no token",
            Ok(json_response(200, &json!({"ok": true}))),
            502,
            "upstream_unavailable",
        ),
        (
            "header breaking token",
            Ok(json_response(200, &json!({"authToken": "a\r\nSet-Cookie: x=1"}))),
            502,
            "upstream_unavailable",
        ),
        (
            "refresh token not header-safe",
            Ok(json_response(
                200,
                &json!({"authToken": "a-2", "refreshToken": "r\u{0}"}),
            )),
            502,
            "upstream_unavailable",
        ),
        (
            "over 1 MiB",
            Ok(tokenjar_domain::memory::bytes_response(
                200,
                "application/json",
                huge.into_bytes(),
            )),
            502,
            "upstream_unavailable",
        ),
        (
            "compressed",
            Ok({
                let mut r = json_response(200, &json!({"authToken": "a-2"}));
                r.headers.append("content-encoding", "gzip");
                r
            }),
            502,
            "upstream_unavailable",
        ),
        (
            "redirect",
            Ok(json_response(302, &json!({"authToken": "a-2"}))),
            502,
            "upstream_unavailable",
        ),
        (
            "too many requests",
            Ok(json_response(429, &json!({}))),
            502,
            "upstream_unavailable",
        ),
        ("timeout", Err(UpstreamError::Timeout), 504, "upstream_timeout"),
        (
            "reset",
            Err(UpstreamError::Unavailable("reset".into())),
            502,
            "upstream_unavailable",
        ),
    ];
    for (what, answer, status, code) in cases {
        let answer = Mutex::new(Some(answer));
        let clock = Arc::new(ManualClock::new(NOW));
        let rules = rules(30);
        let gateway = Gateway::new(
            rules.clone(),
            InMemoryUpstream::new(move |request| match request.path() {
                "/login" => Ok(json_response(
                    200,
                    &json!({"authToken": "a-1", "refreshToken": "r-1", "expiresIn": 10}),
                )),
                "/refresh" => answer.lock().unwrap().take().unwrap(),
                _ => Ok(json_response(200, &json!({}))),
            }),
            clock.clone(),
            SeededRandom::new(5),
        );
        let mut browser = CookieStore::new();
        let login = send(&gateway, "", "POST", "/api/login", b"{}");
        browser.apply(login.reply.headers.get_all("set-cookie"));
        let call = send(&gateway, &browser.header(), "GET", "/api/me", b"");
        assert_eq!(call.reply.status, status, "{what}");
        assert_eq!(json_of(&call)["error"], code, "{what}");
        assert_eq!(call.refresh, Some(RefreshResult::Failed), "{what}");
        assert!(
            call.reply.headers.get_all("set-cookie").next().is_none(),
            "{what}: session kept"
        );
        let seen = everything(&call);
        assert!(!seen.contains("a-2") && !seen.contains("r-1"), "{what}: {seen}");
        // Nothing was kept: the next request asks the API again.
        assert_eq!(rules.refresh.as_ref().unwrap().flights().kept(), 0, "{what}");
    }
}

#[test]
fn an_old_cookie_whose_kept_tokens_are_due_goes_on_from_them() {
    // Access tokens of 100 s, a 60 s leeway and a 120 s window: a result
    // kept for a late request can be due again before the window ends.
    let app = App::new(300, 100, 120);
    let mut browser = CookieStore::new();
    app.login(&mut browser);
    let mut late = browser.clone();
    app.clock.advance(300);
    app.send(&mut browser, "GET", "/api/me", b"");
    assert_eq!(app.refresh_calls(), 1);

    // 50 s later the kept tokens are inside the leeway: the late request
    // refreshes from the kept refresh token, never the spent one.
    app.clock.advance(50);
    let call = app.send(&mut late, "GET", "/api/me", b"");
    assert_eq!((call.reply.status, call.refresh), (200, Some(RefreshResult::Ok)));
    assert_eq!(app.refresh_calls(), 2);
    assert_eq!(
        app.api.replays.load(Ordering::SeqCst),
        0,
        "no spent refresh token sent again"
    );
    assert_eq!(app.last_token_sent(), app.current_access());
    // The first browser's cookie, one refresh behind, follows the same
    // chain and shares the result.
    let call = app.send(&mut browser, "GET", "/api/me", b"");
    assert_eq!(
        (call.reply.status, call.refresh),
        (200, Some(RefreshResult::Reused))
    );
    assert_eq!(app.refresh_calls(), 2);
}

/// The memory store shared by two stand-in instances, whose pause really
/// waits (the memory store's own does not: one process never waits for
/// another's lease).
struct SharedStore(tokenjar_domain::MemoryStore<Arc<ManualClock>>);

impl tokenjar_domain::SessionStore for SharedStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, tokenjar_domain::StoreError> {
        self.0.get(key).await
    }

    async fn put(
        &self,
        key: &str,
        value: &[u8],
        ttl_ms: u64,
        indexes: &[String],
    ) -> Result<(), tokenjar_domain::StoreError> {
        self.0.put(key, value, ttl_ms, indexes).await
    }

    async fn put_new(
        &self,
        key: &str,
        value: &[u8],
        ttl_ms: u64,
    ) -> Result<bool, tokenjar_domain::StoreError> {
        self.0.put_new(key, value, ttl_ms).await
    }

    async fn delete_if(&self, key: &str, value: &[u8]) -> Result<bool, tokenjar_domain::StoreError> {
        self.0.delete_if(key, value).await
    }

    async fn delete(&self, key: &str) -> Result<(), tokenjar_domain::StoreError> {
        self.0.delete(key).await
    }

    async fn delete_indexed(&self, index: &str) -> Result<u64, tokenjar_domain::StoreError> {
        self.0.delete_indexed(index).await
    }

    async fn ping(&self) -> Result<(), tokenjar_domain::StoreError> {
        Ok(())
    }

    async fn pause(&self, ms: u64) {
        // A polling interval, on a thread of its own: not a guess at timing.
        std::thread::sleep(Duration::from_millis(ms));
    }
}

type StoredFlow = Gateway<InMemoryUpstream, Arc<ManualClock>, SeededRandom, Arc<SharedStore>>;

/// An instance's rules with sessions in a store: a refresh table of its own.
fn stored_rules() -> Arc<Rules> {
    let mut rules = Arc::unwrap_or_clone(rules(WINDOW.unsigned_abs()));
    rules.store = Some(tokenjar_domain::StoreRules {
        refresh_poll_ms: 5,
        ..tokenjar_domain::StoreRules::default()
    });
    Arc::new(rules)
}

fn stored_worker(
    rules: &Arc<Rules>,
    api: &Arc<Api>,
    clock: &Arc<ManualClock>,
    store: &Arc<SharedStore>,
    seed: u64,
) -> StoredFlow {
    let api = api.clone();
    Gateway::new(
        rules.clone(),
        InMemoryUpstream::new(move |request| api.handle(request)),
        clock.clone(),
        SeededRandom::new(seed),
    )
    .with_store(Arc::clone(store))
}

/// SPEC §17: with sessions in a shared store, 50 concurrent requests of
/// one session across an expiry, half on each of two instances, make one
/// refresh call: one instance takes the store's lease and refreshes, the
/// other polls the stored session and goes on with what it finds, and
/// within each instance the refresh table shares the result.
#[test]
fn fifty_requests_on_two_instances_sharing_a_store_make_one_refresh() {
    let clock = Arc::new(ManualClock::new(NOW));
    let api = Api::new(clock.clone(), 300, 300);
    let store = Arc::new(SharedStore(tokenjar_domain::MemoryStore::new(clock.clone())));
    let (a, b) = (stored_rules(), stored_rules());
    let mut browser = CookieStore::new();
    let login = send(
        &stored_worker(&a, &api, &clock, &store, 1),
        "",
        "POST",
        "/api/login",
        b"{}",
    );
    assert_eq!(login.reply.status, 200);
    browser.apply(login.reply.headers.get_all("set-cookie"));
    clock.advance(300);
    api.close_gate();
    let cookie = browser.header();

    let workers: Vec<_> = (0..50u64)
        .map(|i| {
            let rules = if i % 2 == 0 { &a } else { &b };
            let gateway = stored_worker(rules, &api, &clock, &store, 100 + i);
            let cookie = cookie.clone();
            std::thread::spawn(move || {
                let handled = send(&gateway, &cookie, "GET", "/api/me", b"");
                let token = gateway
                    .upstream()
                    .requests()
                    .iter()
                    .rev()
                    .find(|r| r.path() == "/me")
                    .and_then(|r| r.headers.get_str("auth-token").map(str::to_owned));
                (handled.reply.status, token)
            })
        })
        .collect();
    // 24 requests wait in each instance's table: one leads in each, and of
    // the two leaders one calls the API and the other polls the store.
    let deadline = Instant::now() + Duration::from_secs(30);
    let waiting = |rules: &Arc<Rules>| rules.refresh.as_ref().unwrap().flights().waiting();
    while waiting(&a) < 24 || waiting(&b) < 24 {
        assert!(
            Instant::now() < deadline,
            "waiting: {} and {}",
            waiting(&a),
            waiting(&b)
        );
        std::thread::yield_now();
    }
    api.open_gate();
    let results: Vec<_> = workers.into_iter().map(|w| w.join().unwrap()).collect();

    assert_eq!(
        api.refresh_calls.load(Ordering::SeqCst),
        1,
        "exactly one refresh call"
    );
    assert_eq!(api.replays.load(Ordering::SeqCst), 0);
    let families = api.families.lock().unwrap();
    let current = families.last().unwrap();
    let newest = current
        .access
        .keys()
        .max_by_key(|k| k[7..].parse::<u32>().unwrap())
        .unwrap();
    for (status, token) in &results {
        assert_eq!(*status, 200);
        assert_eq!(token.as_deref(), Some(newest.as_str()));
    }
}
