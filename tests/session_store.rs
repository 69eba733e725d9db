//! Server-side sessions end to end (SPEC §17): `session.store = "memory"`
//! (and `"redis"`, against a real `redis-server`): the cookie holds only a
//! sealed id, logout ends the session at once so a copied cookie dies with
//! it, a 10 KB token still takes one small cookie, and the stateless
//! cookie store, by contrast, keeps a copied cookie alive.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use futures_util::future::{join, join_all};
use serde_json::json;
use tokenjar_e2e::api::CannedReply;
use tokenjar_e2e::external::{find_program, programs_or_skip};
use tokenjar_e2e::metrics::metric_sum;
use tokenjar_e2e::nginx::Nginx;
use tokenjar_e2e::raw_request;
use tokenjar_e2e::redis::RedisServer;
use tokenjar_e2e::refresh_api::{assert_no_tokens, RefreshApi, REFRESH_ENV};
use tokenjar_e2e::{setup_with, RecordingApi, Reply, TestApp};

const MEMORY: &[(&str, &str)] = &[("TOKENJAR_SESSION__STORE", "memory")];

/// How many requests of one session cross the expiry at once.
const CONCURRENT: usize = 50;

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

/// tokenjar's settings for sessions in `redis`.
fn redis_env(redis: &RedisServer) -> Vec<(String, String)> {
    vec![
        ("TOKENJAR_SESSION__STORE".to_owned(), "redis".to_owned()),
        ("TOKENJAR_SESSION__REDIS_URL".to_owned(), redis.url()),
    ]
}

fn pairs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect()
}

#[actix_web::test]
async fn with_redis_a_copied_cookie_dies_with_the_logout() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    a_copied_cookie_dies_with_the_logout(&pairs(&redis_env(&redis))).await;
}

/// What tokenjar leaves in Redis: every key under the prefix and with an
/// expiry, and no token anywhere in it, keys or values (SPEC §17).
#[actix_web::test]
async fn redis_holds_no_token_in_clear_and_every_key_expires() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (api, app) = setup_with(&pairs(&redis_env(&redis)));
    let tokens = ["tok-redis-first-0123456789", "tok-redis-second-0123456789"];
    let mut cookies = Vec::new();
    for token in tokens {
        cookies.push(log_in(&api, &app, token).await.0);
    }
    app.get_api("/api/echo", Some(&cookies[0])).await;
    assert_eq!(token_seen(&api), [tokens[0]]);

    let keys = redis.keys();
    let sessions: Vec<&String> = keys
        .iter()
        .filter(|k| k.starts_with("tokenjar:session:"))
        .collect();
    assert_eq!(sessions.len(), 2, "{keys:?}");
    for key in &keys {
        assert!(key.starts_with("tokenjar:"), "{key}");
        let ttl = redis.pttl(key);
        assert!(ttl > 0, "{key} has no expiry ({ttl})");
        let stored = format!("{key} {}", redis.contents(key));
        for token in tokens {
            assert!(!stored.contains(token), "{token} in clear in {stored}");
        }
        // The cookie holds the id, sealed: not the key's name in clear.
        for cookie in &cookies {
            let id = key.rsplit(':').next().unwrap_or_default();
            assert!(!cookie.contains(id), "the id in clear in {cookie}");
        }
    }
}

/// Hostile values in Redis (SPEC §17): a session key overwritten with a
/// truncated blob, another session's value, garbage or nothing counts as
/// no session: the request goes on without a token, the cookie is deleted,
/// tokenjar stays up.
#[actix_web::test]
async fn hostile_values_in_redis_count_as_no_session() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (api, mut app) = setup_with(&pairs(&redis_env(&redis)));
    let (cookie, _) = log_in(&api, &app, "tok-hostile-0123456789").await;
    let key = redis
        .keys()
        .into_iter()
        .find(|k| k.starts_with("tokenjar:session:"))
        .expect("a session key");
    let sealed = redis.contents(&key);
    let sealed = sealed.trim_end();
    for hostile in [
        &sealed[..sealed.len() / 2],
        "not a sealed value",
        "",
        "0:tok-forged",
    ] {
        redis.cli(&["SET", &key, hostile, "EX", "60"]).unwrap();
        let reply = app.get_api("/api/echo", Some(&cookie)).await;
        assert_eq!(reply.status, 200, "{hostile:?}: {}", reply.text());
        assert!(token_seen(&api).is_empty(), "{hostile:?} gave a token");
        assert!(
            reply
                .set_cookie_for("auth-token")
                .is_some_and(|c| c.max_age() == Some(0)),
            "{hostile:?}: the cookie is deleted"
        );
    }
    assert!(app.exit_status().is_none(), "{}", app.logs().join("\n"));
}

