//! End-to-end tests of login interception, the auth cookie, session and
//! logout (SPEC §4, §5, §6): the real binary in front of a recording API.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use serde_json::{json, Value};
use tokenjar_e2e::api::CannedReply;
use tokenjar_e2e::pattern::{make_jwt, signature_of};
use tokenjar_e2e::{
    setup, setup_with, spawn_app, tamper, unix_now, RecordingApi, Reply, TestApp, KEY_1, KEY_2,
};

/// Asserts that neither the token nor its signature part appears anywhere in
/// the response (body or headers).
fn assert_no_token(reply: &Reply, token: &str, context: &str) {
    for needle in [token, signature_of(token)] {
        assert!(
            !reply.leaks(needle),
            "{context}: the token leaked into the response: status {}, headers {:?}, body {:?}",
            reply.status,
            reply.headers,
            reply.text()
        );
    }
}

/// Asserts the response deletes the auth cookie (`Max-Age=0`, `Path=/`).
fn assert_deletes_cookie(reply: &Reply, context: &str) {
    let cookie = reply.set_cookie_for("auth-token").unwrap_or_else(|| {
        panic!(
            "{context}: expected a Set-Cookie deleting auth-token; headers {:?}",
            reply.headers
        )
    });
    assert_eq!(cookie.max_age(), Some(0), "{context}: {}", cookie.raw);
    assert_eq!(cookie.attr("path"), Some(Some("/")), "{context}: {}", cookie.raw);
}

/// Asserts that `cookie` (one that does not open) counts as no cookie: the
/// session says logged out and deletes it, and an API call through tokenjar
/// reaches the API without a token. The API call's answer.
async fn assert_counts_as_absent(api: &RecordingApi, app: &TestApp, cookie: &str, context: &str) -> Reply {
    let reply = app.session(Some(cookie)).await;
    assert_eq!(reply.status, 200, "{context}: {}", reply.text());
    assert_eq!(reply.json(), json!({"loggedIn": false}), "{context}");
    assert_deletes_cookie(&reply, &format!("session with {context}"));

    let reply = app.get_api("/api/echo", Some(cookie)).await;
    assert_eq!(reply.status, 200, "{context}: {}", reply.text());
    assert!(
        api.last_request().header_all("auth-token").is_empty(),
        "{context} must not yield a token: {:?}",
        api.last_request().headers
    );
    reply
}

/// A raw POST of the demo credentials to `path`, with `x-csrf`.
fn raw_login(app: &TestApp, path: &str) -> Reply {
    let body = r#"{"username":"demo","password":"demo"}"#;
    app.raw(&format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         Content-Type: application/json\r\nx-csrf: 1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ))
}

#[actix_web::test]
async fn login_sets_a_sealed_http_only_cookie_and_hides_the_token() {
    let (api, app) = setup();

    let reply = app.login("demo", "demo").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let issued = api.last_issued();
    let token = issued.token.as_str();

    // The API got the login request itself.
    let seen = api.last_request();
    assert_eq!(
        (seen.method.as_str(), seen.target.as_str()),
        ("POST", "/v1/login")
    );
    let creds: Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(creds, json!({"username": "demo", "password": "demo"}));

    let body = reply.json();
    assert_eq!(body["loggedIn"], true, "{body}");
    assert_eq!(body["user"], json!({"name": "demo"}), "{body}");
    assert!(body.get("authToken").is_none(), "token field kept: {body}");
    assert_no_token(&reply, token, "login");

    let cookie = reply.set_cookie_for("auth-token").expect("auth cookie set");
    assert!(!cookie.value.is_empty());
    assert!(!cookie.value.contains(token) && !cookie.value.contains(signature_of(token)));
    assert_eq!(cookie.attr("httponly"), Some(None), "{}", cookie.raw);
    assert!(
        cookie
            .attr("samesite")
            .flatten()
            .is_some_and(|v| v.eq_ignore_ascii_case("lax")),
        "{}",
        cookie.raw
    );
    assert_eq!(cookie.attr("path"), Some(Some("/")), "{}", cookie.raw);
    assert_eq!(cookie.attr("secure"), None, "cookie.secure=false: {}", cookie.raw);
    let max_age = cookie.max_age().expect("Max-Age following the JWT exp");
    let expected = issued.exp.saturating_sub(unix_now()) as i64;
    assert!(
        (expected - 120..=expected + 5).contains(&max_age),
        "Max-Age {max_age} should follow the JWT exp (about {expected})"
    );

    // The browser sends the cookie back; the API gets the token.
    let reply = app.get_api("/api/echo", Some(&cookie.pair())).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(api.last_request().header_all("auth-token"), vec![token]);
    assert_no_token(&reply, token, "api call");
}

