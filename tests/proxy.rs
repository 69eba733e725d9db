//! End-to-end tests of tokenjar's API proxy (SPEC §3) and of upstream failures
//! (SPEC §8): the real binary in front of a recording API on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use tokenjar_e2e::{refused_url, setup, setup_with, spawn_app, RawUpstream, RecordingApi};

/// A raw GET with a `Host` header and `Connection: close` (unless the extra
/// headers bring their own `Host` or `Connection`).
fn raw_get(path: &str, headers: &[&str]) -> String {
    let mut req = format!("GET {path} HTTP/1.1\r\n");
    let has = |name: &str| {
        headers.iter().any(|h| {
            h.split(':')
                .next()
                .is_some_and(|n| n.trim().eq_ignore_ascii_case(name))
        })
    };
    if !has("host") {
        req.push_str("Host: 127.0.0.1\r\n");
    }
    if !has("connection") {
        req.push_str("Connection: close\r\n");
    }
    for header in headers {
        req.push_str(header);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req
}

#[actix_web::test]
async fn path_and_query_are_appended_to_the_upstream_base_path() {
    let (api, app) = setup();

    let reply = app.get_api("/api/users/7?x=1", None).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(api.last_request().target, "/v1/users/7?x=1");
    assert_eq!(api.last_request().method, "GET");
    // The API's own body and headers come back.
    assert_eq!(reply.json()["target"], "/v1/users/7?x=1");
    assert_eq!(reply.header("x-upstream"), Some("yes"));

    // Percent-encoding in path and query is kept as sent, not re-encoded.
    let reply = app.get_api("/api/files/a%20b.txt?q=a%20b&r=%C3%A9", None).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(api.last_request().target, "/v1/files/a%20b.txt?q=a%20b&r=%C3%A9");
}

#[actix_web::test]
async fn the_prefix_itself_maps_to_the_upstream_base() {
    let (api, app) = setup();

    let reply = app.get_api("/api", None).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(api.last_request().target, "/v1");

    let reply = app.get_api("/api?x=1", None).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(api.last_request().target, "/v1?x=1");

    let reply = app.get_api("/api/", None).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(api.last_request().target, "/v1/");
}

#[actix_web::test]
async fn an_upstream_without_base_path_gets_the_stripped_path() {
    let api = RecordingApi::start();
    let app = spawn_app(&api.url(""), &[]);

    let reply = app.get_api("/api/users/7?x=1", None).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(api.last_request().target, "/users/7?x=1");
}

#[actix_web::test]
async fn paths_outside_the_prefix_are_not_found_and_not_forwarded() {
    let (api, app) = setup();

    for path in ["/apix", "/apix/users", "/", "/other/api/x"] {
        let reply = app.get_api(path, None).await;
        reply.assert_error(404, "not_found");
    }
    assert!(
        api.requests().is_empty(),
        "the API must see nothing: {:?}",
        api.requests()
    );
}

#[actix_web::test]
async fn every_method_is_forwarded() {
    let (api, app) = setup();

    for method in ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"] {
        let unsafe_method = !matches!(method, "GET" | "HEAD" | "OPTIONS");
        let body = if matches!(method, "POST" | "PUT" | "PATCH") {
            format!(r#"{{"method":"{method}"}}"#)
        } else {
            String::new()
        };
        let mut headers = vec![("content-type", "application/json")];
        if unsafe_method {
            headers.push(("x-csrf", "1"));
        }
        let before = api.requests().len();
        let reply = app
            .send(method, "/api/things/1", &headers, Bytes::from(body.clone()))
            .await;
        assert_eq!(reply.status, 200, "{method}: {}", reply.text());
        let requests = api.requests();
        assert_eq!(
            requests.len(),
            before + 1,
            "{method}: the API should get exactly one request"
        );
        let seen = requests.last().unwrap();
        assert_eq!(seen.method, method);
        assert_eq!(seen.target, "/v1/things/1", "{method}");
        assert_eq!(
            String::from_utf8_lossy(&seen.body),
            body,
            "{method}: the body must reach the API unchanged"
        );
        assert_eq!(reply.header("x-upstream"), Some("yes"), "{method}");
        if method == "HEAD" {
            assert!(reply.body.is_empty(), "HEAD must have no body");
        } else {
            assert_eq!(reply.json()["method"], method);
        }
    }
}

#[actix_web::test]
async fn the_api_status_and_body_come_back_as_they_are() {
    let (api, app) = setup();

    for status in [201u16, 204, 404, 418, 500, 503] {
        let reply = app.get_api(&format!("/api/status/{status}"), None).await;
        assert_eq!(reply.status, status, "{}", reply.text());
        assert_eq!(reply.header("x-upstream"), Some("yes"));
        if status != 204 {
            // The API's body, not a tokenjar error.
            assert_eq!(reply.json(), serde_json::json!({"status": status}));
        }
    }
    assert_eq!(api.requests().len(), 6);
}

#[actix_web::test]
async fn the_browser_cookie_header_is_not_forwarded() {
    let (api, app) = setup();
    let auth = app.login_cookie().await;
    let token = api.last_issued().token;

    let cookie = format!("other=1; {auth}");
    let reply = app.get_api("/api/echo", Some(&cookie)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = api.last_request();
    assert!(
        seen.header_all("cookie").is_empty(),
        "the API must not get the browser's Cookie header: {:?}",
        seen.headers
    );
    // The auth cookie was still found among the others.
    assert_eq!(seen.header_all("auth-token"), vec![token.as_str()]);

    // Without the auth cookie, no Cookie header either.
    let reply = app.get_api("/api/echo", Some("other=1; theme=dark")).await;
    assert_eq!(reply.status, 200);
    assert!(api.last_request().header_all("cookie").is_empty());
    assert!(api.last_request().header_all("auth-token").is_empty());
}

#[actix_web::test]
async fn the_token_reaches_the_api_in_the_default_header() {
    let (api, app) = setup();
    let cookie = app.login_cookie().await;
    let token = api.last_issued().token;

    let reply = app.get_api("/api/echo", Some(&cookie)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = api.last_request();
    assert_eq!(seen.header_all("auth-token"), vec![token.as_str()]);
    assert!(seen.header_all("authorization").is_empty());
}

#[actix_web::test]
async fn the_upstream_header_and_scheme_are_configurable() {
    let (api, app) = setup_with(&[
        ("TOKENJAR_TOKEN__UPSTREAM_HEADER", "authorization"),
        ("TOKENJAR_TOKEN__UPSTREAM_SCHEME", "Bearer"),
    ]);
    let cookie = app.login_cookie().await;
    let token = api.last_issued().token;

    let reply = app.get_api("/api/echo", Some(&cookie)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = api.last_request();
    let expected = format!("Bearer {token}");
    assert_eq!(seen.header_all("authorization"), vec![expected.as_str()]);
    assert!(seen.header_all("auth-token").is_empty());

    // A client-sent Authorization is replaced by the cookie's token...
    let headers = [("cookie", cookie.as_str()), ("authorization", "Bearer forged")];
    app.send("GET", "/api/echo", &headers, Bytes::new()).await;
    assert_eq!(
        api.last_request().header_all("authorization"),
        vec![expected.as_str()]
    );
    // ...and removed when there is no cookie.
    let headers = [("authorization", "Bearer forged")];
    app.send("GET", "/api/echo", &headers, Bytes::new()).await;
    assert!(
        api.last_request().header_all("authorization").is_empty(),
        "{:?}",
        api.last_request().headers
    );
}

#[actix_web::test]
async fn a_client_sent_token_header_is_removed() {
    let (api, app) = setup();

    let reply = app
        .send("GET", "/api/echo", &[("auth-token", "forged")], Bytes::new())
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(
        api.last_request().header_all("auth-token").is_empty(),
        "a client's own auth-token header must not reach the API: {:?}",
        api.last_request().headers
    );

    let cookie = app.login_cookie().await;
    let token = api.last_issued().token;
    let headers = [
        ("auth-token", "forged"),
        ("cookie", cookie.as_str()),
        ("Auth-Token", "forged-again"),
    ];
    let reply = app.send("GET", "/api/echo", &headers, Bytes::new()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        api.last_request().header_all("auth-token"),
        vec![token.as_str()],
        "only the cookie's token may reach the API"
    );
}

/// Spellings of the token header that servers mapping headers to variables
/// (CGI, WSGI, Rack, PHP) read as the same header, the client's own
/// `Authorization`, and the headers of `token.drop_client_headers` never
/// reach the API: a raw token is useless through tokenjar without the
/// sealed cookie.
#[test]
fn headers_that_could_carry_a_clients_own_token_never_reach_the_api() {
    let forged = [
        "auth_token: forged-1",
        "AUTH_TOKEN: forged-2",
        "Auth-Token: forged-3",
        "Authorization: Bearer forged-4",
        "X-Api-Key: forged-5",
        "X_API_KEY: forged-6",
        "X-Kept: kept",
    ];
    let (api, app) = setup();
    let reply = app.raw(&raw_get("/api/echo", &forged));
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = api.last_request();
    for name in ["auth-token", "auth_token", "authorization"] {
        assert!(
            seen.header_all(name).is_empty(),
            "{name} reached the API: {:?}",
            seen.headers
        );
    }
    assert!(
        !seen.headers_contain("forged-1") && !seen.headers_contain("forged-4"),
        "{:?}",
        seen.headers
    );
    assert_eq!(seen.header("x-kept"), Some("kept"));
    // Not listed by default: an API key header is the operator's to name.
    assert_eq!(seen.header("x-api-key"), Some("forged-5"));

    let (api, app) = setup_with(&[("TOKENJAR_TOKEN__DROP_CLIENT_HEADERS", "authorization,x-api-key")]);
    let reply = app.raw(&raw_get("/api/echo", &forged));
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = api.last_request();
    for n in 1..=6 {
        let value = format!("forged-{n}");
        assert!(
            !seen.headers_contain(&value),
            "{value} reached the API: {:?}",
            seen.headers
        );
    }
    assert_eq!(seen.header("x-kept"), Some("kept"));
}

#[test]
fn hop_by_hop_request_headers_are_not_forwarded() {
    let (api, app) = setup();

    let reply = app.raw(&raw_get(
        "/api/echo",
        &[
            "Connection: keep-alive, X-Foo",
            "X-Foo: 1",
            "Keep-Alive: timeout=5",
            "TE: trailers",
            "Proxy-Connection: keep-alive",
            "Upgrade: example/1",
            "X-Kept: yes",
        ],
    ));
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = api.last_request();
    for name in ["x-foo", "keep-alive", "te", "proxy-connection", "upgrade"] {
        assert!(
            seen.header_all(name).is_empty(),
            "hop-by-hop header {name} reached the API: {:?}",
            seen.headers
        );
    }
    for value in seen.header_all("connection") {
        assert!(
            !value.to_ascii_lowercase().contains("x-foo"),
            "the client's Connection header reached the API: {value}"
        );
    }
    assert_eq!(
        seen.header("x-kept"),
        Some("yes"),
        "end-to-end headers must be forwarded"
    );
}

/// A canned API response carrying hop-by-hop headers and two cookies.
fn hop_response() -> Vec<u8> {
    let body = r#"{"ok":true}"#;
    format!(
        "HTTP/1.1 200 OK\r\n\
         Content-Type: application/json\r\n\
         Content-Length: {}\r\n\
         Connection: X-Custom\r\n\
         X-Custom: 1\r\n\
         Keep-Alive: timeout=5\r\n\
         Proxy-Connection: keep-alive\r\n\
         X-Kept: yes\r\n\
         Set-Cookie: auth-token=from-the-api; Path=/; HttpOnly\r\n\
         Set-Cookie: theme=dark; Path=/\r\n\
         \r\n\
         {body}",
        body.len()
    )
    .into_bytes()
}

#[actix_web::test]
async fn hop_by_hop_response_headers_are_not_returned() {
    let upstream = RawUpstream::answering(&hop_response());
    let app = spawn_app(&upstream.url(""), &[]);

    let reply = app.get_api("/api/hop", None).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), r#"{"ok":true}"#);
    assert!(upstream.heads().iter().any(|h| h.starts_with("GET /hop ")));
    for name in ["x-custom", "keep-alive", "proxy-connection"] {
        assert!(
            reply.header_all(name).is_empty(),
            "hop-by-hop header {name} came back to the client: {:?}",
            reply.headers
        );
    }
    for value in reply.header_all("connection") {
        assert!(
            !value.to_ascii_lowercase().contains("x-custom"),
            "the API's Connection header came back: {value}"
        );
    }
    assert_eq!(reply.header("x-kept"), Some("yes"));
}

#[actix_web::test]
async fn the_api_cannot_set_the_auth_cookie() {
    let upstream = RawUpstream::answering(&hop_response());
    let app = spawn_app(&upstream.url(""), &[]);

    let reply = app.get_api("/api/cookies", None).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let cookies = reply.set_cookies();
    assert!(
        cookies.iter().all(|c| c.name != "auth-token"),
        "the API's Set-Cookie for auth-token must be dropped: {:?}",
        reply.header_all("set-cookie")
    );
    assert!(
        cookies.iter().any(|c| c.name == "theme" && c.value == "dark"),
        "other cookies from the API must pass: {:?}",
        reply.header_all("set-cookie")
    );
}

#[test]
fn forwarded_headers_are_set() {
    let (api, app) = setup();

    let reply = app.raw(&raw_get(
        "/api/echo",
        &["Host: bff.example.test:8443", "X-Forwarded-For: 203.0.113.9"],
    ));
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = api.last_request();
    // The client is no trusted proxy: its own claim is replaced (see
    // tests/forwarding.rs for trusted proxies).
    assert_eq!(seen.header_all("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(seen.header_all("x-forwarded-proto"), vec!["http"]);
    assert_eq!(seen.header_all("x-forwarded-host"), vec!["bff.example.test:8443"]);

    let reply = app.raw(&raw_get("/api/echo", &["Host: bff.example.test"]));
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = api.last_request();
    assert_eq!(seen.header_all("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(seen.header_all("x-forwarded-host"), vec!["bff.example.test"]);
}

#[test]
fn paths_that_could_escape_the_base_are_refused() {
    let (api, app) = setup();

    for path in [
        "/api/../x",
        "/api/%2e%2e/x",
        "/api/%2E%2E/x",
        "/api/.%2e/x",
        "/api/a/../../x",
        "/api/x/..",
        "/api/./x",
        "/api/%2e/x",
        "/api/a%2Fb",
        "/api/a%2fb",
        "/api/..%2F..%2Fadmin",
    ] {
        let reply = app.raw(&raw_get(path, &[]));
        assert_eq!(
            reply.status,
            400,
            "{path} must be refused; got {} {}",
            reply.status,
            reply.text()
        );
        assert_eq!(reply.json()["error"], "bad_request", "{path}");
    }
    assert!(
        api.requests().is_empty(),
        "the API must see none of these: {:?}",
        api.requests()
            .iter()
            .map(|r| r.target.clone())
            .collect::<Vec<_>>()
    );

    // Dots inside a segment are harmless and pass.
    let reply = app.raw(&raw_get("/api/v1.2/file.tar.gz", &[]));
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(api.last_request().target, "/v1/v1.2/file.tar.gz");
}

#[actix_web::test]
async fn a_refused_upstream_is_502_upstream_unavailable() {
    // Log in through a working instance; the cookie opens anywhere with the
    // same key.
    let api = RecordingApi::start();
    let good = spawn_app(&api.url("/v1"), &[]);
    let cookie = good.login_cookie().await;
    let token = api.last_issued().token;

    let app = spawn_app(&refused_url(), &[]);
    let reply = app.get_api("/api/echo", Some(&cookie)).await;
    reply.assert_error(502, "upstream_unavailable");
    assert!(!reply.leaks(&token), "an error leaked the token");

    let reply = app.login("demo", "demo").await;
    reply.assert_error(502, "upstream_unavailable");
    assert!(reply.set_cookie_for("auth-token").is_none());
}

#[actix_web::test]
async fn an_upstream_closing_without_answer_is_502_upstream_unavailable() {
    let upstream = RawUpstream::closing();
    let app = spawn_app(&upstream.url(""), &[]);

    let reply = app.get_api("/api/echo", None).await;
    reply.assert_error(502, "upstream_unavailable");
    assert!(
        !upstream.heads().is_empty(),
        "the request should have reached the upstream"
    );

    let reply = app.login("demo", "demo").await;
    reply.assert_error(502, "upstream_unavailable");
}

#[actix_web::test]
async fn a_slow_upstream_is_504_upstream_timeout() {
    let (api, app) = setup_with(&[("TOKENJAR_UPSTREAM__TIMEOUT_MS", "300")]);
    let cookie = app.login_cookie().await;
    let token = api.last_issued().token;

    let started = Instant::now();
    let reply = app.get_api("/api/hang", Some(&cookie)).await;
    let waited = started.elapsed();
    reply.assert_error(504, "upstream_timeout");
    assert!(!reply.leaks(&token), "an error leaked the token");
    assert_eq!(api.last_request().target, "/v1/hang");
    assert!(
        waited < Duration::from_secs(10),
        "a 300 ms timeout took {waited:?}"
    );
}
