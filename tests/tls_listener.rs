//! End-to-end tests of tokenjar's own TLS listener (SPEC §12): https with
//! HTTP/2 and HTTP/1.1, the scheme reaching the API, certificate reload on
//! SIGHUP, stray plain-text or garbage connections, and bad certificate
//! files refused at start-up. Certificates come from a CA made at test time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use awc::http::Version;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConnection, StreamOwned};
use tokenjar_e2e::pki::{IssuedCert, TestCa};
use tokenjar_e2e::{mentions_word, spawn_app, tokenjar_bin, RecordingApi, TempDir, TestApp, KEY_1};

/// How long a log line (a reload) may take to appear.
const LOG_WAIT: Duration = Duration::from_secs(10);

/// The folder holding `cert.pem` and `key.pem`, and the variables that
/// point tokenjar at them.
struct CertFiles {
    dir: TempDir,
}

impl CertFiles {
    fn new(cert: &IssuedCert) -> Self {
        let files = Self {
            dir: TempDir::new("tls"),
        };
        files.install(&cert.cert_pem, &cert.key_pem);
        files
    }

    fn install(&self, cert_pem: &str, key_pem: &str) {
        self.dir.write("cert.pem", cert_pem);
        self.dir.write("key.pem", key_pem);
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("TOKENJAR_SERVER__TLS_CERT_FILE", self.path("cert.pem")),
            ("TOKENJAR_SERVER__TLS_KEY_FILE", self.path("key.pem")),
        ]
    }
}

fn spawn_tls(api: &RecordingApi, files: &CertFiles) -> TestApp {
    let env = files.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = spawn_app(&api.url("/v1"), &env);
    assert_eq!(app.scheme, "https", "{:?}", app.logs());
    app
}

/// One TLS connection driven by hand (HTTP/1.1, keep-alive), to see the
/// certificate served and to reuse the connection across a reload.
struct TlsConn {
    stream: StreamOwned<ClientConnection, TcpStream>,
}

impl TlsConn {
    fn open(ca: &TestCa, addr: SocketAddr) -> Self {
        let name = ServerName::IpAddress(addr.ip().into());
        let conn = ClientConnection::new(ca.client_config(&[b"http/1.1"]), name).unwrap();
        let sock = TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut stream = StreamOwned::new(conn, sock);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock).unwrap();
        }
        Self { stream }
    }

    /// The leaf certificate the server presented.
    fn served(&self) -> CertificateDer<'static> {
        self.stream.conn.peer_certificates().unwrap()[0].clone()
    }

    /// `GET path` on this connection; the status and the body.
    fn get(&mut self, path: &str) -> (u16, String) {
        self.send(path);
        self.read_reply()
    }

    /// Sends `GET path` without waiting for the answer.
    fn send(&mut self, path: &str) {
        let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        self.stream.write_all(request.as_bytes()).unwrap();
        self.stream.flush().unwrap();
    }

    /// Reads one answer (with a `Content-Length`): its status and body.
    fn read_reply(&mut self) -> (u16, String) {
        let mut raw = Vec::new();
        let mut byte = [0u8; 1];
        while !raw.ends_with(b"\r\n\r\n") {
            assert_eq!(
                self.stream.read(&mut byte).unwrap(),
                1,
                "connection closed mid-head"
            );
            raw.push(byte[0]);
        }
        let head = String::from_utf8(raw).unwrap();
        let status = head[9..12].parse().unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().unwrap())
            })
            .expect("a content-length");
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

