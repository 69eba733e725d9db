//! Scale-out (SPEC §9 "Stateless", docs/deploy.md): two tokenjar instances
//! with the same cookie keys behind an nginx round-robin balancer
//! (`tests/nginx/lb.conf.template`) serve one user as one: a login or logout
//! through either is honoured by both, and killing one instance loses no
//! request nginx can retry.
//!
//! Without nginx a test prints `skipped: …` and passes, except under
//! `CI=true`, where it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use awc::http::Method;
use tokenjar_e2e::external::{find_program, programs_or_skip, send_signal};
use tokenjar_e2e::metrics::metric_sum;
use tokenjar_e2e::nginx::Nginx;
use tokenjar_e2e::{spawn_app, RecordingApi, Reply, SetCookie, TestApp, KEY_1, KEY_2};

/// Longest wait for a condition to hold.
const WAIT: Duration = Duration::from_secs(20);

/// How often a waited-for condition is re-checked.
const POLL: Duration = Duration::from_millis(20);

/// The recording API, two tokenjar instances in front of it and nginx in
/// front of them; `None` when nginx is missing (and this is not CI).
struct Cluster {
    api: RecordingApi,
    a: TestApp,
    b: TestApp,
    lb: Nginx,
}

impl Cluster {
    /// Both instances with the same keys (newest first), as docs/deploy.md
    /// asks.
    fn start() -> Option<Self> {
        let keys = format!("{KEY_2},{KEY_1}");
        Self::start_with_keys(&keys, &keys)
    }

    /// Instance A with `keys_a`, B with `keys_b`.
    fn start_with_keys(keys_a: &str, keys_b: &str) -> Option<Self> {
        let found = vec![find_program("nginx", &["/usr/sbin/nginx"])];
        let nginx = programs_or_skip(found, "nginx", "apt-get install nginx")?.remove(0);
        let api = RecordingApi::start();
        let start = |keys: &str| {
            spawn_app(
                &api.url("/v1"),
                &[("TOKENJAR_COOKIE__KEYS", keys), ("TOKENJAR_SERVER__WORKERS", "1")],
            )
        };
        let a = start(keys_a);
        let b = start(keys_b);
        let lb = Nginx::start(&nginx, a.address, b.address);
        Some(Self { api, a, b, lb })
    }

    /// Sends a request through nginx, with `jar`'s cookie if it holds one.
    async fn send(&self, method: &str, path: &str, jar: &Jar, headers: &[(&str, &str)], body: &str) -> Reply {
        let client = awc::Client::builder().timeout(WAIT).finish();
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = client.request(method, self.lb.url(path));
        if let Some(cookie) = jar.header() {
            req = req.insert_header(("cookie", cookie));
        }
        for header in headers {
            req = req.append_header(*header);
        }
        let sent = if body.is_empty() {
            req.send().await
        } else {
            req.send_body(body.to_owned()).await
        };
        let mut res =
            sent.unwrap_or_else(|err| panic!("{path} through nginx: {err}\n{}", self.lb.error_log()));
        let headers = tokenjar_e2e::header_pairs(res.headers());
        let body = res
            .body()
            .await
            .unwrap_or_else(|err| panic!("{path}: body: {err}"));
        Reply {
            status: res.status().as_u16(),
            headers,
            body,
        }
    }

    /// `GET path` through nginx, expecting 200.
    async fn get_ok(&self, path: &str, jar: &Jar) -> Reply {
        let reply = self.send("GET", path, jar, &[], "").await;
        assert_eq!(
            reply.status,
            200,
            "GET {path} through nginx: {}\nnginx error log:\n{}",
            reply.text(),
            self.lb.error_log()
        );
        reply
    }

    /// Logs in through nginx as a browser on the balancer's origin would
    /// (the `Origin` only passes the CSRF check if nginx forwards `Host`).
    async fn login(&self, jar: &mut Jar) {
        let origin = self.lb.origin();
        let reply = self
            .send(
                "POST",
                "/api/login",
                jar,
                &[
                    ("content-type", "application/json"),
                    ("x-csrf", "1"),
                    ("origin", origin.as_str()),
                ],
                r#"{"username":"demo","password":"demo"}"#,
            )
            .await;
        assert_eq!(reply.status, 200, "login through nginx: {}", reply.text());
        jar.apply(&reply);
        assert!(
            jar.header().is_some(),
            "the login set no cookie: {:?}",
            reply.headers
        );
    }

