//! Token refresh end to end (SPEC §14): the tokenjar binary in front of an
//! API that rotates refresh tokens and ends a whole login when a spent one
//! comes back (`support/refresh_api.rs`). Shows single flight, the reuse
//! window and its absence, the 401 retry, refusals, an API that is down,
//! revocation at logout, the metrics, and that no token reaches the browser.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use futures_util::future::{join, join_all};
use serde_json::json;
use tokenjar_e2e::metrics::metric_sum;
use tokenjar_e2e::refresh_api::{assert_no_tokens, RefreshApi, REFRESH_ENV};
use tokenjar_e2e::{spawn_app, unix_now, Reply, TestApp};

/// How many requests of one session cross the expiry at once.
const CONCURRENT: usize = 50;

/// The refresh API and one tokenjar in front of it with refresh on.
struct Scene {
    api: RefreshApi,
    app: TestApp,
}

impl Scene {
    /// Logins issue access tokens living `login_ttl` seconds, refreshes ones
    /// living `refresh_ttl` (tokenjar's leeway is its default, 60 s: a
    /// login TTL of 0 is due at once, 300 is not). `extra` env comes last.
    fn start(login_ttl: u64, refresh_ttl: u64, extra: &[(&str, &str)]) -> Self {
        let api = RefreshApi::start(login_ttl, refresh_ttl);
        let mut env = REFRESH_ENV.to_vec();
        env.extend_from_slice(extra);
        let app = spawn_app(&api.url(""), &env);
        Self { api, app }
    }

    /// Logs in; asserts success and that no token reached the page. The
    /// reply and the `Cookie` header a browser would send back.
    async fn login(&self) -> (Reply, String) {
        let reply = self.app.login("demo", "demo").await;
        assert_eq!(reply.status, 200, "login: {}", reply.text());
        assert_no_tokens(&reply, &self.api, "login");
        let cookie = new_cookie(&reply, "login");
        (reply, cookie)
    }

    /// `GET path` with `cookie`; asserts no token reached the browser.
    async fn get(&self, path: &str, cookie: &str) -> Reply {
        let reply = self.app.get_api(path, Some(cookie)).await;
        assert_no_tokens(&reply, &self.api, &format!("GET {path}"));
        reply
    }

    /// [`Scene::get`] with owned arguments, for many requests at once.
    async fn get_owned(&self, path: String, cookie: String) -> Reply {
        self.get(&path, &cookie).await
    }

    /// Asserts a 200 from the API that saw access token `token`.
    fn assert_served_with(&self, reply: &Reply, token: &str, context: &str) {
        assert_eq!(reply.status, 200, "{context}: {}", reply.text());
        assert_eq!(
            reply.json()["token"],
            self.api.label(token),
            "{context}: the API saw another token"
        );
    }

    /// `POST path` (empty body, `x-csrf`) with `cookie`; asserts no token
    /// reached the browser.
    async fn post(&self, path: &str, cookie: &str) -> Reply {
        let headers = [("cookie", cookie), ("x-csrf", "1")];
        let reply = self.app.send("POST", path, &headers, Bytes::new()).await;
        assert_no_tokens(&reply, &self.api, &format!("POST {path}"));
        reply
    }

    /// `GET path` with `cookie` as a browser sends it: no `Content-Length`
    /// (awc's client adds `Content-Length: 0`, which tokenjar does not
    /// retry: see `a_get_with_content_length_0_is_retried_too`); `extra`
    /// header lines (each ending in CRLF) added. Asserts no token reached
    /// the browser.
    fn browser_get(&self, path: &str, cookie: &str, extra: &str) -> Reply {
        let reply = self.app.raw(&format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nCookie: {cookie}\r\n{extra}\r\n"
        ));
        assert_no_tokens(&reply, &self.api, &format!("GET {path} (raw)"));
        reply
    }

    /// `tokenjar_refreshes_total{result}` as tokenjar counts it.
    async fn refreshes(&self, result: &str) -> f64 {
        let text = self.app.get_api("/metrics", None).await.text();
        metric_sum(&text, "tokenjar_refreshes_total", &[("result", result)])
    }
}

