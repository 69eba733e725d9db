//! End-to-end tests of tokenjar's https to the API (SPEC §12): the token
//! reaches an API over TLS trusted through `tls.ca_file`, mutual TLS with
//! `tls.client_cert_file`, the upstream guard still holding the API to one
//! answer per request under TLS, and an untrusted, expired or misnamed
//! certificate answered 502 with a log line that says which. Every
//! certificate comes from a CA made at test time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

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
    }
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
    let extra = [
        (
            "TOKENJAR_TLS__CLIENT_CERT_FILE",
            files.put("client.pem", &client.cert_pem),
        ),
        (
            "TOKENJAR_TLS__CLIENT_KEY_FILE",
            files.put("client-key.pem", &client.key_pem),
        ),
    ];
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
