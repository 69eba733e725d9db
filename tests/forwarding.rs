//! Headers and hosts a client should not be able to choose (SPEC §2, §3,
//! §7): `X-Forwarded-*`, `Forwarded`, `X-Real-IP`, `X-Original-URL` and
//! `X-Rewrite-URL` are believed only from `server.trusted_proxies`;
//! `server.public_origin` fixes the origin the API is told about and the
//! CSRF rules compare with, and refuses other hosts (the probes and
//! `/metrics` excepted); `TRACE` and `CONNECT` are 405; `ops.listen` moves
//! `/metrics` off the public port.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use tokenjar_e2e::{raw_request, setup_with, Recorded};

/// A raw request: method, path, then header lines; `Connection: close`.
fn request(method: &str, path: &str, headers: &[&str]) -> String {
    let mut out = format!("{method} {path} HTTP/1.1\r\n");
    for line in headers {
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    out
}

/// Every claim a client can make about the hop, in one request.
const CLAIMS: [&str; 8] = [
    "Host: app.example.com",
    "X-Forwarded-For: 203.0.113.9",
    "X-Forwarded-Proto: https",
    "X-Forwarded-Host: evil.example",
    "Forwarded: for=203.0.113.9;host=evil.example;proto=https",
    "X-Real-IP: 203.0.113.9",
    "X-Original-URL: /admin/delete-everything",
    "X-Rewrite-URL: /admin/delete-everything",
];

fn claims_seen(seen: &Recorded) -> Vec<(&'static str, Vec<String>)> {
    [
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "forwarded",
        "x-real-ip",
        "x-original-url",
        "x-rewrite-url",
    ]
    .into_iter()
    .map(|name| {
        (
            name,
            seen.header_all(name).into_iter().map(str::to_owned).collect(),
        )
    })
    .collect()
}

fn values(pairs: &[(&'static str, Vec<String>)], name: &str) -> Vec<String> {
    pairs
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

/// From a client that is no trusted proxy, its claims about the hop never
/// reach the API: `X-Forwarded-For` is its own address, proto and host are
/// the connection's, and the path and address overrides are gone. From a
/// trusted proxy they pass (the proxy's address appended).
#[test]
fn hop_claims_are_believed_only_from_trusted_proxies() {
    let (api, app) = setup_with(&[]);
    let reply = app.raw(&request("GET", "/api/echo", &CLAIMS));
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = claims_seen(&api.last_request());
    assert_eq!(values(&seen, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(values(&seen, "x-forwarded-proto"), ["http"]);
    assert_eq!(values(&seen, "x-forwarded-host"), ["app.example.com"]);
    for dropped in ["forwarded", "x-real-ip", "x-original-url", "x-rewrite-url"] {
        assert!(
            values(&seen, dropped).is_empty(),
            "{dropped} reached the API: {seen:?}"
        );
    }

    let (api, app) = setup_with(&[("TOKENJAR_SERVER__TRUSTED_PROXIES", "10.0.0.0/8,127.0.0.1")]);
    let reply = app.raw(&request("GET", "/api/echo", &CLAIMS));
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = claims_seen(&api.last_request());
    assert_eq!(values(&seen, "x-forwarded-for"), ["203.0.113.9, 127.0.0.1"]);
    assert_eq!(values(&seen, "x-forwarded-proto"), ["https"]);
    assert_eq!(values(&seen, "x-forwarded-host"), ["evil.example"]);
    assert_eq!(values(&seen, "x-original-url"), ["/admin/delete-everything"]);
    assert_eq!(values(&seen, "x-real-ip"), ["203.0.113.9"]);
}

/// A client cannot make its own `X-Forwarded-Host` count as the page's
/// origin for the CSRF rules (an `Origin` of its choosing with a matching
/// claim); from a trusted proxy the claim is the origin.
#[test]
fn a_clients_forwarded_host_is_not_its_own_origin() {
    let forged = [
        "Host: app.example.com",
        "X-Forwarded-Proto: https",
        "X-Forwarded-Host: evil.example",
        "Origin: https://evil.example",
        "X-CSRF: 1",
        "Content-Length: 0",
    ];
    let (api, app) = setup_with(&[]);
    app.raw(&request("POST", "/api/echo", &forged))
        .assert_error(403, "csrf");
    assert!(api.requests().is_empty(), "a forged request reached the API");

    let (api, app) = setup_with(&[("TOKENJAR_SERVER__TRUSTED_PROXIES", "127.0.0.1/32")]);
    let reply = app.raw(&request("POST", "/api/echo", &forged));
    assert_eq!(reply.status, 200, "from a trusted proxy: {}", reply.text());
    assert_eq!(api.requests().len(), 1);
}

/// With `server.public_origin`, the API is told that origin whatever the
/// client claims, a request for another `Host` is 400 before anything
/// happens, the probes and `/metrics` still answer by address, and the
/// CSRF rules take that origin as the page's own.
#[test]
fn a_public_origin_fixes_the_host_and_the_forwarded_headers() {
    let (api, app) = setup_with(&[("TOKENJAR_SERVER__PUBLIC_ORIGIN", "https://app.example.com")]);
    let reply = app.raw(&request("GET", "/api/echo", &CLAIMS));
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = claims_seen(&api.last_request());
    assert_eq!(values(&seen, "x-forwarded-proto"), ["https"]);
    assert_eq!(values(&seen, "x-forwarded-host"), ["app.example.com"]);

    let before = api.requests().len();
    for host in [
        "Host: evil.example",
        "Host: app.example.com.evil.example",
        "Host: app.example.com:8443",
    ] {
        let reply = app.raw(&request("GET", "/api/echo", &[host]));
        reply.assert_error(400, "bad_request");
        let reply = app.raw(&request("GET", "/api/session", &[host]));
        reply.assert_error(400, "bad_request");
    }
    assert_eq!(api.requests().len(), before, "a foreign host reached the API");

    for path in ["/healthz", "/readyz", "/metrics"] {
        let reply = app.raw(&request("GET", path, &["Host: 10.0.0.7:8080"]));
        assert_eq!(reply.status, 200, "{path} by address: {}", reply.text());
    }

    let post = |origin: &str| {
        let origin = format!("Origin: {origin}");
        app.raw(&request(
            "POST",
            "/api/echo",
            &["Host: app.example.com", &origin, "X-CSRF: 1", "Content-Length: 0"],
        ))
    };
    assert_eq!(post("https://app.example.com").status, 200);
    // The connection is plain http, but the page's origin is the public one.
    post("http://app.example.com").assert_error(403, "csrf");
}

/// `TRACE` would echo the request (cookies included) back to a script and
/// `CONNECT` would make tokenjar a tunnel: both are 405 on every route,
/// and never reach the API.
#[test]
fn trace_and_connect_are_405() {
    let (api, app) = setup_with(&[]);
    for (method, target) in [
        ("TRACE", "/api/echo"),
        ("TRACE", "/api/login"),
        ("TRACE", "/"),
        ("CONNECT", "/api/echo"),
    ] {
        let reply = raw_request(
            app.address,
            request(method, target, &["Host: 127.0.0.1", "X-CSRF: 1"]).as_bytes(),
        );
        assert_eq!(reply.status, 405, "{method} {target}: {}", reply.text());
        if reply.header("content-type").is_some_and(|t| t.contains("json")) {
            reply.assert_error(405, "method_not_allowed");
        }
    }
    assert!(api.requests().is_empty(), "TRACE or CONNECT reached the API");
}
