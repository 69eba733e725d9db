//! End-to-end tests of tokenjar's https to the API (SPEC §12): the token
//! reaches an API over TLS trusted through `tls.ca_file`, mutual TLS with
//! `tls.client_cert_file`, the upstream guard still holding the API to one
//! answer per request under TLS, an untrusted, expired or misnamed
//! certificate answered 502 with a log line that says which, and HTTP/2 to
//! an API that offers it (requests, login, uploads and downloads streamed,
//! one shared connection, a cut stream passed on cut), HTTP/1.1 to one
//! that does not. Every certificate comes from a CA made at test time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use tokenjar_e2e::pattern::{chunks, PatternCheck, CHUNK_LEN};
use tokenjar_e2e::pki::{IssuedCert, TestCa, Validity};
use tokenjar_e2e::{spawn_app, tokenjar_bin, RawUpstream, RecordingApi, TempDir, TestApp, KEY_1};

/// How long the log line of a failed request may take to appear.
const LOG_WAIT: Duration = Duration::from_secs(10);

/// A folder of PEM files for the `[tls]` settings.
struct Files {
    dir: TempDir,
}

impl Files {
    fn new() -> Self {
        Self {
            dir: TempDir::new("upstream-tls"),
        }
    }

    fn put(&self, name: &str, contents: &str) -> String {
        self.dir.write(name, contents);
        self.dir.path().join(name).display().to_string()
    }