#[actix_web::test]
async fn bad_credentials_pass_through_without_cookie() {
    let (api, app) = setup();

    let reply = app.login("demo", "wrong").await;
    assert_eq!(reply.status, 401, "{}", reply.text());
    assert_eq!(reply.json(), json!({"error": "bad credentials"}));
    assert!(
        reply.header_all("set-cookie").is_empty(),
        "no cookie on a failed login: {:?}",
        reply.header_all("set-cookie")
    );
    assert_eq!(api.requests().len(), 1);
}

#[test]
fn login_is_intercepted_however_its_path_is_spelled() {
    let (api, app) = setup();

    for path in [
        "/api/LOGIN",
        "/api/Login",
        "/api/login/",
        "/api//login",
        "/api/login?x=1",
        "/api/%6Cogin",
    ] {
        let (reply, _) = login_intercepted(&api, &app, path);
        assert!(
            reply.set_cookie_for("auth-token").is_some(),
            "{path}: the login should set the auth cookie"
        );
    }
}

/// Logs in at `path` and checks that the API was asked and that its answer
/// was intercepted: 200, `loggedIn`, and the issued token nowhere in the
/// reply. The reply and that token.
fn login_intercepted(api: &RecordingApi, app: &TestApp, path: &str) -> (Reply, String) {
    let before = api.issued().len();
    let reply = raw_login(app, path);
    let issued = api.issued();
    assert_eq!(
        issued.len(),
        before + 1,
        "{path}: the API should have been asked to log in (status {} {})",
        reply.status,
        reply.text()
    );
    let token = issued.last().unwrap().token.clone();
    assert_no_token(&reply, &token, path);
    assert_eq!(reply.status, 200, "{path}: {}", reply.text());
    assert_eq!(reply.json()["loggedIn"], true, "{path}");
    (reply, token)
}

/// SPEC §4: spellings that a lenient API router takes for its login route (a
/// `.format` suffix, `;params`, Unicode case such as the dotless `ı`, which
/// upper-cases to `I`) are intercepted like the route itself. The recording
/// API answers them as its login, so without interception the token would
/// reach the browser.
#[test]
fn login_spellings_a_lenient_router_accepts_are_intercepted() {
    let (api, app) = setup();

    for path in [
        "/api/login.json",
        "/api/LOGIN.json",
        "/api/login;jsessionid=1",
        "/api/log%C4%B1n",
        "/api/LOG%C4%B1N.xml",
    ] {
        let (reply, token) = login_intercepted(&api, &app, path);
        // The API got the request under the spelling the browser used.
        let seen = api.last_request();
        let upstream = format!("/v1{}", path.trim_start_matches("/api"));
        assert_eq!(
            (seen.method.as_str(), seen.target.as_str()),
            ("POST", upstream.as_str()),
            "{path}"
        );

        let cookie = reply
            .set_cookie_for("auth-token")
            .unwrap_or_else(|| panic!("{path}: the login should set the auth cookie"));
        assert!(
            !cookie.value.contains(&token) && !cookie.value.contains(signature_of(&token)),
            "{path}: the cookie must be sealed: {}",
            cookie.raw
        );

        // The sealed cookie opens to the API's token on the next call.
        let call = app.raw(&format!(
            "GET /api/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nCookie: {}\r\n\r\n",
            cookie.pair()
        ));
        assert_eq!(call.status, 200, "{path}: {}", call.text());
        assert_eq!(
            api.last_request().header_all("auth-token"),
            vec![token.as_str()],
            "{path}"
        );
    }
}