    /// Browses as the user in `jar` for `rounds` rounds of three requests:
    /// `/api/<stem>/<i>/a`, `/api/<stem>/<i>/b` and the session, so that round
    /// robin hands each kind of request to both instances. Each session must
    /// say `loggedIn: logged_in` (`when` qualifies the round in a failure).
    async fn browse(&self, jar: &Jar, stem: &str, rounds: usize, logged_in: bool, when: &str) {
        for i in 0..rounds {
            self.get_ok(&format!("/api/{stem}/{i}/a"), jar).await;
            self.get_ok(&format!("/api/{stem}/{i}/b"), jar).await;
            let session = self.get_ok("/api/session", jar).await.json();
            assert_eq!(session["loggedIn"], logged_in, "session {i}{when}: {session}");
        }
    }

    /// The metric `name` with `labels` (summed over its series) as each
    /// instance counts it.
    async fn counted(&self, name: &str, labels: &[(&str, &str)]) -> (f64, f64) {
        let count = |text: String| metric_sum(&text, name, labels);
        let a = self.a.get_api("/metrics", None).await.text();
        let b = self.b.get_api("/metrics", None).await.text();
        (count(a), count(b))
    }

    /// `tokenjar_requests_total` for `route` as each instance counts it.
    async fn served(&self, route: &str) -> (f64, f64) {
        self.counted("tokenjar_requests_total", &[("route", route)]).await
    }
}

/// The one cookie a browser would keep for the balancer's origin: set by a
/// `Set-Cookie`, removed by one with `Max-Age=0`.
#[derive(Default)]
struct Jar {
    cookie: Option<SetCookie>,
}

impl Jar {
    fn apply(&mut self, reply: &Reply) {
        if let Some(set) = reply.set_cookie_for("auth-token") {
            self.cookie = (set.max_age() != Some(0) && !set.value.is_empty()).then_some(set);
        }
    }

    fn header(&self) -> Option<String> {
        self.cookie.as_ref().map(SetCookie::pair)
    }
}

/// Requests the API received at `/v1/<stem>…`.
fn received(api: &RecordingApi, stem: &str) -> Vec<tokenjar_e2e::Recorded> {
    let prefix = format!("/v1/{stem}");
    api.requests()
        .into_iter()
        .filter(|r| r.target.starts_with(&prefix))
        .collect()
}

#[actix_web::test]
async fn a_login_through_the_balancer_is_honoured_by_both_instances() {
    let Some(cluster) = Cluster::start() else { return };
    let mut jar = Jar::default();
    cluster.login(&mut jar).await;
    let token = cluster.api.last_issued().token;

    let rounds = 6;
    cluster.browse(&jar, "items", rounds, true, "").await;

    let calls = received(&cluster.api, "items/");
    assert_eq!(calls.len(), 2 * rounds, "every call reached the API once");
    for call in &calls {
        assert_eq!(
            call.header("auth-token"),
            Some(token.as_str()),
            "{} reached the API without the token",
            call.target
        );
    }
    let (api_a, api_b) = cluster.served("api").await;
    let (session_a, session_b) = cluster.served("session").await;
    assert!(
        api_a >= 1.0 && api_b >= 1.0 && session_a >= 1.0 && session_b >= 1.0,
        "both instances should have served the user: api {api_a}/{api_b}, session {session_a}/{session_b}\n{}",
        cluster.lb.access_log()
    );
    assert_eq!(
        api_a + api_b,
        2.0 * rounds as f64,
        "API calls counted by the instances"
    );
}

#[actix_web::test]
async fn a_logout_through_the_balancer_is_honoured_by_both_instances() {
    let Some(cluster) = Cluster::start() else { return };
    let mut jar = Jar::default();
    cluster.login(&mut jar).await;
    cluster.get_ok("/api/before/1", &jar).await;
    cluster.get_ok("/api/before/2", &jar).await;
    assert!(received(&cluster.api, "before/")
        .iter()
        .all(|r| r.header("auth-token").is_some()));

    let origin = cluster.lb.origin();
    let reply = cluster
        .send(
            "POST",
            "/api/logout",
            &jar,
            &[("x-csrf", "1"), ("origin", origin.as_str())],
            "",
        )
        .await;
    assert_eq!(reply.status, 200, "logout through nginx: {}", reply.text());
    assert_eq!(reply.json()["loggedIn"], false);
    let deletion = reply
        .set_cookie_for("auth-token")
        .expect("the logout deletes the cookie");
    assert_eq!(deletion.max_age(), Some(0), "{}", deletion.raw);
    jar.apply(&reply);
    assert!(jar.header().is_none(), "the client must have dropped the cookie");

    let (api_a_before, api_b_before) = cluster.served("api").await;
    let (session_a_before, session_b_before) = cluster.served("session").await;
    let rounds = 4;
    cluster
        .browse(&jar, "after", rounds, false, " after the logout")
        .await;
    let after = received(&cluster.api, "after/");
    assert_eq!(after.len(), 2 * rounds);
    for call in &after {
        assert!(
            call.header("auth-token").is_none(),
            "{} carried a token after the logout",
            call.target
        );
    }
    let (api_a, api_b) = cluster.served("api").await;
    let (session_a, session_b) = cluster.served("session").await;
    assert!(
        api_a > api_a_before && api_b > api_b_before,
        "both instances should have served calls after the logout: {api_a}/{api_b}"
    );
    assert!(
        session_a > session_a_before && session_b > session_b_before,
        "both instances should have answered the session after the logout: {session_a}/{session_b}"
    );
}

