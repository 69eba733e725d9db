//! Server-side sessions through the in-memory adapters (SPEC §17), no
//! socket: the memory store behind a switch that can take it down, the
//! demo API, a manual clock. What is stored, when it ends, and what a
//! store that cannot be asked does to each kind of request.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::json;
use tokenjar_domain::demo::DemoApi;
use tokenjar_domain::memory::{CookieStore, InMemoryUpstream, ManualClock, SeededRandom};
use tokenjar_domain::{
    session_key, ClientRequest, CookieJar, CookieKeys, CookiePolicy, CsrfRules, Forwarding, Gateway, Handled,
    Headers, LoginRules, MemoryStore, Rejection, ReplyBody, Routes, Rules, SessionStore, StoreError,
    StoreRules, TokenRules, UpstreamBase,
};

const NOW: i64 = 1_700_000_000;
/// The demo API's tokens live an hour.
const TOKEN_LIFETIME_S: i64 = 3600;
const DEMO_LOGIN: &[u8] = br#"{"username":"demo","password":"demo"}"#;

/// The memory store, a switch that makes every call fail as an unreachable
/// store would, and a record of every value written.
struct Switchable {
    store: MemoryStore<Arc<ManualClock>>,
    down: AtomicBool,
    written: Mutex<Vec<(String, Vec<u8>)>>,
}

impl Switchable {
    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("switched off by the test".into()));
        }
        Ok(())
    }
}

impl SessionStore for Switchable {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.check()?;
        self.store.get(key).await
    }

    async fn put(&self, key: &str, value: &[u8], ttl_ms: u64, indexes: &[String]) -> Result<(), StoreError> {
        self.check()?;
        self.written
            .lock()
            .unwrap()
            .push((key.to_owned(), value.to_vec()));
        self.store.put(key, value, ttl_ms, indexes).await
    }

    async fn put_new(&self, key: &str, value: &[u8], ttl_ms: u64) -> Result<bool, StoreError> {
        self.check()?;
        self.store.put_new(key, value, ttl_ms).await
    }

    async fn delete_if(&self, key: &str, value: &[u8]) -> Result<bool, StoreError> {
        self.check()?;
        self.store.delete_if(key, value).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.check()?;
        self.store.delete(key).await
    }

    async fn delete_indexed(&self, index: &str) -> Result<u64, StoreError> {
        self.check()?;
        self.store.delete_indexed(index).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.check()
    }

    async fn pause(&self, ms: u64) {
        self.store.pause(ms).await;
    }
}

struct App {
    gateway: Gateway<InMemoryUpstream, Arc<ManualClock>, SeededRandom, Arc<Switchable>>,
    store: Arc<Switchable>,
    clock: Arc<ManualClock>,
}

impl App {
    fn new() -> Self {
        let clock = Arc::new(ManualClock::new(NOW));
        let upstream = DemoApi::new(TOKEN_LIFETIME_S, &SeededRandom::new(2))
            .unwrap()
            .into_upstream(clock.clone());
        let rules = Arc::new(Rules {
            routes: Routes::new("/api", "/api/login", "/api/logout", "/api/session").unwrap(),
            upstream: UpstreamBase::parse("http://api.internal:9000").unwrap(),
            token: TokenRules::default(),
            login: LoginRules::default(),
            cookies: CookieJar::new(
                CookiePolicy::default(),
                CookieKeys::generate(&SeededRandom::new(1)).unwrap(),
            ),
            csrf: CsrfRules::default(),
            forwarding: Forwarding::default(),
            refresh: None,
            oidc: None,
            store: Some(StoreRules::default()),
        });
        let store = Arc::new(Switchable {
            store: MemoryStore::new(clock.clone()),
            down: AtomicBool::new(false),
            written: Mutex::new(Vec::new()),
        });
        let gateway =
            Gateway::new(rules, upstream, clock.clone(), SeededRandom::new(3)).with_store(Arc::clone(&store));
        Self {
            gateway,
            store,
            clock,
        }
    }