#[actix_web::test]
async fn malformed_login_responses_are_502_without_cookie() {
    let (api, app) = setup();
    let token = make_jwt(unix_now() + 3600);
    let big_pad = "x".repeat(2 * 1024 * 1024);
    let cases: Vec<(&str, CannedReply)> = vec![
        (
            "not JSON",
            CannedReply::raw(200, "text/plain", format!("authToken={token}")),
        ),
        (
            "truncated JSON",
            CannedReply::raw(200, "application/json", format!(r#"{{"authToken":"{token}""#)),
        ),
        (
            "no token",
            CannedReply::json(200, &json!({"user": {"name": "demo"}})),
        ),
        (
            "token is a number",
            CannedReply::json(200, &json!({"authToken": 1234567890123_u64})),
        ),
        (
            "token is null",
            CannedReply::json(200, &json!({"authToken": null})),
        ),
        (
            "token is empty",
            CannedReply::json(200, &json!({"authToken": ""})),
        ),
        (
            "body over 1 MiB",
            CannedReply::json(200, &json!({"authToken": token, "pad": big_pad})),
        ),
        (
            "token with CR/LF",
            CannedReply::json(200, &json!({"authToken": format!("{token}\r\nX-Injected: 1")})),
        ),
    ];
    for (case, canned) in cases {
        api.push_login_reply(canned);
        let reply = app.login("demo", "demo").await;
        assert_eq!(
            reply.status,
            502,
            "{case}: expected 502 bad_login_response, got {} {:?}",
            reply.status,
            reply.text().chars().take(300).collect::<String>()
        );
        reply.assert_error(502, "bad_login_response");
        assert!(
            reply.header_all("set-cookie").is_empty(),
            "{case}: no cookie may be set: {:?}",
            reply.header_all("set-cookie")
        );
        assert_no_token(&reply, &token, case);
        assert!(reply.header("x-injected").is_none(), "{case}");
    }
}

#[actix_web::test]
async fn any_2xx_login_with_a_token_logs_in() {
    let (api, app) = setup();
    let exp = unix_now() + 7200;
    let token = make_jwt(exp);
    api.push_login_reply(CannedReply::json(
        201,
        &json!({"authToken": token, "user": {"name": "demo"}}),
    ));

    let reply = app.login("demo", "demo").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["loggedIn"], true);
    assert_no_token(&reply, &token, "201 login");
    let cookie = reply.set_cookie_for("auth-token").expect("cookie").pair();

    let session = app.session(Some(&cookie)).await;
    assert_eq!(
        session.json(),
        json!({"loggedIn": true, "expiresAt": exp, "refreshable": false})
    );
}

#[actix_web::test]
async fn login_keeps_other_fields_and_opaque_tokens_make_session_cookies() {
    let (api, app) = setup();
    let token = format!("opaque-{}", tokenjar_e2e::unique());
    api.push_login_reply(CannedReply::json(
        200,
        &json!({"authToken": token, "user": {"name": "demo"}, "roles": ["a", "b"]}),
    ));

    let reply = app.login("demo", "demo").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.json(),
        json!({"user": {"name": "demo"}, "roles": ["a", "b"], "loggedIn": true})
    );
    assert_no_token(&reply, &token, "opaque login");
    let cookie = reply.set_cookie_for("auth-token").expect("cookie");
    assert_eq!(cookie.max_age(), None, "no exp: a session cookie: {}", cookie.raw);
    assert_eq!(
        cookie.attr("expires"),
        None,
        "no exp: a session cookie: {}",
        cookie.raw
    );

    let session = app.session(Some(&cookie.pair())).await;
    assert_eq!(
        session.json(),
        json!({"loggedIn": true, "expiresAt": null, "refreshable": false})
    );
    app.get_api("/api/echo", Some(&cookie.pair())).await;
    assert_eq!(api.last_request().header_all("auth-token"), vec![token.as_str()]);
}

