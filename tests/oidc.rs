//! OIDC mode end to end (SPEC §16): the tokenjar binary, the real test
//! OpenID Provider (tests/oidc/provider.mjs, npm's oidc-provider) and a
//! recording API. The whole login, concurrent and replayed callbacks, one
//! refresh for 50 concurrent requests, `returnTo` spellings that would leave
//! the origin, key rotation, logout with revocation, and providers that are
//! down at start, hostile (support/hostile_oidc.rs) or stalling, and ID
//! tokens forged every way the real provider never would. Ignored (run with
//! `cargo test --test oidc -- --ignored`): the recovery after a key rotation,
//! which waits out tokenjar's once-a-minute JWKS limit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use futures_util::future::join_all;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};
use tokenjar_e2e::hostile_oidc::{HostileProvider, USABLE_JWKS};
use tokenjar_e2e::oidc_provider::{query_param, OidcProvider, ProviderSettings};
use tokenjar_e2e::{spawn_app, unix_now, RecordingApi, Reply, TestApp};

/// The session cookie's name (spawn_app's plain-http default) and the login
/// cookie's (`<cookie.name>-login`).
const SESSION: &str = "auth-token";
const LOGIN: &str = "auth-token-login";

/// How long a tokenjar gets to read the provider at start (its first try
/// comes at once; a loaded machine is slow).
const READY_WAIT: Duration = Duration::from_secs(20);

/// One browser's cookies for tokenjar (name, value), updated from each
/// reply's `Set-Cookie` as a browser would (paths ignored: all are `/`).
#[derive(Debug, Default, Clone)]
struct Jar(Vec<(String, String)>);

impl Jar {
    fn keep(&mut self, reply: &Reply) {
        for cookie in reply.set_cookies() {
            self.0.retain(|(name, _)| *name != cookie.name);
            let deleted = cookie.value.is_empty() || cookie.max_age().is_some_and(|age| age <= 0);
            if !deleted {
                self.0.push((cookie.name, cookie.value));
            }
        }
    }

    fn header(&self) -> String {
        self.0
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(n, _)| n == name)
    }

    /// Only the session cookie, as the `Cookie` header (a copy a test keeps
    /// to send again later).
    fn session(&self) -> String {
        let (name, value) = self
            .0
            .iter()
            .find(|(n, _)| n == SESSION)
            .unwrap_or_else(|| panic!("no session cookie in {:?}", self.0));
        format!("{name}={value}")
    }
}