/// The `Cookie` header value of the live auth cookie `reply` sets; panics
/// if it sets none (or deletes it).
fn new_cookie(reply: &Reply, context: &str) -> String {
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

#[actix_web::test]
async fn login_keeps_both_tokens_out_of_the_page_and_the_cookie() {
    let scene = Scene::start(300, 300, &[]);
    let before = unix_now();
    let (reply, cookie) = scene.login().await;
    let after = unix_now();
    let body = reply.json();
    assert!(
        body.get("authToken").is_none(),
        "access token in the page: {body}"
    );
    assert!(
        body.get("refreshToken").is_none(),
        "refresh token in the page: {body}"
    );
    assert_eq!(
        body["user"]["name"], "demo",
        "the rest of the answer passes: {body}"
    );
    // Sealed: neither token is readable in the cookie (checked by
    // assert_no_tokens on the whole reply, Set-Cookie included).

    let session = scene.get("/api/session", &cookie).await;
    assert_eq!(session.status, 200, "{}", session.text());
    let session = session.json();
    assert_eq!(session["loggedIn"], true, "{session}");
    assert_eq!(session["refreshable"], true, "{session}");
    let expires_at = session["expiresAt"].as_u64().expect("expiresAt in seconds");
    assert!(
        (before + 300..=after + 300).contains(&expires_at),
        "expiresAt {expires_at} is not the login's expiresIn (300 s) after {before}..{after}"
    );

    // A fresh token goes through as it is: no refresh, no new cookie.
    let reply = scene.get("/api/me", &cookie).await;
    scene.assert_served_with(&reply, &scene.api.last_access(), "GET /api/me");
    assert!(
        reply.set_cookie_for("auth-token").is_none(),
        "{:?}",
        reply.headers
    );
    assert_eq!(scene.api.refresh_calls(), 0);
}

#[actix_web::test]
async fn concurrent_requests_across_an_expiry_share_one_refresh() {
    // Due at once after the login; the refreshed token is good for 300 s.
    let scene = Scene::start(0, 300, &[]);
    let (_, cookie) = scene.login().await;
    let login_access = scene.api.last_access();

    // The first refresh is held at the API until it has arrived, so that
    // it is in flight while the other requests come in.
    scene.api.hold_refreshes();
    let requests =
        join_all((0..CONCURRENT).map(|i| scene.get_owned(format!("/api/items/{i}"), cookie.clone())));
    let release = async {
        scene
            .api
            .until("a refresh at the gate", |api| api.waiting_refreshes() >= 1)
            .await;
        scene.api.release_refreshes();
    };
    let (replies, ()) = join(requests, release).await;

    let calls = scene.api.refresh_calls();
    println!("refresh calls at the API for {CONCURRENT} concurrent requests: {calls}");
    assert_eq!(calls, 1, "one refresh for the whole session");
    let access = scene.api.last_access();
    assert_ne!(access, login_access);
    for (i, reply) in replies.iter().enumerate() {
        scene.assert_served_with(reply, &access, &format!("request {i}"));
        new_cookie(reply, &format!("request {i}"));
    }
    let items: Vec<_> = scene
        .api
        .seen()
        .into_iter()
        .filter(|s| s.path.starts_with("/items/"))
        .collect();
    assert_eq!(items.len(), CONCURRENT);
    assert!(
        items.iter().all(|s| s.token.as_deref() == Some(access.as_str())),
        "every request went upstream with the new access token"
    );
    assert_eq!(scene.api.replays(), 0);

    assert_eq!(scene.refreshes("ok").await, 1.0);
    assert_eq!(scene.refreshes("reused").await, (CONCURRENT - 1) as f64);
    assert_eq!(scene.refreshes("refused").await, 0.0);
    assert_eq!(scene.refreshes("failed").await, 0.0);
}

#[actix_web::test]
async fn the_old_cookie_within_the_reuse_window_gets_the_kept_result() {
    let scene = Scene::start(0, 300, &[]);
    let (_, old) = scene.login().await;
    let first_refresh = scene.api.last_refresh();

    let reply = scene.get("/api/me", &old).await;
    let access = scene.api.last_access();
    scene.assert_served_with(&reply, &access, "the first request after expiry");
    let renewed = new_cookie(&reply, "the first request after expiry");
    assert_eq!(scene.api.refresh_calls(), 1);
    // The refresh request: the refresh token in the body, nothing else.
    let call = &scene.api.seen_at("/refresh")[0];
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&call.body).unwrap(),
        json!({"refreshToken": first_refresh})
    );
    assert_eq!(call.token, None, "no access token on the refresh call");
    assert!(!call.cookie, "no cookie on the refresh call");

    // A request that left the browser before the new cookie arrived.
    let late = scene.get("/api/me", &old).await;
    scene.assert_served_with(&late, &access, "the old cookie within the window");
    new_cookie(&late, "the old cookie within the window");
    assert_eq!(scene.api.refresh_calls(), 1, "the kept result, no new refresh");

    // The session reads the refreshed token's expiry.
    let before = unix_now();
    let session = scene.get("/api/session", &renewed).await.json();
    let after = unix_now();
    assert_eq!(session["refreshable"], true, "{session}");
    let expires_at = session["expiresAt"].as_u64().expect("expiresAt");
    assert!(
        (before + 300 - 5..=after + 300).contains(&expires_at),
        "expiresAt {expires_at} should be the refresh's expiresIn (300 s) from now ({before})"
    );

    // The new cookie needs no refresh at all.
    let reply = scene.get("/api/me", &renewed).await;
    scene.assert_served_with(&reply, &access, "the new cookie");
    assert!(
        reply.set_cookie_for("auth-token").is_none(),
        "{:?}",
        reply.headers
    );
    assert_eq!(scene.api.refresh_calls(), 1);
    assert_eq!(scene.api.replays(), 0);
    assert_eq!(scene.refreshes("reused").await, 1.0);
}

