//! In-process tests of the actix adapter: `Application` on port 0 in front
//! of the demo API, in this test's own process, so that a change to the
//! server or the operator endpoints is checked in milliseconds without
//! building the binary. The end-to-end suite (`tests/` at the top) runs the
//! binary and its configuration; these check only what the adapter adds to
//! the domain's rules: listeners, operator endpoints, pages, cookies over
//! real HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::dev::ServerHandle;
use bytes::Bytes;
use serde_json::{json, Value};
use tokenjar_adapters_actix::{
    AppSettings, Application, DemoApiServer, Frontend, OpsSettings, ServerSettings, DEMO_PAGE,
};
use tokenjar_domain::demo::DemoApi;
use tokenjar_domain::memory::SeededRandom;
use tokenjar_domain::{
    CookieJar, CookieKeys, CookiePolicy, CsrfRules, Forwarding, LoginRules, Routes, Rules, TokenRules,
    UpstreamBase,
};

/// The auth cookie's name: without `__Host-`, which would require `Secure`
/// and so HTTPS (as `tokenjar demo` does on loopback).
const COOKIE: &str = "auth-token";

/// The rules `tokenjar demo` runs with (crates/bin/src/settings.rs): the
/// demo API's token conventions, a cookie that works on plain http, and
/// the default CSRF header and forwarding rules.
fn rules(upstream_url: &str) -> Arc<Rules> {
    Arc::new(Rules {
        routes: Routes::new("/api", "/api/login", "/api/logout", "/api/session").unwrap(),
        upstream: UpstreamBase::parse(upstream_url).unwrap(),
        token: TokenRules::new(DemoApi::TOKEN_HEADER, "").unwrap(),
        login: LoginRules::new(DemoApi::TOKEN_POINTER).unwrap(),
        cookies: CookieJar::new(
            CookiePolicy {
                name: COOKIE.to_owned(),
                secure: false,
                ..CookiePolicy::default()
            },
            CookieKeys::generate(&SeededRandom::new(7)).unwrap(),
        ),
        csrf: CsrfRules::default(),
        forwarding: Forwarding::default(),
        refresh: None,
        oidc: None,
        store: None,
    })
}

/// The demo API on a free loopback port, running in this test's runtime.
struct Api {
    url: String,
    handle: ServerHandle,
}

impl Api {
    fn start() -> Self {
        let api = DemoApiServer::bind().unwrap();
        let url = api.url();
        let handle = api.handle();
        actix_rt::spawn(api.run());
        Self { url, handle }
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        // The command goes out at once; waiting for the workers to end is
        // not this test's business.
        drop(self.handle.stop(false));
    }
}

/// How the application under test is set up besides its upstream.
#[derive(Default)]
struct Options {
    /// A separate operator listener on a free loopback port.
    ops_listener: bool,
    frontend: Frontend,
}

/// A running tokenjar and one client for it (awc is not `Send`: one per
/// test, on the test's thread).
struct TestApp {
    url: String,
    ops_url: Option<String>,
    client: awc::Client,
    handle: ServerHandle,
}

/// tokenjar in front of `upstream_url` with the default options.
fn spawn_app(upstream_url: &str) -> TestApp {
    spawn_app_with(upstream_url, Options::default())
}

fn spawn_app_with(upstream_url: &str, options: Options) -> TestApp {
    let settings = AppSettings {
        server: ServerSettings {
            port: 0,
            // One worker is plenty for one client, and spares the shared
            // machine a thread per core per test.
            workers: 1,
            ..ServerSettings::default()
        },
        ops: OpsSettings {
            listen: options
                .ops_listener
                .then(|| SocketAddr::from(([127, 0, 0, 1], 0))),
            ..OpsSettings::default()
        },
        frontend: options.frontend,
        ..AppSettings::default()
    };
    let app = Application::build(&settings, rules(upstream_url)).unwrap();
    // The listeners are bound by `build`: connections wait in the backlog
    // until the server accepts, so there is nothing to wait for here.
    let test_app = TestApp {
        url: app.url(),
        ops_url: app.ops_url(),
        client: awc::Client::default(),
        handle: app.handle(),
    };
    actix_rt::spawn(app.run_until_stopped());
    test_app
}