/// Two instances behind nginx's round robin, sharing Redis (SPEC §17): a
/// login through the balancer lands on one, the calls after it on both,
/// each with the session; the logout lands on one and ends the session on
/// both.
#[actix_web::test]
async fn two_instances_behind_nginx_share_sessions_through_redis() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let found = vec![find_program("nginx", &["/usr/sbin/nginx"])];
    let Some(nginx) = programs_or_skip(found, "nginx", "apt-get install nginx") else {
        return;
    };
    let env = redis_env(&redis);
    let (api, one) = setup_with(&pairs(&env));
    let two = tokenjar_e2e::spawn_app(&api.url("/v1"), &pairs(&env));
    let lb = Nginx::start(&nginx[0], one.address, two.address);
    let send = |head: &str, extra: &str, body: &str| {
        let host = lb.addr();
        raw_request(
            host,
            format!(
                "{head} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{extra}Content-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
    };
    let token = "tok-balanced-0123456789";
    api.push_login_reply(CannedReply::json(200, &json!({ "authToken": token })));
    let login = send(
        "POST /api/login",
        "Content-Type: application/json\r\nx-csrf: 1\r\n",
        r#"{"username":"demo","password":"demo"}"#,
    );
    assert_eq!(login.status, 200, "{}", login.text());
    let cookie = login.set_cookie_for("auth-token").unwrap().pair();
    let with_cookie = format!("Cookie: {cookie}\r\n");

    for i in 0..4 {
        let reply = send("GET /api/echo", &with_cookie, "");
        assert_eq!(reply.status, 200, "call {i}: {}", reply.text());
        assert_eq!(token_seen(&api), [token], "call {i}");
    }
    // Both instances served the session.
    for app in [&one, &two] {
        let metrics = app.get_api("/metrics", None).await.text();
        let calls = metric_sum(&metrics, "tokenjar_requests_total", &[("route", "api")]);
        assert!(calls >= 2.0, "{calls} API calls at one instance:\n{metrics}");
    }

    let logout = send("POST /api/logout", &format!("{with_cookie}x-csrf: 1\r\n"), "");
    assert_eq!(logout.status, 200, "{}", logout.text());
    for i in 0..2 {
        let reply = send("GET /api/echo", &with_cookie, "");
        assert_eq!(reply.status, 200, "after logout {i}: {}", reply.text());
        assert!(
            token_seen(&api).is_empty(),
            "after logout {i}: a token reached the API"
        );
    }
}

/// Redis stopped under tokenjar (SIGSTOP: it takes connections and never
/// answers, the worst case) then going on (SIGCONT): while it is stopped,
/// requests with a session and `/readyz` answer 503 (and requests without
/// a session are proxied), without a restart of tokenjar; after, the same
/// session works again. Then killed under load and started again, empty.
/// tokenjar holds no more descriptors than before either outage.
#[actix_web::test]
async fn a_stopped_redis_gives_503s_until_it_answers_again() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let (api, mut app) = setup_with(&pairs(&redis_env(&redis)));
    let (cookie, _) = log_in(&api, &app, "tok-outage-0123456789").await;
    assert_eq!(app.get_api("/api/echo", Some(&cookie)).await.status, 200);
    assert_eq!(app.get_api("/readyz", None).await.status, 200);
    let fds = app.fd_count();

    let pid = redis.pid().unwrap();
    tokenjar_e2e::external::send_signal(pid, "STOP", false);
    for _ in 0..3 {
        app.get_api("/api/echo", Some(&cookie))
            .await
            .assert_error(503, "session_store_unavailable");
    }
    let ready = app.get_api("/readyz", None).await;
    assert_eq!(ready.status, 503);
    assert_eq!(
        ready.json()["error"],
        "session_store_unavailable",
        "{}",
        ready.text()
    );
    assert_eq!(
        app.get_api("/api/echo", None).await.status,
        200,
        "no session: proxied"
    );
    let metrics = app.get_api("/metrics", None).await.text();
    assert!(
        metric_sum(&metrics, "tokenjar_session_store_errors_total", &[]) >= 3.0,
        "{metrics}"
    );

    tokenjar_e2e::external::send_signal(pid, "CONT", false);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let reply = app.get_api("/api/echo", Some(&cookie)).await;
        if reply.status == 200 {
            break;
        }
        assert_eq!(reply.status, 503, "{}", reply.text());
        assert!(std::time::Instant::now() < deadline, "never back");
    }
    assert_eq!(token_seen(&api), ["tok-outage-0123456789"], "the same session");
    assert_eq!(app.get_api("/readyz", None).await.status, 200);

    // Then Redis dies (SIGKILL) under a load of 20 requests at a time, and
    // comes back on the same port, empty (no persistence): 503s while it
    // is down; once it answers, the old cookie finds no session (proxied
    // without a token, cookie deleted) and a new login works, all without
    // a restart of tokenjar.
    let rss = app.rss_kib();
    redis.stop();
    let burst = join_all((0..20).map(|_| app.get_api("/api/echo", Some(&cookie)))).await;
    for reply in &burst {
        reply.assert_error(503, "session_store_unavailable");
    }
    assert_eq!(app.get_api("/readyz", None).await.status, 503);
    redis.restart();
    let restarted = std::time::Instant::now();
    while app.get_api("/readyz", None).await.status != 200 {
        assert!(
            restarted.elapsed() < std::time::Duration::from_secs(10),
            "never ready again"
        );
    }
    println!(
        "ready again {} ms after Redis answered",
        restarted.elapsed().as_millis()
    );
    let lost = app.get_api("/api/echo", Some(&cookie)).await;
    assert_eq!(lost.status, 200, "{}", lost.text());
    assert!(token_seen(&api).is_empty());
    assert!(lost
        .set_cookie_for("auth-token")
        .is_some_and(|c| c.max_age() == Some(0)));
    let (fresh, _) = log_in(&api, &app, "tok-after-restart-0123456789").await;
    assert_eq!(app.get_api("/api/echo", Some(&fresh)).await.status, 200);
    assert_eq!(token_seen(&api), ["tok-after-restart-0123456789"]);
    assert!(app.exit_status().is_none(), "{}", app.logs().join("\n"));

    let after = app.wait_fds_at_most(fds + 2, std::time::Duration::from_secs(5));
    assert!(after <= fds + 2, "{after} descriptors, {fds} before the outages");
    println!("RSS {} KiB before the restart, {} KiB after", rss, app.rss_kib());
}

