//! Token refresh with two tokenjar instances behind nginx round robin (SPEC
//! §14, docs/behaviour.md): the single flight and the reuse window are per
//! process, so the documented limitation until sessions get a shared store
//! is shown exactly — within one instance a late request with the old
//! cookie is handed the kept result, but the other instance knows nothing of
//! that refresh, spends the old refresh token again, and an API that
//! rotates refresh tokens ends the whole login.
//!
//! Without nginx the test prints `skipped: …` and passes, except under
//! `CI=true`, where it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokenjar_e2e::external::{find_program, programs_or_skip};
use tokenjar_e2e::metrics::metric_sum;
use tokenjar_e2e::nginx::Nginx;
use tokenjar_e2e::refresh_api::{assert_no_tokens, RefreshApi, REFRESH_ENV};
use tokenjar_e2e::{raw_request, spawn_app, Reply, TestApp};

/// Longest wait for a line in nginx's access log.
const WAIT: Duration = Duration::from_secs(20);

/// How often the access log is read again.
const POLL: Duration = Duration::from_millis(20);

/// The refresh API, two tokenjar instances with the same cookie key in
/// front of it, nginx in front of them.
struct Pair {
    api: RefreshApi,
    a: TestApp,
    b: TestApp,
    lb: Nginx,
}

impl Pair {
    /// `None` when nginx is missing (and this is not CI). Logins issue
    /// access tokens that are due at once, refreshes ones good for 300 s.
    fn start() -> Option<Self> {
        let found = vec![find_program("nginx", &["/usr/sbin/nginx"])];
        let nginx = programs_or_skip(found, "nginx", "apt-get install nginx")?.remove(0);
        let api = RefreshApi::start(0, 300);
        let mut env = REFRESH_ENV.to_vec();
        // One worker each: the single flight is per process anyway, and one
        // worker keeps each instance a single table of refreshes.
        env.push(("TOKENJAR_SERVER__WORKERS", "1"));
        // spawn_app gives both the same cookie key (KEY_1), as docs/deploy.md
        // asks of instances behind one balancer.
        let a = spawn_app(&api.url(""), &env);
        let b = spawn_app(&api.url(""), &env);
        let lb = Nginx::start(&nginx, a.address, b.address);
        Some(Self { api, a, b, lb })
    }

    /// Sends `head` (request line and headers, without the final blank
    /// line) and `body` through nginx as a browser would, on a fresh
    /// connection: a GET without `Content-Length`. Asserts no token reached
    /// the browser.
    fn send(&self, head: &str, body: &str) -> Reply {
        let host = self.lb.addr();
        let length = if body.is_empty() {
            String::new()
        } else {
            format!("Content-Length: {}\r\n", body.len())
        };
        let request = format!("{head}\r\nHost: {host}\r\nConnection: close\r\n{length}\r\n{body}");
        let reply = raw_request(host, request.as_bytes());
        assert_no_tokens(&reply, &self.api, head);
        reply
    }

    /// `GET path` through nginx, with `cookie` if given.
    fn get(&self, path: &str, cookie: Option<&str>) -> Reply {
        let cookie = cookie.map(|c| format!("\r\nCookie: {c}")).unwrap_or_default();
        self.send(&format!("GET {path} HTTP/1.1{cookie}"), "")
    }

    /// Logs in through nginx from the balancer's origin; the cookie.
    fn login(&self) -> String {
        let origin = self.lb.origin();
        let reply = self.send(
            &format!(
                "POST /api/login HTTP/1.1\r\nOrigin: {origin}\r\nContent-Type: application/json\r\nx-csrf: 1"
            ),
            r#"{"username":"demo","password":"demo"}"#,
        );
        assert_eq!(reply.status, 200, "login through nginx: {}", reply.text());
        live_cookie(&reply, "login")
    }

