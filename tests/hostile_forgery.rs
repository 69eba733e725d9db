//! Forged requests against the real binary: client-sent token headers never
//! reach the API (only the cookie's token does), and cross-site requests
//! and foreign CORS preflights are 403 and reach nothing.
//!
//! Like every `hostile_*` target, each case checks the exact answer (and
//! SPEC §8 code where tokenjar answers), what the recording API received
//! (nothing, or only the sanitised request), and that the same process
//! still serves a good session afterwards. Each test prints `hostile: <case>
//! -> <status> <code> ...` per case when it ends, so a run's output lists
//! every input and its outcome (tests/support/hostile.rs).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use tokenjar_e2e::hostile::{Scene, Tally};

#[actix_web::test]
async fn client_sent_token_headers_never_reach_the_api() {
    let mut scene = Scene::start(&[]).await;
    let mut tally = Tally::new();
    let good = scene.cookie.clone();

    for (case, headers, want) in [
        (
            "auth-token: forged, no cookie",
            vec![("auth-token", "forged")],
            None,
        ),
        (
            "AUTH-TOKEN: forged twice, no cookie",
            vec![("AUTH-TOKEN", "forged"), ("auth-token", "forged-2")],
            None,
        ),
        (
            "auth-token: forged, good cookie",
            vec![("auth-token", "forged"), ("cookie", good.as_str())],
            Some(scene.token.clone()),
        ),
        (
            "auth-token: forged, tampered cookie",
            vec![("auth-token", "forged"), ("cookie", "auth-token=AAAA")],
            None,
        ),
    ] {
        scene
            .forwards_only_the_cookie_token(
                &mut tally,
                case,
                &headers,
                "auth-token",
                want.as_deref(),
                ("API got only the cookie's token", "API got no token"),
            )
            .await;
    }

    // The token in `Authorization: Bearer …`: a client's own Authorization
    // is removed too.
    let mut bearer = Scene::start(&[
        ("TOKENJAR_TOKEN__UPSTREAM_HEADER", "authorization"),
        ("TOKENJAR_TOKEN__UPSTREAM_SCHEME", "Bearer"),
    ])
    .await;
    let good = bearer.cookie.clone();
    let expected = format!("Bearer {}", bearer.token);
    for (case, headers, want) in [
        (
            "[authorization] Authorization: Bearer forged, no cookie",
            vec![("authorization", "Bearer forged")],
            None,
        ),
        (
            "[authorization] Authorization: Basic forged, good cookie",
            vec![("authorization", "Basic forged"), ("cookie", good.as_str())],
            Some(expected.clone()),
        ),
        (
            "[authorization] Authorization: Bearer forged, good cookie",
            vec![("authorization", "Bearer forged"), ("cookie", good.as_str())],
            Some(expected.clone()),
        ),
        (
            "[authorization] auth-token: forged is just another header",
            vec![("auth-token", "forged")],
            None,
        ),
    ] {
        bearer
            .forwards_only_the_cookie_token(
                &mut tally,
                case,
                &headers,
                "authorization",
                want.as_deref(),
                ("API got only Bearer <cookie's token>", "API got no Authorization"),
            )
            .await;
    }
    bearer.assert_still_serving().await;
    scene.assert_still_serving().await;
}

/// A cross-site case: its name, method, path and headers.
type CsrfCase<'a> = (String, &'a str, &'a str, Vec<(&'a str, &'a str)>);

#[actix_web::test]
async fn cross_site_requests_are_403_and_reach_nothing() {
    let mut scene = Scene::start(&[]).await;
    let mut tally = Tally::new();
    let good = scene.cookie.clone();
    let own = format!("http://{}", scene.app.address);

    let mut cases: Vec<CsrfCase<'_>> = Vec::new();
    for method in ["POST", "PUT", "PATCH", "DELETE"] {
        cases.push((
            format!("{method} /api/echo without x-csrf"),
            method,
            "/api/echo",
            vec![("cookie", good.as_str())],
        ));
    }
    cases.push((
        "POST /api/login without x-csrf".into(),
        "POST",
        "/api/login",
        vec![("content-type", "application/json")],
    ));
    cases.push((
        "POST /api/logout without x-csrf".into(),
        "POST",
        "/api/logout",
        vec![("cookie", good.as_str())],
    ));
    let own_with_path = format!("{own}/x");
    for (label, extra) in [
        ("Origin: http://evil.example", ("origin", "http://evil.example")),
        ("Origin: null", ("origin", "null")),
        ("Sec-Fetch-Site: cross-site", ("sec-fetch-site", "cross-site")),
        (
            "Origin: own origin plus a path",
            ("origin", own_with_path.as_str()),
        ),
    ] {
        for (method, path) in [
            ("POST", "/api/echo"),
            ("DELETE", "/api/echo"),
            ("POST", "/api/logout"),
        ] {
            cases.push((
                format!("{method} {path} with x-csrf, {label}"),
                method,
                path,
                vec![("x-csrf", "1"), extra, ("cookie", good.as_str())],
            ));
        }
    }
    for (case, method, path, headers) in &cases {
        let before = scene.seen();
        let reply = scene.app.send(method, path, headers, Bytes::new()).await;
        reply.assert_error(403, "csrf");
        assert!(
            reply.header_all("set-cookie").is_empty(),
            "{case}: a refused request must not touch the cookie: {:?}",
            reply.header_all("set-cookie")
        );
        assert!(scene.seen_since(before).is_empty(), "{case}: the API saw it");
        tally.reply(case, &reply, "API saw nothing");
        scene.assert_alive(case);
    }

    // A CORS preflight from a foreign origin is never granted.
    for path in ["/api/echo", "/api/login", "/api/session"] {
        let case = format!("OPTIONS {path} preflight from http://evil.example");
        let before = scene.seen();
        let reply = scene
            .app
            .send(
                "OPTIONS",
                path,
                &[
                    ("origin", "http://evil.example"),
                    ("access-control-request-method", "POST"),
                    ("access-control-request-headers", "x-csrf"),
                ],
                Bytes::new(),
            )
            .await;
        reply.assert_error(403, "csrf");
        assert!(
            !reply
                .headers
                .iter()
                .any(|(n, _)| n.starts_with("access-control-allow")),
            "{case}: {:?}",
            reply.headers
        );
        assert!(scene.seen_since(before).is_empty(), "{case}: the API saw it");
        tally.reply(&case, &reply, "no Access-Control-Allow-*, API saw nothing");
        scene.assert_alive(&case);
    }
    scene.assert_still_serving().await;
}
