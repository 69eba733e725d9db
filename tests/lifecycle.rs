//! The process around the requests: no secret in any log line at any level
//! (SPEC §8, §9), and graceful shutdown on a real SIGTERM/SIGINT (SPEC §9):
//! stop accepting, let in-flight downloads finish within
//! `server.shutdown_timeout_s`, exit 0; and SIGHUP, which never stops it.
//!
//! Downloads go through the recording API's gated endpoint, whose pieces exist
//! only once the test releases them, so every step waits on a condition
//! (bytes arrived, a log line, the process exit) with a bounded deadline.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::ErrorKind;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use serde_json::json;
use tokenjar_e2e::api::CannedReply;
use tokenjar_e2e::pattern::{signature_of, PatternCheck, CHUNK_LEN};
use tokenjar_e2e::{setup, setup_with, tamper, RawStream, RecordingApi, TestApp, KEY_1};

/// Bound for anything that should happen at once (a log line, an exit).
const SOON: Duration = Duration::from_secs(15);

/// Does every kind of request that handles the token, the sealed cookie or
/// the key (at `RUST_LOG=trace` plus `extra`), stops the process so that its
/// output is complete, and asserts that no secret appears in any line.
async fn assert_no_secret_in_trace_logs(extra: &[(&str, &str)]) {
    let mut env = vec![("RUST_LOG", "trace")];
    env.extend_from_slice(extra);
    let (api, mut app) = setup_with(&env);

    let login = app.login("demo", "demo").await;
    assert_eq!(login.status, 200, "{}", login.text());
    let token = api.last_issued().token;
    let sealed = login.set_cookie_for("auth-token").expect("a cookie").value;
    let cookie = format!("auth-token={sealed}");

    let reply = app.get_api("/api/echo?q=1", Some(&cookie)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(api.last_request().header_all("auth-token"), vec![token.as_str()]);
    let reply = app
        .send(
            "POST",
            "/api/items",
            &[
                ("cookie", cookie.as_str()),
                ("x-csrf", "1"),
                ("content-type", "application/json"),
            ],
            r#"{"name":"x"}"#,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let session = app.session(Some(&cookie)).await;
    assert_eq!(session.json()["loggedIn"], true);

    // A tampered cookie: most of the sealed value, one character changed.
    let tampered = tamper(&cookie);
    let reply = app.session(Some(&tampered)).await;
    assert_eq!(reply.json(), json!({"loggedIn": false}));
    app.get_api("/api/echo", Some(&tampered)).await;

    // A login whose token would inject a header: refused, and its token
    // (a credential all the same) must not be logged either.
    let bad_token = format!("bad-login-{}\r\nX-Injected: 1", tokenjar_e2e::unique());
    api.push_login_reply(CannedReply::json(200, &json!({"authToken": bad_token})));
    app.login("demo", "demo")
        .await
        .assert_error(502, "bad_login_response");

    let reply = app.logout(Some(&cookie)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());

    // Stop the process: every line it wrote is then in the captured output.
    app.signal("TERM");
    assert_exits_0(&mut app, "SIGTERM");

    let logs = app.logs();
    let trace_lines = logs
        .iter()
        .filter(|l| l.contains("TRACE") || l.contains("\"level\":\"TRACE\""))
        .count();
    assert!(
        trace_lines > 0,
        "RUST_LOG=trace produced no trace line; the test would prove nothing:\n{}",
        logs.join("\n")
    );
    let bad_token_head = bad_token.split('\r').next().unwrap().to_owned();
    let secrets = [
        ("the token", token.clone()),
        ("the token's signature", signature_of(&token).to_owned()),
        ("the sealed cookie value", sealed.clone()),
        ("the start of the sealed cookie value", sealed[..32].to_owned()),
        (
            "the end of the sealed cookie value",
            sealed[sealed.len() - 32..].to_owned(),
        ),
        ("the cookie key (base64)", KEY_1.to_owned()),
        ("the start of the cookie key", KEY_1[..24].to_owned()),
        ("the refused login's token", bad_token_head),
    ];
    let mut leaks = Vec::new();
    for (what, secret) in &secrets {
        for line in logs.iter().filter(|l| l.contains(secret.as_str())) {
            leaks.push(format!("{what} in: {line}"));
        }
    }
    assert!(
        leaks.is_empty(),
        "{} log line(s) of {} carry a secret:\n{}",
        leaks.len(),
        logs.len(),
        leaks.join("\n")
    );
}

#[actix_web::test]
async fn no_secret_in_any_log_line_at_trace_level() {
    assert_no_secret_in_trace_logs(&[]).await;
}

#[actix_web::test]
async fn no_secret_in_any_json_log_line_at_trace_level() {
    assert_no_secret_in_trace_logs(&[("TOKENJAR_LOG__FORMAT", "json")]).await;
}

/// `GET /api/gated/<pieces>` through tokenjar, read up to the first body
/// bytes (the test released one piece before).
fn start_gated_download(app: &TestApp, pieces: u64) -> (RawStream, PatternCheck) {
    let request = format!("GET /api/gated/{pieces} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    let mut download = RawStream::open(app.address, request.as_bytes());
    assert_eq!(download.status, 200);
    let total = pieces * CHUNK_LEN as u64;
    assert_eq!(
        download.header("content-length"),
        Some(total.to_string().as_str())
    );
    let mut check = PatternCheck::new();
    while check.received() == 0 {
        let bytes = download.read_some().expect("the first bytes of the download");
        assert!(!bytes.is_empty(), "the download ended before its first bytes");
        check.feed(&bytes);
    }
    (download, check)
}

/// Reads the download until the server closes it; the pattern check over
/// everything received and whether the connection ended cleanly.
fn read_to_end(download: &mut RawStream, mut check: PatternCheck) -> (PatternCheck, bool) {
    loop {
        match download.read_some() {
            Ok(bytes) if bytes.is_empty() => return (check, true),
            Ok(bytes) => check.feed(&bytes),
            Err(_) => return (check, false),
        }
    }
}

/// How a fresh connection attempt went.
#[derive(Debug, PartialEq, Eq)]
enum Probe {
    /// The server answered: it still accepts.
    Answered(u16),
    /// Nothing listens: connection refused.
    Refused,
    /// Connected, but closed or reset without an answer.
    ClosedWithoutAnswer,
}

/// Connects afresh and asks for `/healthz`.
fn probe(addr: SocketAddr) -> Probe {
    let mut stream = match TcpStream::connect(addr) {
        Ok(stream) => stream,
        Err(err) if err.kind() == ErrorKind::ConnectionRefused => return Probe::Refused,
        // A listener closing while the handshake is under way resets it:
        // not served either.
        Err(err)
            if matches!(
                err.kind(),
                ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
            ) =>
        {
            return Probe::ClosedWithoutAnswer
        }
        Err(err) => panic!("connecting to {addr}: {err}"),
    };
    stream.set_read_timeout(Some(SOON)).unwrap();
    if stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return Probe::ClosedWithoutAnswer;
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let status = String::from_utf8_lossy(&answer)
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok());
    match status {
        Some(status) => Probe::Answered(status),
        None => Probe::ClosedWithoutAnswer,
    }
}

/// Waits (at most `SOON`) for tokenjar to exit after `after` (a signal, the
/// end of a download, the shutdown timeout) and asserts a clean exit 0,
/// showing its logs otherwise: every shutdown path must end that way.
fn assert_exits_0(app: &mut TestApp, after: &str) -> ExitStatus {
    let status = app
        .wait_exit(SOON)
        .unwrap_or_else(|| panic!("tokenjar did not exit after {after}"));
    assert!(
        status.success(),
        "exit status {status}; logs:\n{}",
        app.logs().join("\n")
    );
    status
}

/// After a stop signal: new connections stop being served within `SOON`.
/// The first probes may still be answered if the signal is not handled yet.
fn assert_stops_accepting(app: &TestApp) -> Probe {
    let deadline = Instant::now() + SOON;
    loop {
        match probe(app.address) {
            Probe::Answered(status) => {
                assert_eq!(status, 200, "/healthz while stopping");
                assert!(
                    Instant::now() < deadline,
                    "new connections were still served {SOON:?} after the signal"
                );
            }
            stopped => return stopped,
        }
    }
}

/// tokenjar (with 10 s to shut down) in the middle of a gated download of
/// `pieces`, its first piece released, when the signal `name` (`TERM`,
/// `INT`) has been sent and handled.
fn signalled_during_download(name: &str, pieces: u64) -> (RecordingApi, TestApp, RawStream, PatternCheck) {
    let (api, app) = setup_with(&[("TOKENJAR_SERVER__SHUTDOWN_TIMEOUT_S", "10")]);
    api.release_gated(1);
    let (download, check) = start_gated_download(&app, pieces);
    app.signal(name);
    assert!(
        app.wait_for_log(&format!("SIG{name} received"), SOON),
        "no sign that the signal was handled:\n{}",
        app.logs().join("\n")
    );
    (api, app, download, check)
}

#[test]
fn sigterm_stops_accepting_but_finishes_an_inflight_download() {
    let pieces = 16;
    let (api, mut app, mut download, check) = signalled_during_download("TERM", pieces);
    let refused = assert_stops_accepting(&app);
    // The download is still in flight: the process waits for it.
    assert!(
        app.exit_status().is_none(),
        "tokenjar exited with a download in flight"
    );

    api.release_gated(pieces - 1);
    let (check, clean) = read_to_end(&mut download, check);
    assert_eq!(
        check.received(),
        pieces * CHUNK_LEN as u64,
        "the in-flight download was cut by the shutdown"
    );
    assert!(check.intact(), "the download's bytes were corrupted");
    assert!(clean, "the download's connection was reset after its last byte");

    let started = Instant::now();
    let status = assert_exits_0(&mut app, "the download finished");
    eprintln!(
        "lifecycle: SIGTERM with a download in flight -> new connection {refused:?}, download complete \
         ({} bytes), {status} {:?} after the download",
        check.received(),
        started.elapsed()
    );
}

#[test]
fn sigint_with_nothing_in_flight_exits_0_quickly() {
    let (_api, mut app) = setup();
    // Serve one request first, so a worker and a pooled upstream connection
    // exist; nothing is in flight when the signal comes.
    let reply = app.raw("GET /api/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    assert_eq!(reply.status, 200);

    let started = Instant::now();
    app.signal("INT");
    let status = assert_exits_0(&mut app, "SIGINT");
    let took = started.elapsed();
    // The default shutdown_timeout_s is 30: an idle server must not wait it out.
    assert!(
        took < Duration::from_secs(10),
        "an idle tokenjar took {took:?} to stop"
    );
    eprintln!("lifecycle: SIGINT idle -> {status} after {took:?}");
}

#[test]
fn sigint_also_lets_an_inflight_download_finish() {
    // SPEC §9 names SIGTERM and SIGINT alike: stop accepting, finish
    // in-flight requests, exit 0.
    let pieces = 4;
    let (api, mut app, mut download, check) = signalled_during_download("INT", pieces);
    api.release_gated(pieces - 1);
    let (check, _) = read_to_end(&mut download, check);
    let status = app.wait_exit(SOON).expect("tokenjar did not exit after SIGINT");
    eprintln!(
        "lifecycle: SIGINT with a download in flight -> {} of {} bytes, {status}",
        check.received(),
        pieces * CHUNK_LEN as u64
    );
    assert_eq!(
        check.received(),
        pieces * CHUNK_LEN as u64,
        "SIGINT cut the in-flight download; logs:\n{}",
        app.logs().join("\n")
    );
    assert!(check.intact());
    assert!(status.success(), "exit status {status}");
}

#[test]
fn a_download_that_never_finishes_is_cut_after_the_shutdown_timeout() {
    let (api, mut app) = setup_with(&[("TOKENJAR_SERVER__SHUTDOWN_TIMEOUT_S", "1")]);
    let pieces = 8;
    api.release_gated(1);
    let (mut download, check) = start_gated_download(&app, pieces);

    let started = Instant::now();
    app.signal("TERM");
    let status = assert_exits_0(&mut app, "the shutdown timeout");
    let took = started.elapsed();
    // Graceful means the in-flight download got its second: tokenjar may not
    // exit before the shutdown timeout has run out.
    assert!(
        took >= Duration::from_millis(900),
        "tokenjar exited after {took:?}, before the 1 s shutdown timeout"
    );

    // The rest never came: the client sees the stream end short of its
    // Content-Length.
    let (check, _) = read_to_end(&mut download, check);
    assert!(
        check.received() < pieces * CHUNK_LEN as u64,
        "the download cannot be complete: only one piece was released"
    );
    assert!(check.intact());
    eprintln!(
        "lifecycle: SIGTERM with a stuck download, shutdown_timeout_s=1 -> {status} after {took:?}, \
         client got {} of {} bytes (cut)",
        check.received(),
        pieces * CHUNK_LEN as u64
    );
}

/// SIGHUP (`systemctl reload`, a certificate hook) never stops tokenjar:
/// without a TLS listener there is nothing to reload, and it says so.
#[actix_web::test]
async fn sighup_without_tls_changes_nothing_and_stops_nothing() {
    let (api, mut app) = setup();
    app.signal("HUP");
    assert!(
        app.wait_for_log("SIGHUP received; nothing to reload", Duration::from_secs(10)),
        "{:#?}",
        app.logs()
    );
    assert_eq!(
        app.exit_status(),
        None,
        "SIGHUP stopped tokenjar: {:#?}",
        app.logs()
    );
    let reply = app.get_api("/api/still-here", None).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(api.last_request().target, "/v1/still-here");
}