    /// The instance nginx sent `GET path` to (by its access log, waiting for
    /// the line: nginx writes it once the request is done).
    fn served_by(&self, path: &str) -> &TestApp {
        let wanted = format!("GET {path} ");
        let deadline = Instant::now() + WAIT;
        let upstream: SocketAddr = loop {
            let log = self.lb.access_log();
            let found = log.lines().find(|l| l.starts_with(&wanted)).and_then(|line| {
                let at = line.find("upstream=")? + "upstream=".len();
                line[at..].split_whitespace().next()?.parse().ok()
            });
            if let Some(upstream) = found {
                break upstream;
            }
            assert!(Instant::now() < deadline, "no access log line for {path}:\n{log}");
            std::thread::sleep(POLL);
        };
        [&self.a, &self.b]
            .into_iter()
            .find(|app| app.address.port() == upstream.port())
            .unwrap_or_else(|| panic!("{path} went to {upstream}, neither instance"))
    }

    /// `tokenjar_refreshes_total{result}` as instance `app` counts it.
    fn refreshes(app: &TestApp, result: &str) -> f64 {
        let text = app
            .raw("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .text();
        metric_sum(&text, "tokenjar_refreshes_total", &[("result", result)])
    }
}

/// The `Cookie` header value of the live auth cookie `reply` sets.
fn live_cookie(reply: &Reply, context: &str) -> String {
    let set = reply
        .set_cookie_for("auth-token")
        .unwrap_or_else(|| panic!("{context}: no auth-token cookie set: {:?}", reply.headers));
    assert_ne!(
        set.max_age(),
        Some(0),
        "{context}: the cookie was deleted: {}",
        set.raw
    );
    set.pair()
}

/// Asserts 401 `session_expired` and the auth cookie deleted.
fn assert_session_ended(reply: &Reply, context: &str) {
    reply.assert_error(401, "session_expired");
    let set = reply
        .set_cookie_for("auth-token")
        .unwrap_or_else(|| panic!("{context}: the cookie was not deleted: {:?}", reply.headers));
    assert_eq!(set.max_age(), Some(0), "{context}: {}", set.raw);
}

#[test]
fn the_reuse_window_is_per_instance_so_the_other_instance_ends_the_login() {
    let Some(pair) = Pair::start() else { return };
    let old = pair.login();

    // The first request after the expiry refreshes, on whichever instance
    // nginx picks: call it X.
    let reply = pair.get("/api/first", Some(&old));
    assert_eq!(reply.status, 200, "first request: {}", reply.text());
    let renewed = live_cookie(&reply, "first request");
    assert_eq!(pair.api.refresh_calls(), 1);
    let x = pair.served_by("/api/first");

    // Round robin: a request that needs no session goes to the other
    // instance, so the next old-cookie request is X's again.
    let filler = pair.get("/api/session", None);
    assert_eq!(filler.status, 200, "{}", filler.text());
    let reply = pair.get("/api/again-on-x", Some(&old));
    assert_eq!(
        pair.served_by("/api/again-on-x").pid,
        x.pid,
        "round robin should have sent the second old-cookie request to the same instance"
    );
    // Within one instance the reuse window works: X hands over its kept
    // result without calling the API.
    assert_eq!(reply.status, 200, "old cookie on X: {}", reply.text());
    live_cookie(&reply, "old cookie on X");
    assert_eq!(pair.api.refresh_calls(), 1, "X reused its refresh");
    assert_eq!(Pair::refreshes(x, "ok"), 1.0);
    assert_eq!(Pair::refreshes(x, "reused"), 1.0);

    // The next one goes to the other instance, Y, which never saw that
    // refresh: it spends the old refresh token again, the API reads a
    // replay as theft and revokes the login, and the session is over.
    let reply = pair.get("/api/on-y", Some(&old));
    let y = pair.served_by("/api/on-y");
    assert_ne!(
        y.pid, x.pid,
        "round robin should have sent this one to the other instance"
    );
    assert_session_ended(&reply, "old cookie on the other instance");
    assert_eq!(pair.api.refresh_calls(), 2);
    assert_eq!(
        pair.api.replays(),
        1,
        "the other instance replayed the spent refresh token"
    );
    assert!(pair.api.is_revoked(&pair.api.last_access()));
    assert_eq!(Pair::refreshes(y, "refused"), 1.0);
    assert_eq!(Pair::refreshes(y, "ok") + Pair::refreshes(y, "reused"), 0.0);

    // And the browser's newest cookie (from X's refresh) is no good either,
    // whichever instance gets it: the whole family was revoked.
    let reply = pair.get("/api/newest", Some(&renewed));
    assert_session_ended(&reply, "the newest cookie after the replay");
}