    fn send(&self, method: &str, path: &str, browser: &CookieStore, body: &[u8]) -> Handled<Vec<u8>> {
        let mut headers = Headers::new();
        headers.append("host", "app.example");
        headers.append("x-csrf", "1");
        if !body.is_empty() {
            headers.append("content-type", "application/json");
            headers.append("content-length", body.len().to_string());
        }
        let cookie = browser.header();
        if !cookie.is_empty() {
            headers.append("cookie", cookie);
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
        pollster::block_on(self.gateway.handle(request))
    }

    /// Sends and lets `browser` keep the answer's cookies.
    fn visit(&self, method: &str, path: &str, browser: &mut CookieStore, body: &[u8]) -> Handled<Vec<u8>> {
        let handled = self.send(method, path, browser, body);
        browser.apply(handled.reply.headers.get_all("set-cookie"));
        handled
    }

    fn set_down(&self, down: bool) {
        self.store.down.store(down, Ordering::SeqCst);
    }
}

fn json_of(handled: &Handled<Vec<u8>>) -> serde_json::Value {
    match &handled.reply.body {
        ReplyBody::Full(body) | ReplyBody::Stream { body, .. } => serde_json::from_slice(body).unwrap(),
    }
}

fn logged_in(app: &App, browser: &CookieStore) -> bool {
    json_of(&app.send("GET", "/api/session", browser, b""))["loggedIn"] == json!(true)
}

/// The demo API's token for the last login (its `/me` answers the user).
fn token_at_api(app: &App) -> Option<String> {
    let requests = app.gateway.upstream().requests();
    requests
        .last()
        .and_then(|r| r.headers.get_str(DemoApi::TOKEN_HEADER))
        .map(str::to_owned)
}

#[test]
fn the_store_holds_the_session_sealed_and_the_cookie_only_an_id() {
    let app = App::new();
    let mut browser = CookieStore::new();
    let login = app.visit("POST", "/api/login", &mut browser, DEMO_LOGIN);
    assert_eq!(login.reply.status, 200);
    assert_eq!(app.visit("GET", "/api/me", &mut browser, b"").reply.status, 200);
    let token = token_at_api(&app).expect("the API got the token");

    // One session written, sealed: the token is nowhere in the store, and
    // the cookie is an id of a fixed size whatever the token's.
    let written = app.store.written.lock().unwrap().clone();
    assert_eq!(written.len(), 1);
    assert!(written[0].0.starts_with("session:"), "{}", written[0].0);
    assert!(!written[0].1.windows(token.len()).any(|w| w == token.as_bytes()));
    assert!(browser.header().len() < 200, "{}", browser.header());
    assert!(!browser.header().contains(&token));

    // Logout ends it in the store at once.
    assert_eq!(
        app.visit("POST", "/api/logout", &mut browser, b"").reply.status,
        200
    );
    assert!(pollster::block_on(app.store.store.get(&written[0].0))
        .unwrap()
        .is_none());
}

#[test]
fn a_stored_session_ends_with_its_lifetime() {
    let app = App::new();
    let mut browser = CookieStore::new();
    app.visit("POST", "/api/login", &mut browser, DEMO_LOGIN);
    let copied = browser.clone();
    app.clock.advance(TOKEN_LIFETIME_S - 1);
    assert!(logged_in(&app, &copied));
    app.clock.advance(1);
    // The store's TTL and the sealed expiry end it together.
    let handled = app.send("GET", "/api/me", &copied, b"");
    assert_eq!(handled.rejected_cookie, Some(Rejection::Expired));
    assert_eq!(handled.reply.status, 401, "the demo API got no token");
}

#[test]
fn a_store_that_cannot_be_asked_is_503_for_sessions_and_logins_only() {
    let app = App::new();
    let mut browser = CookieStore::new();
    app.visit("POST", "/api/login", &mut browser, DEMO_LOGIN);
    app.set_down(true);

    for (method, path, body) in [
        ("GET", "/api/me", &b""[..]),
        ("GET", "/api/session", b""),
        ("POST", "/api/logout", b""),
        ("POST", "/api/login", DEMO_LOGIN),
    ] {
        let handled = app.send(method, path, &browser, body);
        assert_eq!(handled.reply.status, 503, "{method} {path}");
        assert_eq!(
            json_of(&handled)["error"],
            "session_store_unavailable",
            "{method} {path}"
        );
        // Nothing is deleted on the way: the session may well be there.
        assert_eq!(
            handled.reply.headers.get_all("set-cookie").count(),
            0,
            "{method} {path}"
        );
    }
    // Without a session cookie there is nothing to ask the store.
    let anonymous = app.send("GET", "/api/me", &CookieStore::new(), b"");
    assert_eq!(anonymous.reply.status, 401, "proxied: the demo API's own answer");

    // Back: the session was never lost.
    app.set_down(false);
    assert!(logged_in(&app, &browser));
    assert_eq!(app.send("GET", "/api/me", &browser, b"").reply.status, 200);
}

#[test]
fn a_hostile_stored_value_counts_as_no_session() {
    let app = App::new();
    let mut browser = CookieStore::new();
    app.visit("POST", "/api/login", &mut browser, DEMO_LOGIN);
    let key = app.store.written.lock().unwrap()[0].0.clone();
    let sealed = pollster::block_on(app.store.store.get(&key)).unwrap().unwrap();
    for hostile in [
        sealed[..sealed.len() / 2].to_vec(),
        b"\xff\xfe not utf-8".to_vec(),
        Vec::new(),
        // A session in clear, as a store written by something else holds.
        format!("{}:forged-token", NOW + 600).into_bytes(),
    ] {
        pollster::block_on(app.store.store.put(&key, &hostile, 60_000, &[])).unwrap();
        let handled = app.send("GET", "/api/me", &browser, b"");
        assert_eq!(handled.rejected_cookie, Some(Rejection::Unopenable));
        assert_eq!(handled.reply.status, 401);
        assert!(handled.reply.headers.get_all("set-cookie").count() > 0, "deleted");
        assert_ne!(token_at_api(&app).as_deref(), Some("forged-token"));
    }
    assert!(key.starts_with(&session_key("")));
}
