//! End-to-end tests of the web app served on the API's own origin
//! (`frontend.dir`, `frontend.url`) and of the bearer token on `/metrics`
//! (`ops.metrics_token`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use tokenjar_e2e::{spawn_app, RecordingApi, TempDir};

fn site() -> TempDir {
    let dir = TempDir::new("site");
    std::fs::create_dir_all(dir.path().join("assets")).unwrap();
    dir.write("index.html", "<!doctype html><title>app</title>");
    dir.write("assets/app.js", "console.log('app');");
    dir
}

#[actix_web::test]
async fn a_frontend_folder_is_served_with_app_routes_falling_back_to_index() {
    let api = RecordingApi::start();
    let dir = site();
    let folder = dir.path().to_str().unwrap().to_owned();
    let app = spawn_app(&api.url("/v1"), &[("TOKENJAR_FRONTEND__DIR", &folder)]);

    let index = app.send("GET", "/", &[], Bytes::new()).await;
    assert_eq!(index.status, 200);
    assert!(index.text().contains("<title>app</title>"));
    assert!(index.header("content-type").unwrap().starts_with("text/html"));

    let script = app.send("GET", "/assets/app.js", &[], Bytes::new()).await;
    assert_eq!(script.status, 200);
    assert_eq!(script.text(), "console.log('app');");

    // A route of the single-page app, not a file: the app's index.
    let route = app.send("GET", "/users/7", &[], Bytes::new()).await;
    assert_eq!(route.status, 200);
    assert!(route.text().contains("<title>app</title>"));

    app.send("GET", "/assets/missing.js", &[], Bytes::new())
        .await
        .assert_error(404, "not_found");
    app.send("POST", "/", &[], Bytes::new())
        .await
        .assert_error(403, "csrf");
    app.send("POST", "/", &[("x-csrf", "1")], Bytes::new())
        .await
        .assert_error(405, "method_not_allowed");
    let escape = app.raw("GET /assets/../../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    escape.assert_error(400, "bad_request");

    // The API is still the API.
    assert_eq!(app.get_api("/api/echo", None).await.status, 200);
    assert!(api.requests().iter().all(|r| r.target.starts_with("/v1")));
}

#[actix_web::test]
async fn a_frontend_server_gets_every_non_api_request_without_cookies_or_token() {
    let api = RecordingApi::start();
    let web = RecordingApi::start();
    let app = spawn_app(&api.url("/v1"), &[("TOKENJAR_FRONTEND__URL", &web.url(""))]);
    let cookie = app.login_cookie().await;

    let page = app
        .send(
            "GET",
            "/dashboard?tab=2",
            &[
                ("cookie", &format!("{cookie}; theme=dark")),
                ("auth-token", "forged"),
            ],
            Bytes::new(),
        )
        .await;
    assert_eq!(page.status, 200);
    let seen = web.last_request();
    assert_eq!(
        seen.target, "/dashboard?tab=2",
        "the path goes as it is, no prefix stripped"
    );
    assert!(
        seen.header("cookie").is_none(),
        "cookies must not reach the web app"
    );
    assert!(seen.header("auth-token").is_none(), "no token for the web app");
    assert!(seen.header("x-forwarded-host").is_some());

    // Unsafe methods are CSRF-checked like every tokenjar route.
    app.send("POST", "/form", &[], Bytes::new())
        .await
        .assert_error(403, "csrf");
    let posted = app.send("POST", "/form", &[("x-csrf", "1")], "a=1").await;
    assert_eq!(posted.status, 200);
    assert_eq!(web.last_request().body, b"a=1");

    // API calls still go to the API, with the token; the web app never sees them.
    let before = web.requests().len();
    assert_eq!(app.get_api("/api/echo", Some(&cookie)).await.status, 200);
    assert!(api.last_request().header("auth-token").is_some());
    assert_eq!(web.requests().len(), before);
}

#[actix_web::test]
async fn a_metrics_token_guards_metrics_but_not_the_probes() {
    let api = RecordingApi::start();
    let app = spawn_app(&api.url(""), &[("TOKENJAR_OPS__METRICS_TOKEN", "s3cret-metrics")]);

    let anonymous = app.send("GET", "/metrics", &[], Bytes::new()).await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.json()["error"], "unauthorized");
    assert_eq!(anonymous.header("www-authenticate"), Some("Bearer"));
    assert!(!anonymous.text().contains("tokenjar_requests_total"));
    let wrong = app
        .send(
            "GET",
            "/metrics",
            &[("authorization", "Bearer s3cret-metricz")],
            Bytes::new(),
        )
        .await;
    assert_eq!(wrong.status, 401);
    let right = app
        .send(
            "GET",
            "/metrics",
            &[("authorization", "Bearer s3cret-metrics")],
            Bytes::new(),
        )
        .await;
    assert_eq!(right.status, 200);
    assert!(right.text().contains("tokenjar_requests_total"));

    assert_eq!(app.send("GET", "/healthz", &[], Bytes::new()).await.status, 200);
    assert_eq!(app.send("GET", "/readyz", &[], Bytes::new()).await.status, 200);
    assert!(
        app.logs().iter().all(|line| !line.contains("s3cret-metrics")),
        "the metrics token must not be logged"
    );
}