#[actix_web::test]
async fn the_token_field_pointer_is_configurable() {
    let (api, app) = setup_with(&[("TOKENJAR_TOKEN__RESPONSE_FIELD", "/data/token")]);
    let token = make_jwt(unix_now() + 600);
    api.push_login_reply(CannedReply::json(
        200,
        &json!({"data": {"token": token, "kind": "jwt"}, "authToken": "decoy"}),
    ));

    let reply = app.login("demo", "demo").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["data"], json!({"kind": "jwt"}), "{body}");
    assert_eq!(body["authToken"], "decoy", "{body}");
    assert_no_token(&reply, &token, "pointer login");
    let cookie = reply.set_cookie_for("auth-token").expect("cookie").pair();
    app.get_api("/api/echo", Some(&cookie)).await;
    assert_eq!(api.last_request().header_all("auth-token"), vec![token.as_str()]);
}

#[actix_web::test]
async fn concurrent_logins_never_mix() {
    let (api, app) = setup();

    let logins = (0..12).map(|_| app.login("demo", "demo"));
    let replies = futures_util::future::join_all(logins).await;
    let mut seen_tokens = Vec::new();
    for reply in &replies {
        assert_eq!(reply.status, 200, "{}", reply.text());
        let cookie = reply.set_cookie_for("auth-token").expect("cookie").pair();
        app.get_api("/api/echo", Some(&cookie)).await;
        let seen = api.last_request().header("auth-token").map(str::to_owned);
        seen_tokens.push(seen.expect("token reached the API"));
    }
    let mut issued: Vec<String> = api.issued().into_iter().map(|i| i.token).collect();
    issued.sort();
    seen_tokens.sort();
    assert_eq!(
        seen_tokens, issued,
        "each login's cookie must carry the token of that login"
    );
}

#[actix_web::test]
async fn session_reports_logged_out_without_cookie() {
    let (api, app) = setup();

    let reply = app.session(None).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json(), json!({"loggedIn": false}));
    assert!(api.requests().is_empty(), "session is answered by tokenjar");
}

#[actix_web::test]
async fn session_reports_the_jwt_expiry_and_never_the_token() {
    let (api, app) = setup();
    let cookie = app.login_cookie().await;
    let issued = api.last_issued();

    let reply = app.session(Some(&cookie)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.json(),
        json!({"loggedIn": true, "expiresAt": issued.exp, "refreshable": false})
    );
    assert_no_token(&reply, &issued.token, "session");
    assert_eq!(api.requests().len(), 1, "only the login reached the API");
}

#[actix_web::test]
async fn logout_deletes_the_cookie_with_or_without_one() {
    let (api, app) = setup();
    let cookie = app.login_cookie().await;
    let token = api.last_issued().token;

    let reply = app.logout(Some(&cookie)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json(), json!({"loggedIn": false}));
    assert_deletes_cookie(&reply, "logout");
    assert_no_token(&reply, &token, "logout");

    let reply = app.logout(None).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json(), json!({"loggedIn": false}));
    assert_deletes_cookie(&reply, "logout without cookie");

    assert_eq!(api.requests().len(), 1, "logout is answered by tokenjar");
}

#[actix_web::test]
async fn logout_by_get_is_405() {
    let (api, app) = setup();
    let cookie = app.login_cookie().await;

    let reply = app.get_api("/api/logout", Some(&cookie)).await;
    reply.assert_error(405, "method_not_allowed");
    assert!(
        reply.set_cookie_for("auth-token").is_none(),
        "a GET must not log out: {:?}",
        reply.header_all("set-cookie")
    );
    assert_eq!(api.requests().len(), 1);
    let session = app.session(Some(&cookie)).await;
    assert_eq!(session.json()["loggedIn"], true);
}