    /// The settings that make tokenjar present `client` (mutual TLS).
    fn client_cert(&self, client: &IssuedCert) -> [(&'static str, String); 2] {
        [
            (
                "TOKENJAR_TLS__CLIENT_CERT_FILE",
                self.put("client.pem", &client.cert_pem),
            ),
            (
                "TOKENJAR_TLS__CLIENT_KEY_FILE",
                self.put("client-key.pem", &client.key_pem),
            ),
        ]
    }
}

/// tokenjar in front of `url`, trusting `ca` through `tls.ca_file`, with
/// `extra` settings besides.
fn tokenjar_trusting(ca: &TestCa, files: &Files, url: &str, extra: &[(&str, String)]) -> TestApp {
    let ca_file = files.put("ca.pem", &ca.pem);
    let mut env = vec![("TOKENJAR_TLS__CA_FILE", ca_file)];
    env.extend(extra.iter().cloned());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    spawn_app(url, &env)
}

fn https_api(cert: &IssuedCert, clients: Option<&TestCa>) -> RecordingApi {
    RecordingApi::start_tls(TestCa::server_config(cert, &[b"http/1.1"], clients))
}

/// An https API that offers HTTP/2 besides HTTP/1.1.
fn h2_api(cert: &IssuedCert, clients: Option<&TestCa>) -> RecordingApi {
    RecordingApi::start_tls(TestCa::server_config(cert, &[b"h2", b"http/1.1"], clients))
}

/// What `find` finds within 5 s; panics if nothing.
async fn wait_for<T>(mut find: impl FnMut() -> Option<T>) -> T {
    for _ in 0..500 {
        if let Some(found) = find() {
            return found;
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("not within 5 s");
}

/// `actix_web::http::Version`'s `Debug` for HTTP/2, as recorded.
const HTTP2: &str = "HTTP/2.0";
const HTTP1: &str = "HTTP/1.1";

#[actix_web::test]
async fn the_token_reaches_an_https_api_trusted_through_the_ca_file() {
    let ca = TestCa::new();
    let api = https_api(&ca.server_cert("api"), None);
    let files = Files::new();
    let app = tokenjar_trusting(&ca, &files, &api.url("/v1"), &[]);
    assert!(api.url("").starts_with("https://"));

    let cookie = app.login_cookie().await;
    let token = api.last_issued().token;
    for round in 0..3 {
        let reply = app.get_api("/api/users/7?x=1", Some(&cookie)).await;
        assert_eq!(reply.status, 200, "round {round}: {}", reply.text());
        let seen = api.last_request();
        assert_eq!(seen.target, "/v1/users/7?x=1");
        assert_eq!(seen.header_all("auth-token"), vec![token.as_str()]);
        assert_eq!(seen.header("cookie"), None, "the cookie never reaches the API");
        // The API's own name, as the URL gives it: not the port awc is
        // handed (the default port is spelt out for it).
        assert_eq!(seen.header("host"), Some(api.addr().to_string().as_str()));
        // The API offers HTTP/1.1 alone: that is what it gets.
        assert_eq!(seen.version, HTTP1);
    }
    assert!(api.requests().iter().all(|r| r.version == HTTP1));
}

#[actix_web::test]
async fn an_api_that_offers_http2_gets_http2_with_the_token_and_no_cookie() {
    let ca = TestCa::new();
    let api = h2_api(&ca.server_cert("api"), None);
    let files = Files::new();
    let app = tokenjar_trusting(&ca, &files, &api.url("/v1"), &[]);

    // The login over HTTP/2: its answer is read whole, the token moved
    // into the cookie.
    let cookie = app.login_cookie().await;
    let token = api.last_issued().token;
    assert!(!cookie.contains(&token), "the cookie is sealed");
    let login = api.last_request();
    assert_eq!(login.version, HTTP2);
    assert_eq!(login.method, "POST");
    assert_eq!(login.target, "/v1/login");

    for round in 0..3 {
        let reply = app.get_api("/api/users/7?x=1", Some(&cookie)).await;
        assert_eq!(reply.status, 200, "round {round}: {}", reply.text());
        assert_eq!(
            reply.header("x-upstream"),
            Some("yes"),
            "the API's own headers come back"
        );
        assert_eq!(reply.json()["target"], "/v1/users/7?x=1");
        let seen = api.last_request();
        assert_eq!(seen.version, HTTP2, "round {round}");
        assert_eq!(seen.target, "/v1/users/7?x=1");
        assert_eq!(seen.header_all("auth-token"), vec![token.as_str()]);
        assert_eq!(seen.header("cookie"), None, "the cookie never reaches the API");
        for hop in ["connection", "keep-alive", "transfer-encoding", "upgrade"] {
            assert_eq!(seen.header(hop), None, "{hop}");
        }
    }
    // The readiness probe asks the API over HTTP/2 too.
    let _ = app.get_api("/readyz", None).await;
    assert!(api.requests().iter().all(|r| r.version == HTTP2));
    // Session, API status and errors as over HTTP/1.1.
    let reply = app.get_api("/api/status/404", Some(&cookie)).await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.header("x-upstream"), Some("yes"));
}

#[actix_web::test]
async fn uploads_and_downloads_stream_whole_over_http2() {
    let ca = TestCa::new();
    let api = h2_api(&ca.server_cert("api"), None);
    let files = Files::new();
    let app = tokenjar_trusting(&ca, &files, &api.url("/v1"), &[]);
    let cookie = app.login_cookie().await;
    let client = app.client();
    let mib = 1024 * 1024;

    // 1 MiB with a Content-Length, then as a chunked stream of unknown
    // length: both past the read-whole buffer, so streamed to the API.
    let sized: Vec<u8> = chunks(mib).flat_map(|c| c.to_vec()).collect();
    let mut res = client
        .post(app.url("/api/upload"))
        .insert_header(("x-csrf", "1"))
        .insert_header(("cookie", cookie.as_str()))
        .send_body(Bytes::from(sized))
        .await
        .unwrap();
    let answer: serde_json::Value = res.json().await.unwrap();
    assert_eq!(res.status().as_u16(), 200, "{answer}");
    assert_eq!(answer["received"], mib);
    assert_eq!(answer["intact"], true);
    let seen = api.last_request();
    assert_eq!(seen.version, HTTP2);
    assert_eq!(seen.header("content-length"), Some(mib.to_string().as_str()));
    assert!(seen.body_complete);

    let stream = futures_util::stream::iter(chunks(mib + 17).map(Ok::<_, std::io::Error>));
    let mut res = client
        .post(app.url("/api/upload"))
        .insert_header(("x-csrf", "1"))
        .insert_header(("cookie", cookie.as_str()))
        .send_stream(stream)
        .await
        .unwrap();
    let answer: serde_json::Value = res.json().await.unwrap();
    assert_eq!(res.status().as_u16(), 200, "{answer}");
    assert_eq!(answer["received"], mib + 17);
    assert_eq!(answer["intact"], true);
    assert_eq!(api.last_request().version, HTTP2);
    assert_eq!(api.last_request().header("content-length"), None);

    // A few MiB back, with the API's Content-Length.
    let total = 5 * mib + 3;
    let mut res = client
        .get(app.url(&format!("/api/download/{total}")))
        .insert_header(("cookie", cookie.as_str()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(
        res.headers().get("content-length").unwrap().to_str().unwrap(),
        total.to_string()
    );
    let mut check = PatternCheck::new();
    while let Some(piece) = res.next().await {
        check.feed(&piece.unwrap());
    }
    assert_eq!(check.received(), total);
    assert!(check.intact());
    assert_eq!(api.last_request().version, HTTP2);
}

#[actix_web::test]
async fn concurrent_requests_share_one_http2_connection() {
    let ca = TestCa::new();
    let api = h2_api(&ca.server_cert("api"), None);
    let files = Files::new();
    // One worker: each worker has its own connection.
    let app = tokenjar_trusting(
        &ca,
        &files,
        &api.url("/v1"),
        &[("TOKENJAR_SERVER__WORKERS", "1".to_owned())],
    );
    // From the very first request on: the ones that come while the first
    // connection is opened wait for it.
    let paths: Vec<String> = (0..8).map(|i| format!("/api/delay/200?i={i}")).collect();
    let replies = futures_util::future::join_all(paths.iter().map(|path| app.get_api(path, None))).await;
    for reply in &replies {
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let seen = api.requests();
    assert_eq!(seen.len(), 8);
    assert!(seen.iter().all(|r| r.version == HTTP2));
    let peer = seen[0].peer;
    assert!(peer.is_some());
    assert!(
        seen.iter().all(|r| r.peer == peer),
        "one connection: {:?}",
        seen.iter().map(|r| r.peer).collect::<Vec<_>>()
    );
}

#[actix_web::test]
async fn an_http2_stream_cut_mid_body_reaches_the_browser_cut() {
    let ca = TestCa::new();
    let mut api = h2_api(&ca.server_cert("api"), None);
    let files = Files::new();
    let app = tokenjar_trusting(&ca, &files, &api.url("/v1"), &[]);
    let pieces = 4;
    api.release_gated(1);
    let mut res = app
        .client()
        .get(app.url(&format!("/api/gated/{pieces}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let mut check = PatternCheck::new();
    while check.received() < CHUNK_LEN as u64 {
        check.feed(&res.next().await.unwrap().unwrap());
    }
    assert_eq!(api.last_request().version, HTTP2);
    // The API goes away in the middle of the body: the browser gets fewer
    // bytes than the Content-Length announced, then the end of the
    // connection (awc's client, unlike a browser, reports that as a plain
    // end), never a body that looks whole.
    let announced: u64 = res
        .headers()
        .get("content-length")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(announced, pieces * CHUNK_LEN as u64);
    api.stop();
    let rest = actix_rt::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(bytes)) = res.next().await {
            check.feed(&bytes);
        }
    })
    .await;
    assert!(rest.is_ok(), "the cut body must end, not hang");
    assert!(
        check.received() < announced,
        "{} of {announced} bytes: the body must come cut",
        check.received()
    );
    assert!(
        app.wait_for_log("HTTP/2 stream failed", LOG_WAIT),
        "{:?}",
        app.logs()
    );
}

#[actix_web::test]
async fn client_certificates_work_over_http2_too() {
    let ca = TestCa::new();
    let client_ca = TestCa::new();
    let api = h2_api(&ca.server_cert("api"), Some(&client_ca));
    let files = Files::new();

    // Without a client certificate: 502. The API's alert that says why
    // often comes too late to be read (h2 writes its preface at once, and
    // the API's close resets the connection), so the log is not checked
    // for it here as it is over HTTP/1.1.
    let without = tokenjar_trusting(&ca, &files, &api.url("/v1"), &[]);
    let reply = without.get_api("/api/ping", None).await;
    reply.assert_error(502, "upstream_unavailable");
    assert!(api.requests().is_empty());

    let client = client_ca.client_cert("tokenjar");
    let extra = files.client_cert(&client);
    let with = tokenjar_trusting(&ca, &files, &api.url("/v1"), &extra);
    let reply = with.get_api("/api/ping", None).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(api.last_request().version, HTTP2);
}

#[actix_web::test]
async fn an_api_that_requires_a_client_certificate_gets_the_configured_one() {
    let ca = TestCa::new();
    let client_ca = TestCa::new();
    let api = https_api(&ca.server_cert("api"), Some(&client_ca));
    let files = Files::new();

    // Without a client certificate the API ends the handshake.
    let without = tokenjar_trusting(&ca, &files, &api.url("/v1"), &[]);
    let reply = without.get_api("/api/ping", None).await;
    reply.assert_error(502, "upstream_unavailable");
    assert!(
        without.wait_for_log("CertificateRequired", LOG_WAIT)
            && without.wait_for_log("client certificate", LOG_WAIT),
        "the log should suggest a client certificate: {:?}",
        without.logs()
    );
    assert!(api.requests().is_empty());

    // With one issued by the CA the API trusts, the call goes through.
    let client = client_ca.client_cert("tokenjar");
    let extra = files.client_cert(&client);
    let with = tokenjar_trusting(&ca, &files, &api.url("/v1"), &extra);
    let reply = with.get_api("/api/ping", None).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(api.last_request().target, "/v1/ping");
}

#[actix_web::test]
async fn an_untrusted_expired_or_misnamed_certificate_is_a_502_that_the_log_names() {
    let ca = TestCa::new();
    let stranger = TestCa::new();
    let cases = [
        ("unknown CA", stranger.server_cert("api")),
        ("has expired", ca.server_cert_with("api", &Validity::Expired)),
        (
            "not valid for the host name 127.0.0.1",
            ca.server_cert_with("api", &Validity::OtherName),
        ),
    ];
    for (why, cert) in cases {
        let api = https_api(&cert, None);
        let files = Files::new();
        let app = tokenjar_trusting(&ca, &files, &api.url("/v1"), &[]);
        let reply = app.get_api("/api/ping", None).await;
        reply.assert_error(502, "upstream_unavailable");
        assert!(
            app.wait_for_log(why, LOG_WAIT),
            "the log should say {why:?}: {:?}",
            app.logs()
        );
        assert!(
            api.requests().is_empty(),
            "{why}: nothing may be sent to that server"
        );
    }
}

#[actix_web::test]
async fn the_web_roots_alone_do_not_trust_a_private_ca() {
    let ca = TestCa::new();
    let api = https_api(&ca.server_cert("api"), None);
    let app = spawn_app(&api.url("/v1"), &[]);
    let reply = app.get_api("/api/ping", None).await;
    reply.assert_error(502, "upstream_unavailable");
    assert!(app.wait_for_log("unknown CA", LOG_WAIT), "{:?}", app.logs());
}

#[actix_web::test]
async fn interim_answers_over_tls_are_dropped_as_over_plain_http() {
    // The guard reads the API's answers inside the TLS session: an interim
    // answer before the final one is dropped, never taken as the answer.
    let ca = TestCa::new();
    let cert = ca.server_cert("api");
    let answer = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n\
HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nfinal";
    let api = RawUpstream::answering_tls(answer, TestCa::server_config(&cert, &[b"http/1.1"], None));
    let files = Files::new();
    let app = tokenjar_trusting(&ca, &files, &api.url("/v1"), &[]);
    let reply = app.get_api("/api/page", None).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), "final");
    assert!(
        api.heads()[0].starts_with("GET /v1/page HTTP/1.1\r\n"),
        "{:?}",
        api.heads()
    );
}

#[test]
fn bad_tls_files_exit_2_naming_the_key() {
    let ca = TestCa::new();
    let client = ca.client_cert("tokenjar");
    let other = ca.client_cert("other");
    let files = Files::new();
    let ca_file = files.put("ca.pem", &ca.pem);
    let garbage = files.put("garbage.pem", "not a pem file\n");
    let cert = files.put("client.pem", &client.cert_pem);
    let other_key = files.put("other-key.pem", &other.key_pem);
    let cases: [(Vec<(&str, &str)>, &str); 4] = [
        (
            vec![("TOKENJAR_TLS__CA_FILE", "/nonexistent/ca.pem")],
            "tls.ca_file",
        ),
        (vec![("TOKENJAR_TLS__CA_FILE", &garbage)], "tls.ca_file"),
        (
            vec![("TOKENJAR_TLS__CLIENT_CERT_FILE", &cert)],
            "tls.client_key_file",
        ),
        (
            vec![
                ("TOKENJAR_TLS__CA_FILE", &ca_file),
                ("TOKENJAR_TLS__CLIENT_CERT_FILE", &cert),
                ("TOKENJAR_TLS__CLIENT_KEY_FILE", &other_key),
            ],
            "tls.client_key_file",
        ),
    ];
    for (env, key) in cases {
        let cwd = TempDir::new("upstream-tls-cli");
        let mut cmd = std::process::Command::new(tokenjar_bin());
        cmd.args(["check-config", "--config-dir"])
            .arg(cwd.path())
            .current_dir(cwd.path())
            .env("TOKENJAR_COOKIE__KEYS", KEY_1)
            .envs(env.iter().copied());
        let output = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{env:?}: {stderr}");
        assert!(stderr.contains(key), "{env:?} should name {key}: {stderr}");
        assert!(
            !stderr.contains("PRIVATE KEY"),
            "a key file's contents never show: {stderr}"
        );
    }
}

#[actix_web::test]
async fn over_http2_a_slow_api_is_504_and_a_streamed_body_over_the_limit_413() {
    let ca = TestCa::new();
    let api = h2_api(&ca.server_cert("api"), None);
    let files = Files::new();
    // A small read-whole buffer, so that the body streams to the API
    // before it goes over the limit.
    let app = tokenjar_trusting(
        &ca,
        &files,
        &api.url("/v1"),
        &[
            ("TOKENJAR_UPSTREAM__TIMEOUT_MS", "300".to_owned()),
            ("TOKENJAR_SERVER__MAX_BODY_BYTES", "200000".to_owned()),
            ("TOKENJAR_SERVER__CLIENT_BODY_BUFFER_BYTES", "1024".to_owned()),
        ],
    );
    let reply = app.get_api("/api/delay/2000", None).await;
    reply.assert_error(504, "upstream_timeout");
    assert_eq!(api.last_request().version, HTTP2);

    let stream = futures_util::stream::iter(chunks(1024 * 1024).map(Ok::<_, std::io::Error>));
    let mut res = app
        .client()
        .post(app.url("/api/upload"))
        .insert_header(("x-csrf", "1"))
        .send_stream(stream)
        .await
        .unwrap();
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(res.status().as_u16(), 413, "{body}");
    assert_eq!(body["error"], "payload_too_large", "{body}");
    // tokenjar may answer before the API's handler even started: wait for
    // the upload to be recorded, and give its body time to be read.
    let upload = || api.requests().into_iter().find(|r| r.target == "/v1/upload");
    wait_for(upload).await;
    actix_rt::time::sleep(Duration::from_millis(200)).await;
    let seen = upload().unwrap();
    assert_eq!(seen.version, HTTP2);
    assert!(
        !seen.body_complete,
        "the API never gets a body cut at the limit as whole"
    );

    // The connection is still good for the next request.
    let reply = app.get_api("/api/ping", None).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

#[actix_web::test]
async fn after_the_api_restarts_http2_service_comes_back() {
    let ca = TestCa::new();
    let mut api = h2_api(&ca.server_cert("api"), None);
    let files = Files::new();
    let app = tokenjar_trusting(
        &ca,
        &files,
        &api.url("/v1"),
        &[("TOKENJAR_SERVER__WORKERS", "1".to_owned())],
    );
    let reply = app.get_api("/api/ping", None).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(api.last_request().version, HTTP2);

    // The API drops its connections and comes back on the same port: the
    // dead connection is forgotten and a new one opened. A request that
    // meets the old one while it closes (the old server's workers stop
    // on their own time) may get 502, as on HTTP/1.1; within a short
    // while every request gets 200, over HTTP/2.
    api.restart();
    let mut in_a_row = 0;
    for _ in 0..100 {
        let reply = app.get_api("/api/ping", None).await;
        if reply.status == 200 {
            in_a_row += 1;
            if in_a_row == 5 {
                break;
            }
        } else {
            reply.assert_error(502, "upstream_unavailable");
            in_a_row = 0;
            actix_rt::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(in_a_row, 5, "service must come back after the API restarted");
    let after = api.requests();
    assert!(after[after.len() - 5..].iter().all(|r| r.version == HTTP2));
}