#[actix_web::test]
async fn without_a_reuse_window_the_old_cookie_replays_and_ends_the_login() {
    let scene = Scene::start(0, 300, &[("TOKENJAR_REFRESH__REUSE_WINDOW_S", "0")]);
    let (_, old) = scene.login().await;

    let reply = scene.get("/api/me", &old).await;
    let access = scene.api.last_access();
    scene.assert_served_with(&reply, &access, "the first request after expiry");
    let renewed = new_cookie(&reply, "the first request after expiry");

    // Nothing kept: the spent refresh token goes to the API again, which
    // reads it as theft and revokes everything of this login.
    let late = scene.get("/api/me", &old).await;
    assert_session_ended(&late, "the old cookie");
    assert_eq!(scene.api.refresh_calls(), 2);
    assert_eq!(scene.api.replays(), 1);
    assert!(scene.api.is_revoked(&access));

    // So the browser's newest cookie is worthless too: its access token is
    // refused, and its refresh token as well.
    let reply = scene.browser_get("/api/me", &renewed, "");
    assert_session_ended(&reply, "the new cookie after the replay");
    assert_eq!(scene.api.refresh_calls(), 3);
    let me: Vec<_> = scene.api.seen_at("/me");
    assert_eq!(
        me.last().and_then(|s| s.token.clone()).as_deref(),
        Some(access.as_str()),
        "the new cookie's access token was tried first"
    );
    assert_eq!(scene.refreshes("refused").await, 2.0);
}

#[actix_web::test]
async fn a_get_refused_with_401_is_refreshed_and_retried_once_a_post_is_not() {
    // Long-lived tokens: tokenjar sees no reason to refresh ahead.
    let scene = Scene::start(3600, 3600, &[]);
    let (_, cookie) = scene.login().await;
    let first = scene.api.last_access();
    scene.api.refuse_access(&first);

    let reply = scene.browser_get("/api/me", &cookie, "");
    let second = scene.api.last_access();
    assert_ne!(
        first,
        second,
        "no refresh after the API's 401: tokenjar answered {} {:?}; the API saw {:?}",
        reply.status,
        reply.text(),
        scene.api.seen()
    );
    scene.assert_served_with(&reply, &second, "GET after a 401");
    let renewed = new_cookie(&reply, "GET after a 401");
    assert_eq!(scene.api.refresh_calls(), 1);
    let tokens: Vec<_> = scene.api.seen_at("/me").into_iter().map(|s| s.token).collect();
    assert_eq!(
        tokens,
        [Some(first), Some(second.clone())],
        "sent, refreshed, sent again"
    );

    // A POST may have had effects: its 401 passes through as it is.
    scene.api.refuse_access(&second);
    let reply = scene.post("/api/things", &renewed).await;
    assert_eq!(reply.status, 401, "{}", reply.text());
    assert_eq!(reply.json(), json!({"error": "invalid_token"}));
    assert!(
        reply.set_cookie_for("auth-token").is_none(),
        "{:?}",
        reply.headers
    );
    assert_eq!(scene.api.refresh_calls(), 1, "no refresh for a POST");
    assert_eq!(
        scene.api.seen_at("/things").len(),
        1,
        "the POST was not sent again"
    );
}

