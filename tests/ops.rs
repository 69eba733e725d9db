//! End-to-end tests of the CSRF rule (SPEC §7) and of the operations surface
//! (SPEC §9): probes, metrics and request ids.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use serde_json::json;
use tokenjar_e2e::hostile_api::{HostileApi, Interim};
use tokenjar_e2e::{refused_url, setup_with, spawn_app};

fn is_valid_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Login CSRF: against an API that also takes `GET /login?username=…`, a
/// cross-site page (a link, an image, a form with GET) must not log a
/// victim into the attacker's account. The login route gets the CSRF rules
/// on every method: without the header, from a foreign `Origin` or marked
/// `Sec-Fetch-Site: cross-site`, a GET login is 403 and reaches nothing; the
/// app's own GET login (with the header) still works.
#[actix_web::test]
async fn a_login_by_get_gets_the_csrf_rules_too() {
    let api = HostileApi::start(Interim::default());
    let app = spawn_app(&api.url("/v1"), &[]);
    let path = "/api/login?username=attacker&password=pw";
    let forged: [&[(&str, &str)]; 4] = [
        &[],
        &[
            ("origin", "http://evil.example"),
            ("sec-fetch-site", "cross-site"),
        ],
        &[("x-csrf", "1"), ("origin", "http://evil.example")],
        &[("x-csrf", "1"), ("sec-fetch-site", "cross-site")],
    ];
    for headers in forged {
        for method in ["GET", "HEAD"] {
            let reply = app.send(method, path, headers, Bytes::new()).await;
            assert_eq!(reply.status, 403, "{method} {headers:?}: {}", reply.text());
            assert!(
                reply.set_cookie_for("auth-token").is_none(),
                "{method} {headers:?}"
            );
        }
    }
    assert_eq!(api.requests(), 0, "a forged login reached the API");

    let reply = app.send("GET", path, &[("x-csrf", "1")], Bytes::new()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(reply.set_cookie_for("auth-token").is_some());
    assert!(!reply.leaks("tok-attacker"));
}

#[actix_web::test]
async fn unsafe_methods_without_the_csrf_header_are_403() {
    let (api, app) = setup_with(&[]);
    let cookie = app.login_cookie().await;
    let before = api.requests().len();

    for method in ["POST", "PUT", "PATCH", "DELETE"] {
        let reply = app.send(method, "/api/echo", &[], Bytes::new()).await;
        reply.assert_error(403, "csrf");
    }
    let reply = app
        .send(
            "POST",
            "/api/login",
            &[("content-type", "application/json")],
            r#"{"username":"demo","password":"demo"}"#,
        )
        .await;
    reply.assert_error(403, "csrf");
    assert!(reply.set_cookie_for("auth-token").is_none());

    let reply = app
        .send(
            "POST",
            "/api/logout",
            &[("cookie", cookie.as_str())],
            Bytes::new(),
        )
        .await;
    reply.assert_error(403, "csrf");
    assert!(
        reply.set_cookie_for("auth-token").is_none(),
        "a refused logout must not delete the cookie"
    );
    assert_eq!(
        api.requests().len(),
        before,
        "refused requests must not reach the API"
    );

    // Safe methods need no header.
    for method in ["GET", "HEAD", "OPTIONS"] {
        let reply = app.send(method, "/api/echo", &[], Bytes::new()).await;
        assert_eq!(reply.status, 200, "{method}: {}", reply.text());
    }
}

#[actix_web::test]
async fn cross_site_origins_are_403_even_with_the_header() {
    let (api, app) = setup_with(&[("TOKENJAR_CSRF__ALLOWED_ORIGINS", "https://admin.example")]);
    let own = format!("http://{}", app.address);

    for (origin, fetch_site, allowed) in [
        (Some(own.as_str()), None, true),
        (Some("https://admin.example"), None, true),
        (None, Some("same-origin"), true),
        (Some("http://evil.example"), None, false),
        (Some("null"), None, false),
        (None, Some("cross-site"), false),
    ] {
        let mut headers = vec![("x-csrf", "1")];
        if let Some(origin) = origin {
            headers.push(("origin", origin));
        }
        if let Some(site) = fetch_site {
            headers.push(("sec-fetch-site", site));
        }
        let before = api.requests().len();
        let reply = app.send("POST", "/api/echo", &headers, Bytes::new()).await;
        if allowed {
            assert_eq!(reply.status, 200, "{origin:?} {fetch_site:?}: {}", reply.text());
        } else {
            reply.assert_error(403, "csrf");
            assert_eq!(api.requests().len(), before, "{origin:?} {fetch_site:?}");
        }
    }
}

#[actix_web::test]
async fn an_empty_csrf_header_setting_disables_the_header_check() {
    let (api, app) = setup_with(&[("TOKENJAR_CSRF__HEADER", "")]);

    let reply = app.send("POST", "/api/echo", &[], "x").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(api.last_request().method, "POST");

    // The origin check still applies.
    let reply = app
        .send("POST", "/api/echo", &[("origin", "http://evil.example")], "x")
        .await;
    reply.assert_error(403, "csrf");
}

#[actix_web::test]
async fn healthz_and_readyz() {
    let (_api, app) = setup_with(&[]);
    let reply = app.get_api("/healthz", None).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json(), json!({"status": "ok"}));
    let reply = app.get_api("/readyz", None).await;
    assert_eq!(reply.status, 200, "API up: {}", reply.text());

    let down = spawn_app(&refused_url(), &[]);
    let reply = down.get_api("/healthz", None).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let reply = down.get_api("/readyz", None).await;
    assert_eq!(reply.status, 503, "API down: {}", reply.text());
}