impl Drop for TestApp {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

/// A response, read whole.
struct Reply {
    status: u16,
    headers: awc::http::header::HeaderMap,
    body: Bytes,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        assert!(
            self.header("content-type")
                .is_some_and(|t| t.starts_with("application/json")),
            "not JSON: {:?} {}",
            self.header("content-type"),
            self.text()
        );
        serde_json::from_slice(&self.body).unwrap()
    }

    /// Asserts a SPEC §8 error: this status and `{"error": code, ..}`.
    fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{}", self.text());
        assert_eq!(self.json()["error"], code, "{}", self.text());
    }

    /// `name=value` of the auth cookie this response sets, if it does.
    fn auth_cookie(&self) -> Option<String> {
        self.headers
            .get_all("set-cookie")
            .filter_map(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or_default().trim().to_owned())
            .find(|pair| pair.starts_with(&format!("{COOKIE}=")))
    }
}

impl TestApp {
    async fn send(
        &self,
        base: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Reply {
        let method = awc::http::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.client.request(method, format!("{base}{path}"));
        for &pair in headers {
            request = request.insert_header(pair);
        }
        let mut response = request.send_body(body).await.unwrap();
        let body = response.body().limit(1 << 20).await.unwrap();
        Reply {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body,
        }
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> Reply {
        let cookie: Vec<(&str, &str)> = cookie.map(|c| ("cookie", c)).into_iter().collect();
        self.send(&self.url, "GET", path, &cookie, Bytes::new()).await
    }

    /// A GET on the operator listener.
    async fn get_ops(&self, path: &str) -> Reply {
        let ops = self.ops_url.clone().expect("no operator listener");
        self.send(&ops, "GET", path, &[], Bytes::new()).await
    }

    async fn health(&self) -> Reply {
        self.get("/healthz", None).await
    }

    async fn ready(&self) -> Reply {
        self.get("/readyz", None).await
    }

    async fn metrics(&self) -> Reply {
        self.get("/metrics", None).await
    }

    async fn session(&self, cookie: Option<&str>) -> Reply {
        self.get("/api/session", cookie).await
    }

    /// A login as the app's own page sends it (with the CSRF header).
    async fn login(&self, username: &str, password: &str) -> Reply {
        let body = json!({ "username": username, "password": password }).to_string();
        self.send(
            &self.url,
            "POST",
            "/api/login",
            &[("content-type", "application/json"), ("x-csrf", "1")],
            Bytes::from(body),
        )
        .await
    }

    async fn me(&self, cookie: Option<&str>) -> Reply {
        self.get("/api/me", cookie).await
    }
}

/// An upstream URL on loopback where nothing listens.
fn refused_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    url
}

#[actix_rt::test]
async fn healthz_is_200_json() {
    let app = spawn_app(&refused_url());
    let reply = app.health().await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json(), json!({ "status": "ok" }));
}

#[actix_rt::test]
async fn readyz_is_200_when_the_api_answers() {
    let api = Api::start();
    let app = spawn_app(&api.url);
    let reply = app.ready().await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json(), json!({ "status": "ready" }));
}

#[actix_rt::test]
async fn readyz_is_503_upstream_unavailable_when_the_api_is_down() {
    let app = spawn_app(&refused_url());
    app.ready().await.assert_error(503, "upstream_unavailable");
    // Healthy all the same: the process runs, only the API is missing.
    assert_eq!(app.health().await.status, 200);
}

/// `/metrics` is Prometheus text that counts the requests served.
#[actix_rt::test]
async fn metrics_is_prometheus_text_counting_requests() {
    let app = spawn_app(&refused_url());
    assert_eq!(app.health().await.status, 200);
    let reply = app.metrics().await;
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain")),
        "{:?}",
        reply.header("content-type")
    );
    let text = reply.text();
    let counted = text
        .lines()
        .any(|l| l.starts_with("tokenjar_requests_total{") && l.contains("status=\"200\""));
    assert!(counted, "the /healthz request is not counted:\n{text}");
}

#[actix_rt::test]
async fn the_session_without_a_cookie_is_logged_out() {
    let api = Api::start();
    let app = spawn_app(&api.url);
    let reply = app.session(None).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json(), json!({ "loggedIn": false }));
    assert!(reply.auth_cookie().is_none());
}