/// GET `url` with `client`; the status, the HTTP version and the body.
async fn fetch(client: &awc::Client, url: &str) -> (u16, Version, String) {
    let mut res = client
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let body = res.body().await.unwrap();
    (
        res.status().as_u16(),
        res.version(),
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[actix_rt::test]
async fn https_with_http2_and_http1_and_the_scheme_reaching_the_api() {
    let ca = TestCa::new();
    let cert = ca.server_cert("first");
    let files = CertFiles::new(&cert);
    let api = RecordingApi::start();
    let app = spawn_tls(&api, &files);
    assert!(app.url("/").starts_with("https://127.0.0.1:"));

    for (h2, version) in [(true, Version::HTTP_2), (false, Version::HTTP_11)] {
        let client = ca.awc(h2);
        let (status, got, body) = fetch(&client, &app.url("/healthz")).await;
        assert_eq!((status, got), (200, version), "{body}");

        let (status, got, body) = fetch(&client, &app.url("/api/things?x=1")).await;
        assert_eq!((status, got), (200, version), "{body}");
        let seen = api.last_request();
        assert_eq!(seen.target, "/v1/things?x=1");
        assert_eq!(seen.header("x-forwarded-proto"), Some("https"), "{seen:?}");
        // HTTP/2 names the host in `:authority`; it still reaches the API.
        let host = app.url("").trim_start_matches("https://").to_owned();
        assert_eq!(seen.header("x-forwarded-host"), Some(host.as_str()), "{seen:?}");
    }
}

#[test]
fn sighup_serves_a_new_certificate_to_new_connections_only() {
    let ca = TestCa::new();
    let first = ca.server_cert("first");
    let files = CertFiles::new(&first);
    let api = RecordingApi::start();
    let app = spawn_tls(&api, &files);

    let mut kept = TlsConn::open(&ca, app.address);
    assert_eq!(kept.served(), first.der);
    assert_eq!(kept.get("/healthz").0, 200);
    // A request held at the API across the reload.
    let mut in_flight = TlsConn::open(&ca, app.address);
    let before = api.received();
    in_flight.send("/api/held/gate");
    let deadline = Instant::now() + LOG_WAIT;
    while api.received() == before {
        assert!(
            Instant::now() < deadline,
            "the held request never reached the API"
        );
        std::thread::yield_now();
    }

    let second = ca.server_cert("second");
    files.install(&second.cert_pem, &second.key_pem);
    app.signal("HUP");
    assert!(
        app.wait_for_log("new TLS certificate in use", LOG_WAIT),
        "{:#?}",
        app.logs()
    );
    // Open connections carry on, the held request completes; a new
    // connection gets the new certificate.
    api.open_gate();
    assert_eq!(in_flight.read_reply().0, 200);
    assert_eq!(kept.get("/healthz").0, 200);
    let mut fresh = TlsConn::open(&ca, app.address);
    assert_eq!(fresh.served(), second.der);
    assert_eq!(fresh.get("/healthz").0, 200);

    // A key that does not match its certificate: the old pair stays.
    let third = ca.server_cert("third");
    files.install(&third.cert_pem, &second.key_pem);
    app.signal("HUP");
    assert!(app.wait_for_log("not reloaded", LOG_WAIT), "{:#?}", app.logs());
    let logs = app.logs().join("\n");
    assert!(
        logs.contains("does not match the certificate"),
        "the log should say why: {logs}"
    );
    let mut after = TlsConn::open(&ca, app.address);
    assert_eq!(after.served(), second.der);
    assert_eq!(after.get("/healthz").0, 200);

    // An unreadable file: the same.
    std::fs::remove_file(files.dir.path().join("key.pem")).unwrap();
    app.signal("HUP");
    assert!(app.wait_for_log("cannot read it", LOG_WAIT), "{logs}");
    assert_eq!(TlsConn::open(&ca, app.address).served(), second.der);

    // No key material in any log line.
    let logs = app.logs().join("\n");
    for key in [&first.key_pem, &second.key_pem, &third.key_pem] {
        let body = key.lines().nth(1).unwrap();
        assert!(!logs.contains(body), "key material logged:\n{logs}");
    }
    assert!(!logs.contains("PRIVATE KEY"), "{logs}");

    // SIGTERM still stops it gracefully with SIGHUP handled.
    let mut app = app;
    app.signal("TERM");
    let status = app.wait_exit(LOG_WAIT).expect("tokenjar to stop on SIGTERM");
    assert!(status.success(), "{status:?}");
}

#[test]
fn plain_http_or_garbage_on_the_tls_port_costs_that_connection_only() {
    let ca = TestCa::new();
    let cert = ca.server_cert("only");
    let files = CertFiles::new(&cert);
    let api = RecordingApi::start();
    let app = spawn_tls(&api, &files);

    let attempts: [&[u8]; 3] = [
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"\x16\x03\x01\x00\x05garbage-after-a-handshake-header\r\n\r\n",
        &[0xff; 600],
    ];
    for bytes in attempts {
        let mut sock = TcpStream::connect(app.address).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        sock.write_all(bytes).unwrap();
        // Whatever comes back (a TLS alert), the server ends the connection.
        let mut sink = Vec::new();
        match sock.read_to_end(&mut sink) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            Err(e) => panic!("the server kept a bad connection open: {e}"),
        }
        assert!(!String::from_utf8_lossy(&sink).contains("HTTP/1.1 200"));
        let mut conn = TlsConn::open(&ca, app.address);
        assert_eq!(conn.get("/healthz").0, 200);
    }
}

/// Variables for one run: name and value.
type Env = Vec<(&'static str, String)>;

/// `tokenjar check-config` (or `serve`) with `env`, nothing inherited.
fn run(args: &[&str], env: &[(&str, String)]) -> Output {
    let cwd = TempDir::new("tls-cli");
    let mut cmd = Command::new(tokenjar_bin());
    cmd.args(args)
        .arg("--config-dir")
        .arg(cwd.path())
        .current_dir(cwd.path());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("TOKENJAR_") {
            cmd.env_remove(name);
        }
    }
    cmd.env("TOKENJAR_SERVER__PORT", "0")
        .env("TOKENJAR_COOKIE__KEYS", KEY_1)
        .env_remove("RUST_BACKTRACE");
    for (name, value) in env {
        cmd.env(name, value);
    }
    cmd.output().unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn bad_certificate_files_exit_2_naming_the_key() {
    let ca = TestCa::new();
    let good = ca.server_cert("good");
    let other = ca.server_cert("other");
    let files = CertFiles::new(&good);
    files.dir.write("other-key.pem", &other.key_pem);
    files.dir.write("garbage.pem", "not a pem file\n");
    let cert = ("TOKENJAR_SERVER__TLS_CERT_FILE", files.path("cert.pem"));
    let key = ("TOKENJAR_SERVER__TLS_KEY_FILE", files.path("key.pem"));
    let with = |name: &'static str, file: &str| (name, files.path(file));

    // A good pair passes and is shown; the key's contents are not.
    let ok = run(&["check-config"], &[cert.clone(), key.clone()]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    assert!(text(&ok).contains("tls_key_file"), "{}", text(&ok));

    let cases: Vec<(Env, &[&str])> = vec![
        (vec![cert.clone()], &["server.tls_key_file"]),
        (vec![key.clone()], &["server.tls_cert_file"]),
        (
            vec![with("TOKENJAR_SERVER__TLS_CERT_FILE", "missing.pem"), key.clone()],
            &["server.tls_cert_file"],
        ),
        // A PEM without a certificate (the key file given as both).
        (
            vec![with("TOKENJAR_SERVER__TLS_CERT_FILE", "key.pem"), key.clone()],
            &["server.tls_cert_file"],
        ),
        (
            vec![
                cert.clone(),
                with("TOKENJAR_SERVER__TLS_KEY_FILE", "other-key.pem"),
            ],
            &["server.tls_key_file"],
        ),
        // Every problem at once.
        (
            vec![
                with("TOKENJAR_SERVER__TLS_CERT_FILE", "garbage.pem"),
                with("TOKENJAR_SERVER__TLS_KEY_FILE", "missing.pem"),
            ],
            &["server.tls_cert_file", "server.tls_key_file"],
        ),
    ];
    for (env, keys) in cases {
        for args in [&["check-config"][..], &["serve"]] {
            let out = run(args, &env);
            let shown = text(&out);
            assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}:\n{shown}");
            assert!(!shown.contains("panicked"), "{shown}");
            for key in keys {
                assert!(mentions_word(&shown, key), "{env:?} should name {key}:\n{shown}");
            }
            for pem in [&good.key_pem, &other.key_pem] {
                assert!(!shown.contains(pem.lines().nth(1).unwrap()), "{shown}");
            }
        }
    }
}