#[actix_web::test]
async fn metrics_count_requests_by_route_and_status() {
    let (_api, app) = setup_with(&[("TOKENJAR_UPSTREAM__TIMEOUT_MS", "300")]);
    let cookie = app.login_cookie().await;
    app.get_api("/api/echo", Some(&cookie)).await;
    app.get_api("/api/echo", Some(&cookie)).await;
    app.session(None).await;
    app.logout(Some(&cookie)).await;
    app.send("POST", "/api/echo", &[], Bytes::new()).await; // csrf refusal
    app.get_api("/api/session", Some("auth-token=garbage")).await;
    app.get_api("/api/hang", None)
        .await
        .assert_error(504, "upstream_timeout");

    let reply = app.get_api("/metrics", None).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let text = reply.text();
    let sample = |name: &str, labels: &[&str]| -> Option<f64> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.starts_with(name) && labels.iter().all(|label| l.contains(label)))
            .find_map(|l| l.rsplit(' ').next()?.parse().ok())
    };
    assert!(
        sample("tokenjar_requests_total{", &["route=\"api\"", "status=\"200\""]).is_some_and(|v| v >= 2.0),
        "two proxied 200s should be counted:\n{text}"
    );
    assert!(
        sample(
            "tokenjar_requests_total{",
            &["route=\"session\"", "status=\"200\""]
        )
        .is_some(),
        "{text}"
    );
    assert!(
        sample("tokenjar_requests_total{", &["route=\"login\""]).is_some(),
        "{text}"
    );
    assert!(
        sample("tokenjar_logins_total{", &[]).is_some_and(|v| v >= 1.0),
        "{text}"
    );
    assert!(
        sample("tokenjar_logouts_total", &[]).is_some_and(|v| v >= 1.0),
        "{text}"
    );
    assert!(
        sample("tokenjar_csrf_refused_total", &[]).is_some_and(|v| v >= 1.0),
        "{text}"
    );
    assert!(
        sample("tokenjar_cookies_rejected_total", &[]).is_some_and(|v| v >= 1.0),
        "{text}"
    );
    assert!(text.contains("tokenjar_request_duration_seconds"), "{text}");
    assert!(
        sample("tokenjar_upstream_errors_total{", &[]).is_some_and(|v| v >= 1.0),
        "the upstream timeout should be counted:\n{text}"
    );
}

#[actix_web::test]
async fn request_ids_go_upstream_and_back() {
    let (api, app) = setup_with(&[]);

    let reply = app.get_api("/api/echo", None).await;
    let id = reply
        .header("x-request-id")
        .expect("a request id on the response");
    assert!(is_valid_request_id(id), "{id:?}");
    assert_eq!(api.last_request().header_all("x-request-id"), vec![id]);

    let reply = app
        .send(
            "GET",
            "/api/echo",
            &[("x-request-id", "abc.DEF_12-3")],
            Bytes::new(),
        )
        .await;
    assert_eq!(reply.header("x-request-id"), Some("abc.DEF_12-3"));
    assert_eq!(
        api.last_request().header_all("x-request-id"),
        vec!["abc.DEF_12-3"]
    );

    let too_long = "a".repeat(129);
    for bad in ["bad id!", "<script>", too_long.as_str()] {
        let reply = app
            .send("GET", "/api/echo", &[("x-request-id", bad)], Bytes::new())
            .await;
        let id = reply.header("x-request-id").expect("a request id").to_owned();
        assert_ne!(id, bad, "an invalid client id must be replaced");
        assert!(is_valid_request_id(&id), "{id:?}");
        assert_eq!(api.last_request().header_all("x-request-id"), vec![id.as_str()]);
    }
}

#[actix_web::test]
async fn an_error_line_carries_the_request_id_even_at_warn_level() {
    // With the adapter at warn the per-request (info) span is filtered out;
    // the error line itself must still name the request. The binary's own
    // target stays at info so the start-up line can be read.
    let app = spawn_app(&refused_url(), &[("RUST_LOG", "warn,tokenjar=info")]);
    let reply = app
        .send(
            "GET",
            "/api/x",
            &[("x-request-id", "warn-level-id-7")],
            Bytes::new(),
        )
        .await;
    reply.assert_error(502, "upstream_unavailable");
    assert!(
        app.wait_for_log("warn-level-id-7", std::time::Duration::from_secs(5)),
        "no log line names the request id: {:?}",
        app.logs()
    );
    let line = app
        .logs()
        .into_iter()
        .find(|l| l.contains("warn-level-id-7"))
        .unwrap();
    assert!(line.contains("upstream_unavailable"), "{line}");
}