/// The whole point over real HTTP: a login sets an HttpOnly cookie (not
/// `Secure` here, so plain http keeps it), and with it the API answers to
/// the token it issued; the token itself never reaches the browser.
#[actix_rt::test]
async fn a_login_sets_a_cookie_that_opens_the_api() {
    let api = Api::start();
    let app = spawn_app(&api.url);
    assert_eq!(app.me(None).await.status, 401);

    let login = app.login("demo", "demo").await;
    assert_eq!(login.status, 200, "{}", login.text());
    let set_cookie = login.header("set-cookie").unwrap().to_owned();
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    assert!(!set_cookie.contains("Secure"), "{set_cookie}");
    assert!(
        login.json().get("authToken").is_none(),
        "the token reached the browser: {}",
        login.text()
    );
    let cookie = login.auth_cookie().unwrap();

    let me = app.me(Some(&cookie)).await;
    assert_eq!(me.status, 200, "{}", me.text());
    assert_eq!(me.json(), json!({ "name": "demo" }));
    assert_eq!(app.session(Some(&cookie)).await.json()["loggedIn"], true);
}

#[actix_rt::test]
async fn a_failed_login_sets_no_cookie() {
    let api = Api::start();
    let app = spawn_app(&api.url);
    let reply = app.login("demo", "wrong").await;
    assert_eq!(reply.status, 401, "{}", reply.text());
    assert!(reply.auth_cookie().is_none());
}

/// Requests reach the router as the client sent them: a dot segment,
/// plain or percent-encoded, is refused before anything is forwarded.
#[actix_rt::test]
async fn a_dot_segment_path_is_400_bad_request() {
    let api = Api::start();
    let app = spawn_app(&api.url);
    for path in ["/api/../admin", "/api/%2e%2e/admin", "/api/me/./x"] {
        let reply = app.get(path, None).await;
        assert_eq!(reply.status, 400, "{path}: {}", reply.text());
        assert_eq!(reply.json()["error"], "bad_request", "{path}");
    }
}

/// With `ops.listen`, the operator listener serves `/metrics` and the
/// probes and nothing else, and the main listener no longer has
/// `/metrics`: it can be left open to the world while metrics are not.
#[actix_rt::test]
async fn the_operator_listener_serves_metrics_and_nothing_else() {
    let api = Api::start();
    let app = spawn_app_with(
        &api.url,
        Options {
            ops_listener: true,
            ..Options::default()
        },
    );
    assert_ne!(app.ops_url.as_deref(), Some(app.url.as_str()));
    // A request on the main listener, for the operator listener to count.
    assert_eq!(app.session(None).await.status, 200);

    let metrics = app.get_ops("/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .text()
            .lines()
            .any(|l| l.starts_with("tokenjar_requests_total{") && l.contains("route=\"session\"")),
        "{}",
        metrics.text()
    );
    assert_eq!(app.get_ops("/healthz").await.status, 200);
    for path in ["/", "/api/session", "/api/me", "/metrics/x"] {
        app.get_ops(path).await.assert_error(404, "not_found");
    }

    app.metrics().await.assert_error(404, "not_found");
}

#[actix_rt::test]
async fn the_built_in_page_is_served_at_the_root_only() {
    let api = Api::start();
    let app = spawn_app_with(
        &api.url,
        Options {
            frontend: Frontend::Page(DEMO_PAGE.into()),
            ..Options::default()
        },
    );
    let page = app.get("/", None).await;
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .is_some_and(|t| t.starts_with("text/html")),
        "{:?}",
        page.header("content-type")
    );
    assert_eq!(page.body, DEMO_PAGE.as_bytes());
    app.get("/other", None).await.assert_error(404, "not_found");
    // The API routes are still the API's.
    assert_eq!(app.session(None).await.json(), json!({ "loggedIn": false }));
}

/// Without a page to serve, a path outside the API prefix is 404.
#[actix_rt::test]
async fn without_a_frontend_paths_outside_the_api_are_404() {
    let app = spawn_app(&refused_url());
    app.get("/", None).await.assert_error(404, "not_found");
}