/// A folder's dotfiles and dot-folders (`.env`, `.git/`) are never served,
/// however the path is spelled; `/.well-known/` is.
#[actix_web::test]
async fn hidden_files_of_the_frontend_folder_are_never_served() {
    let api = RecordingApi::start();
    let dir = site();
    dir.write(".env", "DATABASE_PASSWORD=hunter2");
    std::fs::create_dir_all(dir.path().join(".git")).unwrap();
    dir.write(".git/config", "[remote] url = secret");
    std::fs::create_dir_all(dir.path().join(".well-known")).unwrap();
    dir.write(".well-known/security.txt", "Contact: mailto:security@example.com");
    let dir_setting = dir.path().display().to_string();
    let app = spawn_app(&api.url(""), &[("TOKENJAR_FRONTEND__DIR", dir_setting.as_str())]);

    for path in [
        "/.env",
        "/%2eenv",
        "/.git/config",
        "/.git/",
        "/assets/../.env",
        "/.well-known/../.env",
    ] {
        let reply = app.send("GET", path, &[], Bytes::new()).await;
        assert!(
            !reply.text().contains("hunter2") && !reply.text().contains("secret"),
            "{path} served a hidden file: {} {}",
            reply.status,
            reply.text()
        );
        assert_ne!(reply.status, 200, "{path}");
    }
    let reply = app
        .send("GET", "/.well-known/security.txt", &[], Bytes::new())
        .await;
    assert_eq!(reply.status, 200);
    assert!(reply.text().contains("Contact:"));
}

/// With `ops.listen`, `/metrics` and the probes answer on their own port,
/// which serves nothing else; the public port keeps the probes but serves
/// no `/metrics`.
#[actix_web::test]
async fn an_operator_listener_takes_metrics_off_the_public_port() {
    let api = RecordingApi::start();
    let app = spawn_app(&api.url(""), &[("TOKENJAR_OPS__LISTEN", "127.0.0.1:0")]);
    assert!(
        app.wait_for_log(
            "metrics and probes on http://",
            std::time::Duration::from_secs(10)
        ),
        "no log line names the operator listener: {:?}",
        app.logs()
    );
    let line = app
        .logs()
        .into_iter()
        .find(|l| l.contains("metrics and probes on http://"))
        .unwrap();
    let port: String = line
        .rsplit(':')
        .next()
        .unwrap()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let ops = format!("http://127.0.0.1:{port}");
    let client = app.client();
    let get = |url: String| {
        let client = client.clone();
        async move {
            let mut res = client.get(url).send().await.unwrap();
            let body = res.body().await.unwrap();
            (res.status().as_u16(), String::from_utf8_lossy(&body).into_owned())
        }
    };

    let (status, text) = get(format!("{ops}/metrics")).await;
    assert_eq!(status, 200);
    assert!(text.contains("tokenjar_csrf_refused_total"), "{text}");
    assert_eq!(get(format!("{ops}/healthz")).await.0, 200);
    assert_eq!(get(format!("{ops}/readyz")).await.0, 200);
    // (The readiness probe itself calls the API.)
    let before = api.requests().len();
    let (status, _) = get(format!("{ops}/api/echo")).await;
    assert_eq!(status, 404, "the operator port serves no API");
    assert_eq!(api.requests().len(), before, "the operator port reached the API");

    let public = app.send("GET", "/metrics", &[], Bytes::new()).await;
    assert_ne!(public.status, 200);
    assert!(!public.text().contains("tokenjar_csrf_refused_total"));
    assert_eq!(app.send("GET", "/healthz", &[], Bytes::new()).await.status, 200);
}