/// A loopback port nothing listens on right now (bound and released: the
/// provider must know tokenjar's callback URL before tokenjar starts).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// tokenjar's OIDC settings for `issuer`, with its callback and
/// post-logout URLs on `port`.
fn oidc_env(issuer: &str, port: u16) -> Vec<(String, String)> {
    [
        ("TOKENJAR_SERVER__PORT", port.to_string()),
        ("TOKENJAR_COOKIE__SECURE", "false".to_owned()),
        ("TOKENJAR_COOKIE__NAME", SESSION.to_owned()),
        ("TOKENJAR_OIDC__ISSUER", issuer.to_owned()),
        ("TOKENJAR_OIDC__CLIENT_ID", "tokenjar".to_owned()),
        ("TOKENJAR_OIDC__CLIENT_SECRET", "tokenjar-secret".to_owned()),
        (
            "TOKENJAR_OIDC__REDIRECT_URL",
            format!("http://127.0.0.1:{port}/api/callback"),
        ),
        (
            "TOKENJAR_OIDC__POST_LOGOUT_REDIRECT_URL",
            format!("http://127.0.0.1:{port}/"),
        ),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect()
}

/// A provider, a recording API and a tokenjar between them, ready.
struct Scene {
    provider: OidcProvider,
    api: RecordingApi,
    app: TestApp,
}

impl Scene {
    /// `None` when the provider cannot run here (no Node.js; see
    /// support/oidc_provider.rs). `env` is added to tokenjar's settings.
    async fn start(env: &[(&str, &str)]) -> Option<Self> {
        Self::start_tuned(env, |_| {}).await
    }

    /// Like [`Scene::start`], with the provider's settings changed by `tune`.
    async fn start_tuned(env: &[(&str, &str)], tune: impl FnOnce(&mut ProviderSettings)) -> Option<Self> {
        let port = free_port();
        let mut settings = ProviderSettings::new(&format!("http://127.0.0.1:{port}/api/callback"));
        settings.post_logout_redirect_uris = vec![format!("http://127.0.0.1:{port}/")];
        tune(&mut settings);
        let provider = OidcProvider::start(&settings)?;
        let api = RecordingApi::start();
        let mut all = oidc_env(provider.issuer(), port);
        all.extend(env.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())));
        let pairs: Vec<(&str, &str)> = all.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let app = spawn_app(&api.url("/v1"), &pairs);
        assert!(
            wait_ready(&app, READY_WAIT).await,
            "tokenjar never became ready:\n{}",
            app.logs().join("\n")
        );
        Some(Self { provider, api, app })
    }

    async fn get(&self, path: &str, jar: &Jar) -> Reply {
        let cookie = jar.header();
        get(&self.app, path, (!cookie.is_empty()).then_some(cookie.as_str())).await
    }

    /// `GET /api/login{query}` in `jar`: the provider URL it redirects to.
    async fn start_login(&self, jar: &mut Jar, query: &str) -> String {
        let reply = self.get(&format!("/api/login{query}"), jar).await;
        assert_eq!(reply.status, 302, "login: {}", reply.text());
        assert!(
            reply.set_cookie_for(LOGIN).is_some(),
            "no login cookie: {:?}",
            reply.headers
        );
        jar.keep(&reply);
        let location = reply.header("location").expect("a Location").to_owned();
        assert!(
            location.starts_with(&self.provider.url("/")),
            "not sent to the provider: {location}"
        );
        location
    }

    /// The callback URL (absolute, on tokenjar) requested in `jar`.
    async fn callback(&self, jar: &mut Jar, callback_url: &str) -> Reply {
        let path = callback_url
            .strip_prefix(&self.app.url(""))
            .unwrap_or_else(|| panic!("the provider sent the browser elsewhere: {callback_url}"));
        let reply = self.get(path, jar).await;
        jar.keep(&reply);
        reply
    }

    /// The user logs out at the provider itself (its end-session page,
    /// confirmed), and the provider's back-channel logout token reaches
    /// tokenjar: waits until the provider counted its delivery.
    async fn log_out_at_provider(&self) {
        let end_session = self.provider.discovery()["end_session_endpoint"]
            .as_str()
            .unwrap()
            .to_owned();
        self.provider.logout(&format!("{end_session}?client_id=tokenjar"));
        let deadline = Instant::now() + READY_WAIT;
        while self.provider.counters().backchannel_logouts == 0 {
            let counters = self.provider.counters();
            assert_eq!(
                counters.backchannel_logout_errors,
                0,
                "{counters:?}\n{}",
                self.provider.stderr()
            );
            assert!(Instant::now() < deadline, "no back-channel logout: {counters:?}");
            // A polling interval while the provider delivers.
            actix_rt::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A whole login as `user` in a new browser; the browser afterwards.
    async fn log_in(&self, user: &str) -> Jar {
        let mut jar = Jar::default();
        let url = self.start_login(&mut jar, "?returnTo=/after").await;
        let back = self.provider.login_as(&url, user);
        let reply = self.callback(&mut jar, &back).await;
        assert_eq!(reply.header("location"), Some("/after"), "callback: {reply:?}");
        jar
    }
}

/// `GET path` on tokenjar with `cookie`, redirects not followed (awc
/// follows them by default; the tests look at each one).
async fn get(app: &TestApp, path: &str, cookie: Option<&str>) -> Reply {
    let client = awc::Client::builder()
        .disable_redirects()
        .timeout(Duration::from_secs(30))
        .finish();
    let mut request = client.get(app.url(path));
    if let Some(cookie) = cookie {
        request = request.insert_header(("cookie", cookie));
    }
    let mut response = request
        .send()
        .await
        .unwrap_or_else(|err| panic!("GET {path}: {err}"));
    let body = response
        .body()
        .await
        .unwrap_or_else(|err| panic!("GET {path}: reading the body: {err}"));
    Reply {
        status: response.status().as_u16(),
        headers: tokenjar_e2e::header_pairs(response.headers()),
        body,
    }
}

/// Polls `/readyz` until 200 or `within` passes; true if it became ready.
async fn wait_ready(app: &TestApp, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if app.get_api("/readyz", None).await.status == 200 {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        // A polling interval, not a timing assumption.
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether a reply carries something JWT-shaped (an ID token) in its body
/// or in a header other than `Set-Cookie` (sealed cookie values are
/// ciphertext, checked for the access token instead).
fn shows_a_jwt(reply: &Reply) -> bool {
    reply.text().contains("eyJ")
        || reply
            .headers
            .iter()
            .any(|(name, value)| name != "set-cookie" && value.contains("eyJ"))
}

/// How many requests reached the API at `/v1/me` (tokenjar's readiness
/// probe reaches it too).
fn api_calls(api: &RecordingApi) -> usize {
    api.requests().iter().filter(|r| r.target == "/v1/me").count()
}

/// The access token the API received last (its `auth-token` header).
fn last_access_token(api: &RecordingApi) -> String {
    let last = api.last_request();
    assert!(
        last.header("cookie").is_none(),
        "a cookie reached the API: {last:?}"
    );
    last.header("auth-token")
        .unwrap_or_else(|| panic!("no auth-token header at the API: {last:?}"))
        .to_owned()
}

#[actix_web::test]
async fn a_whole_login_ends_with_a_session_and_no_token_in_the_browser() {
    let Some(scene) = Scene::start(&[]).await else {
        return;
    };
    let mut jar = Jar::default();
    let mut replies = Vec::new();

    let url = scene.start_login(&mut jar, "?returnTo=/after").await;
    for param in ["state", "nonce", "code_challenge"] {
        assert!(query_param(&url, param).is_some(), "no {param} in {url}");
    }
    assert_eq!(
        query_param(&url, "code_challenge_method").as_deref(),
        Some("S256")
    );
    let back = scene.provider.login_as(&url, "ada");
    assert!(back.starts_with(&scene.app.url("/api/callback?")), "{back}");

    let reply = scene.callback(&mut jar, &back).await;
    assert_eq!(reply.status, 302, "callback: {}", reply.text());
    assert_eq!(reply.header("location"), Some("/after"));
    assert!(reply.set_cookie_for(SESSION).is_some_and(|c| !c.value.is_empty()));
    let login = reply.set_cookie_for(LOGIN).expect("the login cookie deleted");
    assert!(
        login.value.is_empty() || login.max_age() == Some(0),
        "{}",
        login.raw
    );
    assert!(jar.has(SESSION) && !jar.has(LOGIN), "{jar:?}");
    replies.push(reply);
    assert_eq!(scene.provider.counters().code_exchanges, 1);

    let session = scene.get("/api/session", &jar).await;
    assert_eq!(session.status, 200);
    let body = session.json();
    assert_eq!(body["loggedIn"], true, "{body}");
    assert_eq!(body["refreshable"], true, "{body}");
    assert_eq!(body["user"]["sub"], "ada", "{body}");
    assert_eq!(body["user"]["name"], "Test User ada", "{body}");
    assert_eq!(body["user"]["email"], "ada@example.test", "{body}");
    assert_eq!(body["user"]["preferred_username"], "ada", "{body}");
    assert!(body["expiresAt"].is_u64(), "{body}");
    replies.push(session);

    let me = scene.get("/api/me", &jar).await;
    assert_eq!(me.status, 200, "{}", me.text());
    assert_eq!(api_calls(&scene.api), 1);
    assert_eq!(scene.api.last_request().target, "/v1/me");
    let access = last_access_token(&scene.api);
    assert!(access.len() >= 20, "an access token: {access:?}");
    replies.push(me);

    for reply in &replies {
        assert!(
            !reply.leaks(&access),
            "the access token reached the browser: {reply:?}"
        );
        assert!(!shows_a_jwt(reply), "a JWT reached the browser: {reply:?}");
    }
}

#[actix_web::test]
async fn three_logins_at_once_succeed_and_replayed_or_foreign_callbacks_do_not() {
    let Some(scene) = Scene::start(&[]).await else {
        return;
    };
    let mut jar = Jar::default();
    let mut urls = Vec::new();
    for tab in 0..3 {
        urls.push(scene.start_login(&mut jar, &format!("?returnTo=/tab{tab}")).await);
    }
    let callbacks: Vec<String> = urls
        .iter()
        .map(|url| scene.provider.login_as(url, "ada"))
        .collect();
    for tab in [2, 0, 1] {
        let reply = scene.callback(&mut jar, &callbacks[tab]).await;
        assert_eq!(
            reply.header("location"),
            Some(format!("/tab{tab}").as_str()),
            "tab {tab}: {reply:?}"
        );
    }
    assert!(!jar.has(LOGIN), "no pending login left: {jar:?}");
    assert_eq!(scene.provider.counters().code_exchanges, 3);

    // The same callback again: its pending login is spent.
    let replay = scene.callback(&mut jar.clone(), &callbacks[0]).await;
    assert_eq!(replay.status, 302);
    assert_eq!(replay.header("location"), Some("/?auth_error=invalid_state"));
    assert!(replay.set_cookie_for(SESSION).is_none_or(|c| c.value.is_empty()));
    assert_eq!(scene.provider.counters().code_exchanges, 3, "no code exchange");

    // A callback carried to another browser (with a login of its own).
    let mut victim = Jar::default();
    let url = scene.start_login(&mut victim, "?returnTo=/mine").await;
    let back = scene.provider.login_as(&url, "ada");
    let mut other = Jar::default();
    scene.start_login(&mut other, "").await;
    let stolen = scene.callback(&mut other, &back).await;
    assert_eq!(stolen.header("location"), Some("/?auth_error=invalid_state"));
    assert!(!other.has(SESSION), "{other:?}");
    // The browser that started it still finishes it.
    let mine = scene.callback(&mut victim, &back).await;
    assert_eq!(mine.header("location"), Some("/mine"));
}

/// Provider access tokens of 8 s and a leeway of 5 s: a session is due
/// for refresh 3 s after its login, and a refresh's result stays usable for
/// reuse for 3 s (the docs' rule: leeway below the token's lifetime).
const SHORT_TTL: u64 = 8;
const SHORT_LEEWAY: &str = "5";

/// Waits (on the wall clock, with a deadline) until the session in `jar`
/// is due for refresh: its `expiresAt` within the leeway.
async fn wait_until_due(scene: &Scene, jar: &Jar) {
    let expires_at = scene.get("/api/session", jar).await.json()["expiresAt"]
        .as_u64()
        .expect("an expiresAt");
    let due_at = expires_at - SHORT_LEEWAY.parse::<u64>().unwrap();
    let deadline = Instant::now() + Duration::from_secs(SHORT_TTL + 5);
    while unix_now() < due_at {
        assert!(Instant::now() < deadline, "the session never became due");
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
}

#[actix_web::test]
async fn fifty_concurrent_requests_across_an_expiry_share_one_refresh() {
    let env = [
        ("TOKENJAR_REFRESH__LEEWAY_S", SHORT_LEEWAY),
        ("TOKENJAR_REFRESH__REUSE_WINDOW_S", "60"),
    ];
    let Some(scene) = Scene::start_tuned(&env, |p| p.access_token_ttl = SHORT_TTL).await else {
        return;
    };
    let jar = scene.log_in("ada").await;
    wait_until_due(&scene, &jar).await;
    assert_eq!(
        scene.provider.counters().refreshes,
        0,
        "no refresh before the burst"
    );

    let cookie = jar.header();
    let headers = [("cookie", cookie.as_str())];
    let replies = join_all((0..50).map(|_| scene.app.send("GET", "/api/me", &headers, Bytes::new()))).await;
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    let counters = scene.provider.counters();
    assert!(
        statuses.iter().all(|s| *s == 200),
        "{statuses:?}\n{counters:?}\n{}",
        scene.app.logs().join("\n")
    );
    println!(
        "refresh_token grants for 50 concurrent requests: {}",
        counters.refreshes
    );
    assert_eq!(counters.refreshes, 1, "{counters:?}");
    assert_eq!(counters.refresh_errors, 0, "{counters:?}");
    assert_eq!(
        counters.grants_revoked, 0,
        "no replay at the provider: {counters:?}"
    );

    // Every request reached the API with the one new access token.
    let tokens: std::collections::HashSet<String> = scene
        .api
        .requests()
        .iter()
        .filter(|r| r.target == "/v1/me")
        .map(|r| r.header("auth-token").unwrap_or_default().to_owned())
        .collect();
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    assert_eq!(api_calls(&scene.api), 50);

    // The session survives: once due again, the refreshed cookie refreshes
    // with the rotated refresh token, and the provider accepts it.
    let mut next = jar.clone();
    next.keep(
        replies
            .iter()
            .find(|r| r.set_cookie_for(SESSION).is_some())
            .expect("a new cookie"),
    );
    wait_until_due(&scene, &next).await;
    let later = scene.get("/api/me", &next).await;
    assert_eq!(later.status, 200, "{}", later.text());
    let counters = scene.provider.counters();
    assert_eq!(
        (counters.refreshes, counters.refresh_errors),
        (2, 0),
        "{counters:?}"
    );
    let session = scene.get("/api/session", &next).await.json();
    assert_eq!(session["loggedIn"], true, "{session}");
}

#[actix_web::test]
async fn a_late_old_cookie_inside_the_reuse_window_does_not_spend_the_old_refresh_token() {
    // Within the documented bounds: leeway (5 s) below the token's lifetime
    // (8 s), reuse window 60 s.
    let env = [
        ("TOKENJAR_REFRESH__LEEWAY_S", SHORT_LEEWAY),
        ("TOKENJAR_REFRESH__REUSE_WINDOW_S", "60"),
    ];
    let Some(scene) = Scene::start_tuned(&env, |p| p.access_token_ttl = SHORT_TTL).await else {
        return;
    };
    let old = scene.log_in("ada").await;
    wait_until_due(&scene, &old).await;
    let first = scene.get("/api/me", &old).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(scene.provider.counters().refreshes, 1);
    let mut new = old.clone();
    new.keep(&first);
    // A tab that still holds the old cookie calls 3 s later: inside the
    // reuse window, but the kept result's token is now within the leeway.
    wait_until_due(&scene, &new).await;
    let late = scene.get("/api/me", &old).await;
    let counters = scene.provider.counters();
    // The session the first refresh made must live on: its own refresh
    // (due now) must be accepted.
    let current = scene.get("/api/me", &new).await;
    let after = scene.provider.counters();
    assert!(
        late.status == 200 && current.status == 200 && counters.refresh_errors == 0 && counters.grants_revoked == 0,
        "late old cookie: {} {}\nprovider then: {counters:?}\nthe refreshed session's next call: {} {}\nprovider after: {after:?}\n{}",
        late.status,
        late.text(),
        current.status,
        current.text(),
        scene.app.logs().join("\n")
    );
}

#[actix_web::test]
async fn return_to_cannot_leave_the_origin() {
    let Some(scene) = Scene::start(&[]).await else {
        return;
    };
    // Sent as raw bytes: a client library would refuse or re-encode `\`.
    for spelling in [
        "//evil.example",
        "/\\evil.example",
        "https://evil.example",
        "%2F%2Fevil.example",
        "/%5Cevil.example",
        "%2F%5Cevil.example",
        "/%09/evil.example",
        "javascript:alert(1)",
    ] {
        let reply = scene.app.raw(&format!(
            "GET /api/login?returnTo={spelling} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            scene.app.address
        ));
        assert_eq!(reply.status, 400, "returnTo={spelling}: {reply:?}");
        assert!(
            reply.set_cookie_for(LOGIN).is_none(),
            "returnTo={spelling} started a login"
        );
        assert!(
            reply.header("location").is_none(),
            "returnTo={spelling}: {reply:?}"
        );
    }
    // The control: a path here is accepted.
    let fine = scene
        .get("/api/login?returnTo=%2Forders%3Fx%3D1", &Jar::default())
        .await;
    assert_eq!(fine.status, 302, "{}", fine.text());
}

#[actix_web::test]
async fn a_rotated_key_within_the_first_minute_fails_logins_not_sessions() {
    let env = [("TOKENJAR_REFRESH__LEEWAY_S", "120")];
    let Some(scene) = Scene::start(&env).await else {
        return;
    };
    let old = scene.log_in("ada").await;
    scene.provider.rotate_keys();
    assert_eq!(scene.provider.counters().key_rotations, 1);

    // The start-up fetch was under a minute ago: tokenjar does not fetch the
    // key set again yet, so an ID token under the new key is refused.
    let mut jar = Jar::default();
    let url = scene.start_login(&mut jar, "?returnTo=/after").await;
    let back = scene.provider.login_as(&url, "grace");
    let reply = scene.callback(&mut jar, &back).await;
    assert_eq!(
        reply.header("location"),
        Some("/?auth_error=invalid_token"),
        "{reply:?}"
    );
    assert!(!jar.has(SESSION));

    // Sessions made before do not need the key: a refresh (due at once with
    // this leeway) and an API call still work.
    let me = scene.get("/api/me", &old).await;
    assert_eq!(me.status, 200, "{}", me.text());
    assert_eq!(scene.provider.counters().refreshes, 1);
}

#[actix_web::test]
async fn logout_revokes_at_the_provider_and_ends_the_old_cookie() {
    // A leeway above the access token's lifetime: a copied cookie must
    // refresh on its next use, which shows whether the grant still lives.
    let env = [("TOKENJAR_REFRESH__LEEWAY_S", "120")];
    let Some(scene) = Scene::start(&env).await else {
        return;
    };
    let jar = scene.log_in("ada").await;
    let copied = jar.session();

    let logout = scene.app.logout(Some(&jar.header())).await;
    assert_eq!(logout.status, 200, "{}", logout.text());
    let body = logout.json();
    assert_eq!(body["loggedIn"], false, "{body}");
    let logout_url = body["logoutUrl"].as_str().expect("a logoutUrl").to_owned();
    // tokenjar keeps no ID token, so none can leak as an id_token_hint.
    assert!(!shows_a_jwt(&logout), "{logout:?}");
    assert_eq!(query_param(&logout_url, "id_token_hint"), None);
    let end_session = scene.provider.discovery()["end_session_endpoint"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(logout_url.starts_with(&format!("{end_session}?")), "{logout_url}");
    assert_eq!(query_param(&logout_url, "client_id").as_deref(), Some("tokenjar"));
    assert_eq!(
        query_param(&logout_url, "post_logout_redirect_uri"),
        Some(scene.app.url("/"))
    );
    assert!(logout
        .set_cookie_for(SESSION)
        .is_some_and(|c| c.value.is_empty() || c.max_age() == Some(0)));
    let counters = scene.provider.counters();
    assert_eq!(counters.revocations, 1, "{counters:?}");

    // The page then ends the session at the provider.
    let landed = scene.provider.logout(&logout_url);
    assert_eq!(landed, scene.app.url("/"));
    assert_eq!(scene.provider.counters().end_sessions, 1);

    // The copied cookie's access token is due, and its refresh token was
    // revoked: the session is over.
    let replay = scene.app.get_api("/api/me", Some(&copied)).await;
    replay.assert_error(401, "session_expired");
    let counters = scene.provider.counters();
    assert_eq!(counters.refreshes, 0, "{counters:?}");
    assert_eq!(api_calls(&scene.api), 0, "nothing reached the API");
}

#[actix_web::test]
#[ignore = "waits out the JWKS rate limit (60 s after the start-up fetch); \
            the in-memory test a_rotated_signing_key_is_fetched_again_at_most_once_a_minute covers it"]
async fn a_rotated_key_is_fetched_again_after_a_minute() {
    let Some(scene) = Scene::start(&[]).await else {
        return;
    };
    let started = Instant::now();
    scene.provider.rotate_keys();
    // Each try is a whole login; the first ones (within a minute of the
    // start-up fetch) fail with invalid_token, then one fetches the new key.
    let deadline = started + Duration::from_secs(90);
    let mut failures = 0;
    loop {
        let mut jar = Jar::default();
        let url = scene.start_login(&mut jar, "?returnTo=/after").await;
        let back = scene.provider.login_as(&url, "ada");
        let reply = scene.callback(&mut jar, &back).await;
        match reply.header("location") {
            Some("/after") => break,
            Some("/?auth_error=invalid_token") => failures += 1,
            other => panic!("unexpected callback answer {other:?}: {reply:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "no login succeeded 90 s after the rotation:\n{}",
            scene.app.logs().join("\n")
        );
        // A polling interval: each try costs the provider a code exchange.
        actix_rt::time::sleep(Duration::from_secs(2)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_secs(55) || failures == 0,
        "the key set was fetched again within the minute"
    );
}

#[actix_web::test]
async fn a_provider_down_at_start_is_read_once_it_comes_up() {
    // The provider's port is picked first; nothing listens there yet.
    let (provider_port, app_port) = (free_port(), free_port());
    let issuer = format!("http://127.0.0.1:{provider_port}");
    let api = RecordingApi::start();
    let env = oidc_env(&issuer, app_port);
    let pairs: Vec<(&str, &str)> = env.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let mut app = spawn_app(&api.url("/v1"), &pairs);

    // At least one discovery has failed: tokenjar is up, not ready, and
    // refuses logins without crashing.
    assert!(
        app.wait_for_log("OpenID provider discovery failed", READY_WAIT),
        "{}",
        app.logs().join("\n")
    );
    app.get_api("/readyz", None)
        .await
        .assert_error(503, "provider_unavailable");
    get(&app, "/api/login", None)
        .await
        .assert_error(502, "provider_unavailable");
    // A callback (a forged one: no login could start) fails the same way.
    let callback = get(&app, "/api/callback?code=c&state=s", None).await;
    assert_eq!(callback.status, 302, "{}", callback.text());
    assert_eq!(
        callback.header("location"),
        Some("/?auth_error=provider_unavailable")
    );
    assert!(
        app.exit_status().is_none(),
        "tokenjar exited:\n{}",
        app.logs().join("\n")
    );

    let mut settings = ProviderSettings::new(&format!("http://127.0.0.1:{app_port}/api/callback"));
    settings.port = provider_port;
    let Some(provider) = OidcProvider::start(&settings) else {
        return;
    };
    assert_eq!(provider.issuer(), issuer);
    let up = Instant::now();
    // The backoff goes 1 s, 2 s, 4 s, … up to 30 s: within 40 s at worst.
    assert!(
        wait_ready(&app, Duration::from_secs(40)).await,
        "not ready 40 s after the provider came up:\n{}",
        app.logs().join("\n")
    );
    println!("ready {:?} after the provider came up", up.elapsed());

    // And logins work.
    let scene = Scene { provider, api, app };
    let jar = scene.log_in("ada").await;
    assert_eq!(scene.get("/api/session", &jar).await.json()["loggedIn"], true);
}

/// tokenjar against `provider` (hostile), with its own port.
fn spawn_against(issuer: &str) -> (RecordingApi, TestApp) {
    spawn_against_with(issuer, &[])
}

/// The same, with more settings.
fn spawn_against_with(issuer: &str, extra: &[(&str, &str)]) -> (RecordingApi, TestApp) {
    let api = RecordingApi::start();
    let mut env = oidc_env(issuer, free_port());
    env.extend(extra.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())));
    let pairs: Vec<(&str, &str)> = env.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let app = spawn_app(&api.url("/v1"), &pairs);
    (api, app)
}

/// Asserts tokenjar is up but not ready and refuses logins, after at least
/// `tries` discovery attempts reached `provider` at `path`.
async fn assert_stays_unready(app: &mut TestApp, provider: &HostileProvider, path: &str, tries: u64) {
    let deadline = Instant::now() + READY_WAIT;
    while provider.hits(path) < tries {
        assert!(
            Instant::now() < deadline,
            "{path} asked only {} times",
            provider.hits(path)
        );
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    app.get_api("/readyz", None)
        .await
        .assert_error(503, "provider_unavailable");
    get(app, "/api/login", None)
        .await
        .assert_error(502, "provider_unavailable");
    // A callback (a forged one: no login could start) fails the same way.
    let callback = get(app, "/api/callback?code=c&state=s", None).await;
    assert_eq!(callback.status, 302, "{}", callback.text());
    assert_eq!(
        callback.header("location"),
        Some("/?auth_error=provider_unavailable")
    );
    assert!(
        app.exit_status().is_none(),
        "tokenjar exited:\n{}",
        app.logs().join("\n")
    );
}

#[actix_web::test]
async fn a_discovery_document_naming_another_issuer_is_refused() {
    let hostile = HostileProvider::start();
    let doc = hostile.discovery_naming("http://127.0.0.1:9/someone-else");
    hostile.set("/.well-known/openid-configuration", 200, "application/json", &doc);
    hostile.set("/jwks", 200, "application/json", USABLE_JWKS);
    let (_api, mut app) = spawn_against(&hostile.issuer());
    // Two tries: the first failed and tokenjar retried after its backoff.
    assert_stays_unready(&mut app, &hostile, "/.well-known/openid-configuration", 2).await;
    assert_eq!(hostile.hits("/jwks"), 0, "no key set read for a wrong issuer");
    assert!(app
        .logs()
        .iter()
        .any(|l| l.contains("OpenID provider discovery failed")));
}

#[actix_web::test]
async fn a_key_set_that_is_not_json_keeps_tokenjar_unready() {
    let hostile = HostileProvider::start();
    let doc = hostile.discovery_naming(&hostile.issuer());
    hostile.set("/.well-known/openid-configuration", 200, "application/json", &doc);
    hostile.set("/jwks", 200, "application/json", "<html>not a key set</html>");
    let (_api, mut app) = spawn_against(&hostile.issuer());
    assert_stays_unready(&mut app, &hostile, "/jwks", 2).await;
}

#[actix_web::test]
async fn garbage_discovery_answers_keep_tokenjar_unready() {
    let hostile = HostileProvider::start();
    hostile.set(
        "/.well-known/openid-configuration",
        200,
        "application/json",
        "{\"issuer\": ",
    );
    let (_api, mut app) = spawn_against(&hostile.issuer());
    assert_stays_unready(&mut app, &hostile, "/.well-known/openid-configuration", 2).await;
    // Then a 500.
    hostile.set("/.well-known/openid-configuration", 500, "text/plain", "down");
    let seen = hostile.hits("/.well-known/openid-configuration");
    assert_stays_unready(&mut app, &hostile, "/.well-known/openid-configuration", seen + 1).await;
}

#[actix_web::test]
async fn a_redirected_discovery_is_not_followed() {
    let hostile = HostileProvider::start();
    // A usable document one redirect away: tokenjar's own calls to the
    // provider never follow redirects (docs/oidc.md, Security).
    let doc = hostile.discovery_naming(&hostile.issuer());
    hostile.set("/elsewhere", 200, "application/json", &doc);
    hostile.set("/jwks", 200, "application/json", USABLE_JWKS);
    hostile.set_redirect("/.well-known/openid-configuration", &hostile.url("/elsewhere"));
    let (_api, mut app) = spawn_against(&hostile.issuer());
    assert_stays_unready(&mut app, &hostile, "/.well-known/openid-configuration", 2).await;
    assert_eq!(hostile.hits("/elsewhere"), 0, "the redirect was followed");
}

#[actix_web::test]
async fn a_token_endpoint_answering_500_fails_the_callback_cleanly() {
    let hostile = HostileProvider::start();
    let doc = hostile.discovery_naming(&hostile.issuer());
    hostile.set("/.well-known/openid-configuration", 200, "application/json", &doc);
    hostile.set("/jwks", 200, "application/json", USABLE_JWKS);
    hostile.set("/token", 500, "text/html", "<h1>Internal Server Error</h1>");
    let (_api, mut app) = spawn_against(&hostile.issuer());
    assert!(wait_ready(&app, READY_WAIT).await, "{}", app.logs().join("\n"));

    let mut jar = Jar::default();
    let login = get(&app, "/api/login?returnTo=/after", None).await;
    assert_eq!(login.status, 302, "{}", login.text());
    jar.keep(&login);
    let location = login.header("location").unwrap();
    assert!(location.starts_with(&hostile.url("/authorize?")), "{location}");
    let state = query_param(location, "state").expect("a state");
    let callback = format!(
        "/api/callback?code=whatever&state={state}&iss={}",
        tokenjar_e2e::oidc_provider::form_component(&hostile.issuer())
    );
    let reply = get(&app, &callback, Some(&jar.header())).await;
    assert_eq!(reply.status, 302, "{}", reply.text());
    assert_eq!(
        reply.header("location"),
        Some("/?auth_error=provider_unavailable")
    );
    assert!(reply.set_cookie_for(SESSION).is_none_or(|c| c.value.is_empty()));
    assert_eq!(hostile.hits("/token"), 1);

    // A token endpoint answering 200 with something that is not JSON.
    hostile.set("/token", 200, "application/json", "not json at all");
    let mut jar = Jar::default();
    let login = get(&app, "/api/login", None).await;
    jar.keep(&login);
    let state = query_param(login.header("location").unwrap(), "state").unwrap();
    let callback = format!(
        "/api/callback?code=whatever&state={state}&iss={}",
        tokenjar_e2e::oidc_provider::form_component(&hostile.issuer())
    );
    let reply = get(&app, &callback, Some(&jar.header())).await;
    assert_eq!(reply.status, 302, "{}", reply.text());
    let location = reply.header("location").unwrap();
    // An unusable answer counts as the provider failing, like the 500.
    assert_eq!(location, "/?auth_error=provider_unavailable");
    assert!(reply.set_cookie_for(SESSION).is_none_or(|c| c.value.is_empty()));
    assert!(
        app.exit_status().is_none(),
        "tokenjar exited:\n{}",
        app.logs().join("\n")
    );
    assert_eq!(app.get_api("/readyz", None).await.status, 200);
}

/// A login at a hostile provider up to its callback: `GET /api/login`, then
/// the callback with the state tokenjar made, while the provider's token
/// endpoint answers an ID token made by `forge` from the login's nonce.
/// Returns the callback's reply and the browser's cookies after it.
async fn log_in_with_id_token(
    app: &TestApp,
    hostile: &HostileProvider,
    forge: &dyn Fn(&str) -> String,
) -> (Reply, Jar) {
    let mut jar = Jar::default();
    let login = get(app, "/api/login?returnTo=/after", None).await;
    assert_eq!(login.status, 302, "{}", login.text());
    jar.keep(&login);
    let location = login.header("location").unwrap();
    let state = query_param(location, "state").expect("a state");
    let nonce = query_param(location, "nonce").expect("a nonce");
    let answer = json!({
        "access_token": "access-token-from-a-hostile-provider",
        "token_type": "Bearer",
        "expires_in": 300,
        "id_token": forge(&nonce),
    });
    hostile.set("/token", 200, "application/json", &answer.to_string());
    let callback = format!(
        "/api/callback?code=whatever&state={state}&iss={}",
        tokenjar_e2e::oidc_provider::form_component(&hostile.issuer())
    );
    let reply = get(app, &callback, Some(&jar.header())).await;
    jar.keep(&reply);
    (reply, jar)
}

/// Makes an ID token from a login's nonce.
type Forge<'a> = Box<dyn Fn(&str) -> String + 'a>;

/// An ES256 signing key of a forging provider: PKCS#8 to sign, its JWK to
/// serve.
struct ForgingKey {
    pkcs8: Vec<u8>,
    jwk: Value,
}

impl ForgingKey {
    fn new(kid: &str) -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        let point = pair.public_key().as_ref();
        Self {
            pkcs8: pkcs8.as_ref().to_vec(),
            jwk: json!({
                "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
                "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
            }),
        }
    }

    /// `claims` signed with this key, the header naming `kid`.
    fn sign(&self, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_ec_der(&self.pkcs8)).unwrap()
    }
}

/// ID tokens the real provider would never issue, each from a provider
/// tokenjar trusts (the discovery and key set are genuine): every one ends
/// at `/?auth_error=invalid_token` with no session, the genuine token
/// through the same steps logs in, and the unknown `kid` did not make
/// tokenjar read the key set again within its once-a-minute limit (SPEC §16).
#[actix_web::test]
async fn forged_id_tokens_log_no_one_in() {
    let hostile = HostileProvider::start();
    let key = ForgingKey::new("k1");
    // Another provider's key, under the kid the real one serves.
    let stranger = ForgingKey::new("k1");
    let doc = hostile.discovery_naming(&hostile.issuer());
    hostile.set("/.well-known/openid-configuration", 200, "application/json", &doc);
    let jwks = json!({ "keys": [key.jwk] }).to_string();
    hostile.set("/jwks", 200, "application/json", &jwks);
    let (api, mut app) = spawn_against(&hostile.issuer());
    assert!(wait_ready(&app, READY_WAIT).await, "{}", app.logs().join("\n"));

    let issuer = hostile.issuer();
    // Borrows only, so the closure is Copy and every case can hold one.
    let claims = |nonce: &str| {
        json!({
            "iss": &issuer, "aud": "tokenjar", "sub": "ada", "name": "Ada",
            "iat": unix_now(), "exp": unix_now() + 300, "nonce": nonce,
        })
    };
    let changed = |change: fn(&mut Value)| {
        let key = &key;
        move |nonce: &str| {
            let mut c = claims(nonce);
            change(&mut c);
            key.sign("k1", &c)
        }
    };
    let unsigned = |header: &str, nonce: &str| {
        let payload = URL_SAFE_NO_PAD.encode(claims(nonce).to_string());
        format!("{}.{payload}.", URL_SAFE_NO_PAD.encode(header))
    };
    let cases: Vec<(&str, Forge<'_>)> = vec![
        (
            "alg none",
            Box::new(|n| unsigned(r#"{"alg":"none","kid":"k1"}"#, n)),
        ),
        (
            "HS256 keyed with the public key",
            Box::new(|n| {
                let mut header = Header::new(Algorithm::HS256);
                header.kid = Some("k1".to_owned());
                let secret = EncodingKey::from_secret(key.jwk.to_string().as_bytes());
                jsonwebtoken::encode(&header, &claims(n), &secret).unwrap()
            }),
        ),
        (
            "another provider's key",
            Box::new(|n| stranger.sign("k1", &claims(n))),
        ),
        (
            "a kid not in the key set",
            Box::new(|n| key.sign("k9", &claims(n))),
        ),
        (
            "a tampered payload",
            Box::new(|n| {
                let good = key.sign("k1", &claims(n));
                let parts: Vec<&str> = good.split('.').collect();
                let mut evil = claims(n);
                evil["sub"] = json!("eve");
                format!(
                    "{}.{}.{}",
                    parts[0],
                    URL_SAFE_NO_PAD.encode(evil.to_string()),
                    parts[2]
                )
            }),
        ),
        (
            "another issuer",
            Box::new(changed(|c| c["iss"] = json!("http://127.0.0.1:9"))),
        ),
        (
            "another audience",
            Box::new(changed(|c| c["aud"] = json!("someone-else"))),
        ),
        (
            "two audiences and no azp",
            Box::new(changed(|c| c["aud"] = json!(["tokenjar", "someone-else"]))),
        ),
        (
            "another nonce",
            Box::new(changed(|c| c["nonce"] = json!("replayed-nonce"))),
        ),
        (
            "no nonce",
            Box::new(changed(|c| {
                c.as_object_mut().unwrap().remove("nonce");
            })),
        ),
        (
            "expired",
            Box::new(changed(|c| c["exp"] = json!(unix_now() - 3600))),
        ),
        ("not a JWT", Box::new(|_| "not-a-jwt".to_owned())),
    ];
    for (what, forge) in &cases {
        let (reply, jar) = log_in_with_id_token(&app, &hostile, forge.as_ref()).await;
        assert_eq!(reply.status, 302, "{what}: {}", reply.text());
        assert_eq!(
            reply.header("location"),
            Some("/?auth_error=invalid_token"),
            "{what}"
        );
        assert!(!jar.has(SESSION), "{what}: a session was issued");
        assert!(!jar.has(LOGIN), "{what}: the spent login was kept");
        assert_eq!(
            get(&app, "/api/session", Some(&jar.header())).await.json()["loggedIn"],
            false,
            "{what}"
        );
    }
    // The key set was read once, at start: within a minute of that read an
    // unknown kid is refused without reading it again, so forged tokens
    // cannot make tokenjar hammer the provider.
    assert_eq!(hostile.hits("/jwks"), 1);

    // The genuine token through the same steps: the harness can log in.
    let (reply, jar) = log_in_with_id_token(&app, &hostile, &|n| key.sign("k1", &claims(n))).await;
    assert_eq!(reply.status, 302, "{}", reply.text());
    assert_eq!(reply.header("location"), Some("/after"));
    let session = get(&app, "/api/session", Some(&jar.header())).await.json();
    assert_eq!(session["loggedIn"], true, "{session}");
    assert_eq!(session["user"]["sub"], "ada", "{session}");
    assert_eq!(api_calls(&api), 0, "nothing reached the API");
    assert!(app.exit_status().is_none(), "{}", app.logs().join("\n"));
}

/// A provider that stops answering (SPEC §16: bounded timeouts): a token
/// endpoint that never answers, then one that sends a head and no body,
/// each fail the callback with `provider_unavailable` once
/// `upstream.timeout_ms` passes; a discovery that never answers keeps
/// tokenjar up and unready until the provider answers again.
#[actix_web::test]
async fn a_provider_that_stalls_fails_cleanly_and_is_read_once_it_answers() {
    let hostile = HostileProvider::start();
    hostile.set_silent("/.well-known/openid-configuration");
    hostile.set("/jwks", 200, "application/json", USABLE_JWKS);
    let (_api, mut app) = spawn_against_with(&hostile.issuer(), &[("TOKENJAR_UPSTREAM__TIMEOUT_MS", "300")]);
    // Two discovery attempts, each given up after the timeout.
    assert_stays_unready(&mut app, &hostile, "/.well-known/openid-configuration", 2).await;
    let doc = hostile.discovery_naming(&hostile.issuer());
    hostile.set("/.well-known/openid-configuration", 200, "application/json", &doc);
    assert!(wait_ready(&app, READY_WAIT).await, "{}", app.logs().join("\n"));

    for stall in [HostileProvider::set_silent, HostileProvider::set_stalled] {
        stall(&hostile, "/token");
        let mut jar = Jar::default();
        let login = get(&app, "/api/login", None).await;
        jar.keep(&login);
        let state = query_param(login.header("location").unwrap(), "state").unwrap();
        let seen = hostile.hits("/token");
        let callback = format!("/api/callback?code=c&state={state}");
        let reply = get(&app, &callback, Some(&jar.header())).await;
        assert_eq!(reply.status, 302, "{}", reply.text());
        assert_eq!(
            reply.header("location"),
            Some("/?auth_error=provider_unavailable")
        );
        assert!(reply.set_cookie_for(SESSION).is_none_or(|c| c.value.is_empty()));
        assert_eq!(hostile.hits("/token"), seen + 1);
    }
    assert!(app.exit_status().is_none(), "{}", app.logs().join("\n"));
    assert_eq!(app.get_api("/readyz", None).await.status, 200);
}

/// `routes.backchannel_logout` with the stateless cookie store (SPEC §16):
/// 404 for the provider's POST, which needs no CSRF header, and nothing
/// reaches the API.
#[actix_web::test]
async fn the_back_channel_logout_route_is_404_without_a_session_store() {
    let hostile = HostileProvider::start();
    let doc = hostile.discovery_naming(&hostile.issuer());
    hostile.set("/.well-known/openid-configuration", 200, "application/json", &doc);
    hostile.set("/jwks", 200, "application/json", USABLE_JWKS);
    let (api, app) = spawn_against(&hostile.issuer());
    assert!(wait_ready(&app, READY_WAIT).await, "{}", app.logs().join("\n"));
    let form = [("content-type", "application/x-www-form-urlencoded")];
    app.send(
        "POST",
        "/api/backchannel-logout",
        &form,
        "logout_token=eyJhbGciOiJFUzI1NiJ9.e30.c2ln",
    )
    .await
    .assert_error(404, "not_found");
    app.get_api("/api/Backchannel-Logout/", None)
        .await
        .assert_error(404, "not_found");
    assert_eq!(api_calls(&api), 0, "nothing reached the API");
}

/// Back-channel logout from the real provider (SPEC §16, §17): with a
/// session store, the user's logout at the provider (not at tokenjar)
/// makes the provider post a logout token to tokenjar, which ends the
/// stored session: a copy of the cookie is logged out and reaches the API
/// without a token. Forged, missing and replayed-shape tokens get 400,
/// other methods 405.
#[actix_web::test]
async fn a_logout_at_the_provider_ends_the_stored_session_by_back_channel() {
    let env = [("TOKENJAR_SESSION__STORE", "memory")];
    let Some(scene) = Scene::start_tuned(&env, |settings| {
        let callback = settings.redirect_uris[0].clone();
        let origin = callback.trim_end_matches("/api/callback");
        settings.backchannel_logout_uri = Some(format!("{origin}/api/backchannel-logout"));
    })
    .await
    else {
        return;
    };
    let jar = scene.log_in("ada").await;
    let copied = jar.header();
    assert_eq!(scene.get("/api/session", &jar).await.json()["loggedIn"], true);
    scene.get("/api/me", &jar).await;
    assert!(!last_access_token(&scene.api).is_empty());

    // The user logs out at the provider itself.
    scene.log_out_at_provider().await;

    let session = get(&scene.app, "/api/session", Some(&copied)).await;
    assert_eq!(session.json()["loggedIn"], false, "{}", session.text());
    let calls = api_calls(&scene.api);
    let me = get(&scene.app, "/api/me", Some(&copied)).await;
    assert_eq!(me.status, 200, "{}", me.text());
    assert_eq!(api_calls(&scene.api), calls + 1);
    let seen = scene.api.last_request();
    assert!(seen.header_all("auth-token").is_empty(), "{:?}", seen.headers);

    // What else comes to the route.
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let post = |body: &'static str| scene.app.send("POST", "/api/backchannel-logout", &form, body);
    post("logout_token=not.a.jwt")
        .await
        .assert_error(400, "bad_request");
    post("").await.assert_error(400, "bad_request");
    post("logout_token=a&logout_token=b")
        .await
        .assert_error(400, "bad_request");
    scene
        .app
        .get_api("/api/backchannel-logout", None)
        .await
        .assert_error(405, "method_not_allowed");
}

/// The same with Redis and two instances (SPEC §17): a login through one
/// instance is a session on the other, and the provider's back-channel
/// logout, delivered to one, ends it on both.
#[actix_web::test]
async fn a_back_channel_logout_ends_the_session_on_every_instance_sharing_redis() {
    let Some(redis) = tokenjar_e2e::redis::RedisServer::start() else {
        return;
    };
    let url = redis.url();
    let env = [
        ("TOKENJAR_SESSION__STORE", "redis"),
        ("TOKENJAR_SESSION__REDIS_URL", url.as_str()),
    ];
    let Some(scene) = Scene::start_tuned(&env, |settings| {
        let callback = settings.redirect_uris[0].clone();
        let origin = callback.trim_end_matches("/api/callback");
        settings.backchannel_logout_uri = Some(format!("{origin}/api/backchannel-logout"));
    })
    .await
    else {
        return;
    };
    // A second instance: the same settings on a port of its own.
    let mut second_env = oidc_env(scene.provider.issuer(), 0);
    second_env.extend(env.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())));
    let pairs: Vec<(&str, &str)> = second_env.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let second = spawn_app(&scene.api.url("/v1"), &pairs);
    assert!(
        wait_ready(&second, READY_WAIT).await,
        "{}",
        second.logs().join("\n")
    );

    let jar = scene.log_in("ada").await;
    let cookie = jar.header();
    let session = get(&second, "/api/session", Some(&cookie)).await.json();
    assert_eq!(
        session["loggedIn"], true,
        "the other instance knows the session: {session}"
    );
    assert_eq!(session["user"]["sub"], "ada", "{session}");

    scene.log_out_at_provider().await;
    for app in [&scene.app, &second] {
        let session = get(app, "/api/session", Some(&cookie)).await.json();
        assert_eq!(session["loggedIn"], false, "{session}");
    }
    assert!(
        redis.keys().iter().all(|k| !k.contains("session:")),
        "{:?}",
        redis.keys()
    );
}
