//! Server-side sessions end to end (SPEC §17): `session.store = "memory"`
//! (and `"redis"`, against a real `redis-server`): the cookie holds only a
//! sealed id, logout ends the session at once so a copied cookie dies with
//! it, a 10 KB token still takes one small cookie, and the stateless
//! cookie store, by contrast, keeps a copied cookie alive.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;
use tokenjar_e2e::api::CannedReply;
use tokenjar_e2e::{setup_with, RecordingApi, Reply, TestApp};

const MEMORY: &[(&str, &str)] = &[("TOKENJAR_SESSION__STORE", "memory")];

/// Logs in with the API answering `token`; the `Cookie` header to send
/// back, and the login's reply.
async fn log_in(api: &RecordingApi, app: &TestApp, token: &str) -> (String, Reply) {
    api.push_login_reply(CannedReply::json(200, &json!({ "authToken": token })));
    let login = app.login("demo", "demo").await;
    assert_eq!(login.status, 200, "{}", login.text());
    let cookies: Vec<String> = login.set_cookies().iter().map(|c| c.pair()).collect();
    (cookies.join("; "), login)
}

/// The `auth-token` headers the API saw on its last request.
fn token_seen(api: &RecordingApi) -> Vec<String> {
    api.last_request()
        .header_all("auth-token")
        .into_iter()
        .map(str::to_owned)
        .collect()
}

/// A copy of the cookie replayed after logout (SPEC §17, OWASP ASVS
/// V3.3.1): with a store, the session ended at the logout, so the copy
/// reaches the API without a token and is deleted; the copy's holder sees
/// "logged out".
async fn a_copied_cookie_dies_with_the_logout(env: &[(&str, &str)]) {
    let (api, app) = setup_with(env);
    let token = "tok-for-the-store-0123456789";
    let (cookie, login) = log_in(&api, &app, token).await;
    assert!(!login.leaks(token), "{login:?}");
    let copied = cookie.clone();

    let reply = app.get_api("/api/echo", Some(&cookie)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(token_seen(&api), [token]);
    assert_eq!(app.session(Some(&cookie)).await.json()["loggedIn"], true);

    let logout = app.logout(Some(&cookie)).await;
    assert_eq!(logout.status, 200, "{}", logout.text());

    let replay = app.get_api("/api/echo", Some(&copied)).await;
    assert_eq!(replay.status, 200, "{}", replay.text());
    assert!(token_seen(&api).is_empty(), "the copy still carried a token");
    assert!(
        replay
            .set_cookie_for("auth-token")
            .is_some_and(|c| c.max_age() == Some(0)),
        "the dead cookie is deleted: {:?}",
        replay.headers
    );
    assert_eq!(
        app.session(Some(&copied)).await.json(),
        json!({ "loggedIn": false })
    );
}

#[actix_web::test]
async fn with_the_memory_store_a_copied_cookie_dies_with_the_logout() {
    a_copied_cookie_dies_with_the_logout(MEMORY).await;
}

/// The contrast the docs state (docs/security.md): the stateless cookie
/// holds the session itself, so a copy taken before the logout still
/// works until it expires.
#[actix_web::test]
async fn with_the_cookie_store_a_copied_cookie_outlives_the_logout() {
    let (api, app) = setup_with(&[]);
    let token = "tok-in-the-cookie-0123456789";
    let (cookie, _) = log_in(&api, &app, token).await;
    assert_eq!(app.logout(Some(&cookie)).await.status, 200);
    let replay = app.get_api("/api/echo", Some(&cookie)).await;
    assert_eq!(replay.status, 200, "{}", replay.text());
    assert_eq!(token_seen(&api), [token]);
}

/// With a store the cookie is the same small sealed id whatever the
/// session's size: a 10 KB token takes one cookie, not four chunks, and
/// the cookie holds nothing of the token.
#[actix_web::test]
async fn with_a_store_a_ten_kilobyte_token_takes_one_small_cookie() {
    let (api, app) = setup_with(MEMORY);
    let token = format!("tok-{}", "0123456789abcdef".repeat(625));
    let (cookie, login) = log_in(&api, &app, &token).await;
    let names: Vec<String> = login.set_cookies().iter().map(|c| c.name.clone()).collect();
    assert_eq!(names, ["auth-token"]);
    assert!(cookie.len() < 200, "{} bytes: {cookie}", cookie.len());
    assert_eq!(app.get_api("/api/echo", Some(&cookie)).await.status, 200);
    assert_eq!(token_seen(&api), [token.as_str()]);
}

/// A second login in the same browser replaces the stored session: the
/// first one's cookie, copied before, opens nothing any more.
#[actix_web::test]
async fn a_new_login_ends_the_browsers_previous_stored_session() {
    let (api, app) = setup_with(MEMORY);
    let (first, _) = log_in(&api, &app, "tok-first-0123456789").await;
    api.push_login_reply(CannedReply::json(
        200,
        &json!({ "authToken": "tok-second-0123456789" }),
    ));
    let again = app
        .send(
            "POST",
            "/api/login",
            &[
                ("content-type", "application/json"),
                ("x-csrf", "1"),
                ("cookie", &first),
            ],
            r#"{"username":"demo","password":"demo"}"#,
        )
        .await;
    assert_eq!(again.status, 200, "{}", again.text());
    let second = again.set_cookie_for("auth-token").unwrap().pair();
    assert_ne!(second, first, "a login makes a new session id");
    app.get_api("/api/echo", Some(&first)).await;
    assert!(token_seen(&api).is_empty(), "the first session lives on");
    app.get_api("/api/echo", Some(&second)).await;
    assert_eq!(token_seen(&api), ["tok-second-0123456789"]);
}