#[actix_web::test]
async fn a_tampered_cookie_counts_as_absent() {
    let (api, app) = setup();
    let good = app.login_cookie().await;
    let bad = tamper(&good);
    assert_ne!(good, bad);

    let reply = assert_counts_as_absent(&api, &app, &bad, "a tampered cookie").await;
    assert_deletes_cookie(&reply, "api call with a tampered cookie");
}

#[actix_web::test]
async fn a_garbage_cookie_counts_as_absent() {
    let (api, app) = setup();

    for cookie in [
        "auth-token=garbage",
        "auth-token=%%%",
        "auth-token=eyJhbGciOiJIUzI1NiJ9",
    ] {
        assert_counts_as_absent(&api, &app, cookie, cookie).await;
    }
}

#[actix_web::test]
async fn a_cookie_sealed_with_another_key_counts_as_absent() {
    let api = RecordingApi::start();
    let first = spawn_app(&api.url("/v1"), &[("TOKENJAR_COOKIE__KEYS", KEY_1)]);
    let other = spawn_app(&api.url("/v1"), &[("TOKENJAR_COOKIE__KEYS", KEY_2)]);
    let cookie = first.login_cookie().await;

    let reply = other.session(Some(&cookie)).await;
    assert_eq!(reply.json(), json!({"loggedIn": false}));
    assert_deletes_cookie(&reply, "foreign cookie");

    let reply = other.get_api("/api/echo", Some(&cookie)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(api.last_request().header_all("auth-token").is_empty());

    // The instance with the same key still accepts it (stateless).
    let reply = first.session(Some(&cookie)).await;
    assert_eq!(reply.json()["loggedIn"], true);
}

#[actix_web::test]
async fn key_rotation_keeps_sessions_until_the_old_key_goes() {
    let api = RecordingApi::start();
    let (old_cookie, token) = {
        let app = spawn_app(&api.url("/v1"), &[("TOKENJAR_COOKIE__KEYS", KEY_1)]);
        let cookie = app.login_cookie().await;
        (cookie, api.last_issued())
    };

    let both = format!("{KEY_2},{KEY_1}");
    let new_cookie = {
        let app = spawn_app(&api.url("/v1"), &[("TOKENJAR_COOKIE__KEYS", both.as_str())]);
        let reply = app.session(Some(&old_cookie)).await;
        assert_eq!(
            reply.json(),
            json!({"loggedIn": true, "expiresAt": token.exp, "refreshable": false}),
            "a cookie sealed with K1 must open with keys K2,K1"
        );
        app.get_api("/api/echo", Some(&old_cookie)).await;
        assert_eq!(
            api.last_request().header_all("auth-token"),
            vec![token.token.as_str()]
        );
        app.login_cookie().await
    };

    let app = spawn_app(&api.url("/v1"), &[("TOKENJAR_COOKIE__KEYS", KEY_2)]);
    let reply = app.session(Some(&old_cookie)).await;
    assert_eq!(
        reply.json(),
        json!({"loggedIn": false}),
        "a cookie sealed with K1 must not open with K2 alone"
    );
    let reply = app.session(Some(&new_cookie)).await;
    assert_eq!(
        reply.json()["loggedIn"],
        true,
        "with keys K2,K1 new cookies are sealed with K2"
    );
}

#[actix_web::test]
async fn without_encryption_the_cookie_holds_the_token_in_clear() {
    let (api, app) = setup_with(&[("TOKENJAR_COOKIE__ENCRYPT", "false")]);

    let reply = app.login("demo", "demo").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let issued = api.last_issued();
    assert!(!reply.text().contains(&issued.token), "body leaked the token");
    let cookie = reply.set_cookie_for("auth-token").expect("cookie");
    assert_eq!(cookie.value, issued.token);
    assert_eq!(cookie.attr("httponly"), Some(None));

    let session = app.session(Some(&cookie.pair())).await;
    assert_eq!(
        session.json(),
        json!({"loggedIn": true, "expiresAt": issued.exp, "refreshable": false})
    );
    app.get_api("/api/echo", Some(&cookie.pair())).await;
    assert_eq!(
        api.last_request().header_all("auth-token"),
        vec![issued.token.as_str()]
    );
}

#[actix_web::test]
async fn cookie_attributes_follow_the_configuration() {
    let (api, app) = setup_with(&[
        ("TOKENJAR_COOKIE__NAME", "tj"),
        ("TOKENJAR_COOKIE__SAME_SITE", "strict"),
        ("TOKENJAR_COOKIE__SECURE", "true"),
        ("TOKENJAR_COOKIE__MAX_AGE_S", "600"),
        ("TOKENJAR_COOKIE__PATH", "/"),
    ]);

    let reply = app.login("demo", "demo").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(reply.set_cookie_for("auth-token").is_none());
    let cookie = reply.set_cookie_for("tj").expect("cookie named by cookie.name");
    assert_eq!(cookie.max_age(), Some(600), "{}", cookie.raw);
    assert_eq!(cookie.attr("secure"), Some(None), "{}", cookie.raw);
    assert_eq!(cookie.attr("httponly"), Some(None), "{}", cookie.raw);
    assert!(
        cookie
            .attr("samesite")
            .flatten()
            .is_some_and(|v| v.eq_ignore_ascii_case("strict")),
        "{}",
        cookie.raw
    );
    app.get_api("/api/echo", Some(&cookie.pair())).await;
    assert_eq!(
        api.last_request().header_all("auth-token"),
        vec![api.last_issued().token.as_str()]
    );
}

#[actix_web::test]
async fn logs_never_contain_the_token_or_a_key() {
    let (api, app) = setup();
    let cookie = app.login_cookie().await;
    let token = api.last_issued().token;
    app.get_api("/api/echo", Some(&cookie)).await;
    app.session(Some(&cookie)).await;
    app.get_api("/api/logout", Some(&cookie)).await;
    app.send(
        "GET",
        "/api/status/500",
        &[("cookie", cookie.as_str())],
        Bytes::new(),
    )
    .await;
    app.logout(Some(&cookie)).await;

    let logs = app.logs().join("\n");
    assert!(!logs.is_empty(), "tokenjar logged nothing at RUST_LOG=info");
    for (what, secret) in [
        ("token", token.as_str()),
        ("token signature", signature_of(&token)),
        ("cookie key", KEY_1),
    ] {
        assert!(!logs.contains(secret), "the logs contain the {what}:\n{logs}");
    }
}

#[actix_web::test]
async fn the_sealed_value_is_bound_to_the_cookie_name() {
    let api = RecordingApi::start();
    let default_name = spawn_app(&api.url("/v1"), &[]);
    let other_name = spawn_app(&api.url("/v1"), &[("TOKENJAR_COOKIE__NAME", "tj")]);
    let pair = default_name.login_cookie().await;
    let value = pair.split_once('=').unwrap().1;

    let reply = default_name.session(Some(&pair)).await;
    assert_eq!(reply.json()["loggedIn"], true);
    // Same key, same value, another cookie name: must not open.
    let renamed = format!("tj={value}");
    let reply = other_name.session(Some(&renamed)).await;
    assert_eq!(
        reply.json(),
        json!({"loggedIn": false}),
        "a value sealed for auth-token must not open as tj"
    );
}

#[actix_web::test]
async fn serve_reads_settings_from_the_config_dir() {
    let api = RecordingApi::start();
    let dir = tokenjar_e2e::TempDir::new("config");
    dir.write("default.toml", "[token]\nupstream_header = \"x-api-token\"\n");
    let app = tokenjar_e2e::spawn_custom(dir, Some("serve"), Some(&api.url("/v1")), &[]);

    let cookie = app.login_cookie().await;
    app.get_api("/api/echo", Some(&cookie)).await;
    let seen = api.last_request();
    assert_eq!(
        seen.header_all("x-api-token"),
        vec![api.last_issued().token.as_str()]
    );
    assert!(seen.header_all("auth-token").is_empty());
}

/// SPEC §15: a token of about 10 KB is kept in four chunk cookies with the
/// auth cookie's attributes; sent back in any order they give the API the
/// whole token; a spoiled set counts as none and is deleted; logout deletes
/// every chunk.
#[actix_web::test]
async fn a_ten_kilobyte_token_travels_in_chunk_cookies() {
    let (api, app) = setup();
    let token = format!("tok-{}", "0123456789abcdef".repeat(625));
    api.push_login_reply(CannedReply::json(200, &json!({ "authToken": token })));
    let login = app.login("demo", "demo").await;
    assert_eq!(login.status, 200, "{}", login.text());
    assert_no_token(&login, &token, "chunked login");
    let cookies = login.set_cookies();
    let names: Vec<&str> = cookies.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        ["auth-token.0", "auth-token.1", "auth-token.2", "auth-token.3"]
    );
    for cookie in &cookies {
        assert!(
            cookie.pair().len() - 1 <= 4000,
            "{} is {} bytes",
            cookie.name,
            cookie.pair().len()
        );
        assert_eq!(cookie.attr("httponly"), Some(None), "{}", cookie.name);
        assert_eq!(cookie.attr("path"), Some(Some("/")), "{}", cookie.name);
        assert_eq!(cookie.attr("samesite"), Some(Some("Lax")), "{}", cookie.name);
    }

    // Sent back last chunk first: joined by number all the same.
    let header = cookies
        .iter()
        .rev()
        .map(|c| c.pair())
        .collect::<Vec<_>>()
        .join("; ");
    let reply = app.get_api("/api/echo", Some(&header)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(api.last_request().header_all("auth-token"), [token.as_str()]);
    assert!(reply.set_cookies().is_empty(), "{:?}", reply.headers);
    let session = app.session(Some(&header)).await;
    assert_eq!(session.json()["loggedIn"], json!(true));

    // One chunk missing: no session, and every auth cookie sent is deleted.
    let spoiled = cookies
        .iter()
        .filter(|c| c.name != "auth-token.1")
        .map(|c| c.pair())
        .collect::<Vec<_>>()
        .join("; ");
    let reply = assert_counts_as_absent(&api, &app, &spoiled, "a chunk set missing .1").await;
    let mut deleted: Vec<String> = reply
        .set_cookies()
        .into_iter()
        .filter(|c| c.max_age() == Some(0))
        .map(|c| c.name)
        .collect();
    deleted.sort();
    assert_eq!(
        deleted,
        ["auth-token", "auth-token.0", "auth-token.2", "auth-token.3"]
    );

    // Logout deletes the whole cookie and every chunk.
    let logout = app.logout(Some(&header)).await;
    assert_eq!(logout.status, 200, "{}", logout.text());
    let mut deleted: Vec<String> = logout
        .set_cookies()
        .into_iter()
        .inspect(|c| assert_eq!(c.max_age(), Some(0), "{}", c.raw))
        .map(|c| c.name)
        .collect();
    deleted.sort();
    assert_eq!(
        deleted,
        [
            "auth-token",
            "auth-token.0",
            "auth-token.1",
            "auth-token.2",
            "auth-token.3"
        ]
    );

    // A small token next: the chunks the browser still sends are deleted.
    api.push_login_reply(CannedReply::json(200, &json!({ "authToken": "tok-small" })));
    let login = app
        .send(
            "POST",
            "/api/login",
            &[
                ("content-type", "application/json"),
                ("x-csrf", "1"),
                ("cookie", &header),
            ],
            r#"{"username":"demo","password":"demo"}"#,
        )
        .await;
    assert_eq!(login.status, 200, "{}", login.text());
    let set: Vec<(String, Option<i64>)> = login
        .set_cookies()
        .into_iter()
        .map(|c| (c.name.clone(), c.max_age()))
        .collect();
    assert_eq!(set[0].0, "auth-token");
    assert_ne!(set[0].1, Some(0));
    let deleted: Vec<&str> = set[1..]
        .iter()
        .filter(|(_, age)| *age == Some(0))
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(
        deleted,
        ["auth-token.0", "auth-token.1", "auth-token.2", "auth-token.3"]
    );
}