#[actix_web::test]
async fn killing_one_instance_loses_no_retryable_request() {
    let Some(cluster) = Cluster::start() else { return };
    let mut jar = Jar::default();
    cluster.login(&mut jar).await;
    let victim = cluster.b.address;

    // Before: both instances serve.
    for i in 0..10 {
        cluster.get_ok(&format!("/api/seq/before-{i}"), &jar).await;
    }
    let (a_before, b_before) = cluster.served("api").await;
    assert!(
        a_before >= 1.0 && b_before >= 1.0,
        "round robin: {a_before}/{b_before}"
    );

    // During: two requests held at the API, one on each instance (round
    // robin alternates), when instance B dies. nginx sees B's connection
    // close before any answer and sends that request to A again.
    let held = futures_util::future::join(
        cluster.send("GET", "/api/held/1/gate", &jar, &[], ""),
        cluster.send("GET", "/api/held/2/gate", &jar, &[], ""),
    );
    let kill = async {
        wait_for(
            || received(&cluster.api, "held/").len() == 2,
            "both held requests at the API",
        )
        .await;
        send_signal(cluster.b.pid, "KILL", false);
        wait_for(
            || received(&cluster.api, "held/").len() == 3,
            "nginx to retry B's held request on A",
        )
        .await;
        cluster.api.open_gate();
    };
    let ((first, second), ()) = futures_util::future::join(held, kill).await;
    for reply in [&first, &second] {
        assert_eq!(reply.status, 200, "a held request was lost: {}", reply.text());
    }

    // After: only A is left; every request still succeeds.
    for i in 0..10 {
        cluster.get_ok(&format!("/api/seq/after-{i}"), &jar).await;
    }

    let token = cluster.api.last_issued().token;
    let calls: Vec<_> = received(&cluster.api, "seq/")
        .into_iter()
        .chain(received(&cluster.api, "held/"))
        .collect();
    assert!(
        calls
            .iter()
            .all(|r| r.header("auth-token") == Some(token.as_str())),
        "every call must reach the API with the token"
    );
    let log = cluster.lb.access_log();
    let retried = format!("upstream={victim}, {}", cluster.a.address);
    assert!(
        log.lines()
            .any(|line| line.contains("/api/held/") && line.contains(" 200 ") && line.contains(&retried)),
        "the access log should show a held request retried from B on A:\n{log}"
    );
}

/// The control for the tests above: with different keys the instances do
/// not share sessions, and a browser gets logged out by whichever instance
/// cannot open its cookie (SPEC §5: such a cookie is deleted).
#[actix_web::test]
async fn instances_with_different_keys_log_the_user_out() {
    let Some(cluster) = Cluster::start_with_keys(KEY_1, KEY_2) else {
        return;
    };
    let mut jar = Jar::default();
    cluster.login(&mut jar).await;
    let mut sessions = Vec::new();
    for i in 0..3 {
        let reply = cluster.get_ok(&format!("/api/mixed/{i}"), &jar).await;
        jar.apply(&reply);
        let reply = cluster.get_ok("/api/session", &jar).await;
        jar.apply(&reply);
        sessions.push(reply.json()["loggedIn"].clone());
    }
    let calls = received(&cluster.api, "mixed/");
    assert!(
        calls.iter().any(|r| r.header("auth-token").is_none()),
        "the instance with the other key cannot have passed the token on"
    );
    assert!(
        jar.header().is_none(),
        "the foreign instance should have deleted the cookie"
    );
    assert_eq!(
        sessions.last(),
        Some(&false.into()),
        "logged out in the end: {sessions:?}"
    );
    let (a, b) = cluster.counted("tokenjar_cookies_rejected_total", &[]).await;
    assert!(
        a + b >= 1.0,
        "a foreign cookie should be counted as rejected: {a}/{b}"
    );
}

/// Waits (polling, at most [`WAIT`]) until `done` holds.
async fn wait_for(done: impl Fn() -> bool, what: &str) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "waited {WAIT:?} for {what}");
        actix_rt::time::sleep(POLL).await;
    }
}