/// SPEC §17, the issue's two-instance test: 50 concurrent requests of one
/// session across an access-token expiry, alternating between two
/// instances that share Redis, in front of an API that rotates refresh
/// tokens and ends the login on a replay: exactly one refresh call, no
/// replay, every request served with the new access token.
#[actix_web::test]
async fn fifty_requests_on_two_instances_sharing_redis_make_one_refresh() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    // Due at once after the login; the refreshed token is good for 300 s.
    let api = RefreshApi::start(0, 300);
    let mut env: Vec<(String, String)> = REFRESH_ENV
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect();
    env.extend(redis_env(&redis));
    let instances = [
        tokenjar_e2e::spawn_app(&api.url(""), &pairs(&env)),
        tokenjar_e2e::spawn_app(&api.url(""), &pairs(&env)),
    ];
    let login = instances[0].login("demo", "demo").await;
    assert_eq!(login.status, 200, "{}", login.text());
    let cookie = login.set_cookie_for("auth-token").unwrap().pair();
    let login_access = api.last_access();

    // The first refresh is held at the API until it has arrived, so that
    // it is in flight while the other requests come in on both instances.
    api.hold_refreshes();
    let requests = join_all((0..CONCURRENT).map(|i| {
        let app = &instances[i % 2];
        let cookie = cookie.clone();
        async move { app.get_api(&format!("/api/items/{i}"), Some(&cookie)).await }
    }));
    let release = async {
        api.until("a refresh at the gate", |api| api.waiting_refreshes() >= 1)
            .await;
        api.release_refreshes();
    };
    let (replies, ()) = join(requests, release).await;

    let calls = api.refresh_calls();
    println!("refresh calls at the API for {CONCURRENT} requests on two instances: {calls}");
    assert_eq!(calls, 1, "one refresh for the whole session, across instances");
    assert_eq!(api.replays(), 0);
    let access = api.last_access();
    assert_ne!(access, login_access);
    for (i, reply) in replies.iter().enumerate() {
        assert_eq!(reply.status, 200, "request {i}: {}", reply.text());
        assert_eq!(reply.json()["token"], api.label(&access), "request {i}");
        assert_no_tokens(reply, &api, &format!("request {i}"));
    }
}