#[actix_web::test]
async fn a_get_is_retried_only_once() {
    let scene = Scene::start(3600, 3600, &[]);
    let (_, cookie) = scene.login().await;

    // Refused before the refresh and after it: the second 401 is the
    // answer, not a reason for another refresh.
    scene.api.refuse_every_access(true);
    let reply = scene.browser_get("/api/me", &cookie, "");
    assert_eq!(reply.status, 401, "{}", reply.text());
    assert_eq!(reply.json(), json!({"error": "invalid_token"}));
    assert_eq!(scene.api.refresh_calls(), 1);
    let tokens: Vec<_> = scene.api.seen_at("/me").into_iter().map(|s| s.token).collect();
    assert_eq!(tokens.len(), 2, "sent, refreshed, sent once more: {tokens:?}");
    assert_ne!(tokens[0], tokens[1], "the retry carried the new access token");
    // The refresh itself worked: its tokens are the session's now.
    new_cookie(&reply, "the retried GET");
}

#[actix_web::test]
async fn a_get_with_content_length_0_is_retried_too() {
    // awc, curl with -d '' and several HTTP libraries send this on a GET;
    // the body is empty, so the request can be sent again as it was.
    let scene = Scene::start(3600, 3600, &[]);
    let (_, cookie) = scene.login().await;
    let first = scene.api.last_access();
    scene.api.refuse_access(&first);

    let reply = scene.browser_get("/api/me", &cookie, "Content-Length: 0\r\n");
    assert_eq!(
        scene.api.refresh_calls(),
        1,
        "no refresh after the API's 401: tokenjar answered {} {:?}",
        reply.status,
        reply.text()
    );
    scene.assert_served_with(&reply, &scene.api.last_access(), "GET after a 401");
    new_cookie(&reply, "GET after a 401");
}

#[actix_web::test]
async fn a_refused_refresh_ends_the_session() {
    let scene = Scene::start(0, 300, &[]);
    let (_, cookie) = scene.login().await;
    scene.api.revoke_family(&scene.api.last_refresh());

    let reply = scene.get("/api/me", &cookie).await;
    assert_session_ended(&reply, "a revoked refresh token");
    assert_eq!(scene.api.refresh_calls(), 1);
    assert!(
        scene.api.seen_at("/me").is_empty(),
        "the request never went upstream"
    );
    assert_eq!(scene.refreshes("refused").await, 1.0);
}

#[actix_web::test]
async fn an_api_down_during_refresh_keeps_the_session_for_a_later_try() {
    let scene = Scene::start(0, 300, &[]);
    let (_, cookie) = scene.login().await;

    scene.api.set_down(true);
    for attempt in 1..=2 {
        let reply = scene.get("/api/me", &cookie).await;
        reply.assert_error(502, "upstream_unavailable");
        assert!(
            reply.set_cookie_for("auth-token").is_none(),
            "attempt {attempt}: the cookie must be kept: {:?}",
            reply.headers
        );
    }
    assert_eq!(scene.api.refresh_calls(), 2, "each request tried again");

    scene.api.set_down(false);
    let reply = scene.get("/api/me", &cookie).await;
    scene.assert_served_with(&reply, &scene.api.last_access(), "the API back");
    new_cookie(&reply, "the API back");
    assert_eq!(scene.api.refresh_calls(), 3);
    assert_eq!(scene.api.replays(), 0);
    assert_eq!(scene.refreshes("failed").await, 2.0);
    assert_eq!(scene.refreshes("ok").await, 1.0);
}

#[actix_web::test]
async fn logout_tells_the_revoke_path_the_refresh_token() {
    let scene = Scene::start(300, 300, &[("TOKENJAR_REFRESH__REVOKE_PATH", "/revoke")]);
    let (_, cookie) = scene.login().await;
    let refresh = scene.api.last_refresh();

    let reply = scene.app.logout(Some(&cookie)).await;
    assert_no_tokens(&reply, &scene.api, "logout");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let set = reply.set_cookie_for("auth-token").expect("the cookie deleted");
    assert_eq!(set.max_age(), Some(0), "{}", set.raw);

    assert_eq!(scene.api.revocations(), std::slice::from_ref(&refresh));
    let call = &scene.api.seen_at("/revoke")[0];
    assert_eq!(call.method, "POST");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&call.body).unwrap(),
        json!({"refreshToken": refresh})
    );
    assert_eq!(call.token, None, "no access token on the revocation");
    assert!(!call.cookie, "no cookie on the revocation");
    assert!(scene.api.is_revoked(&refresh));
}

#[actix_web::test]
async fn logout_without_a_revoke_path_tells_the_api_nothing() {
    let scene = Scene::start(300, 300, &[]);
    let (_, cookie) = scene.login().await;

    let reply = scene.app.logout(Some(&cookie)).await;
    assert_no_tokens(&reply, &scene.api, "logout");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let paths: Vec<_> = scene.api.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(paths, ["/login"], "only the login reached the API");
}
