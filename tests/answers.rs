//! What the API answers, however it answers: interim 1xx answers before the
//! final one are dropped and every request gets exactly its own answer, also
//! under concurrent load on shared API connections; a body shorter than its
//! length is never passed on as complete (a login cut that way logs no one
//! in); an answer that runs until the close arrives whole; stray bytes after
//! an answer and an unasked protocol switch reach nobody; a 304 or 204 that
//! announces a length leaves the client's connection usable (SPEC §3, §4).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokenjar_e2e::hostile_api::{HostileApi, Interim, CONTINUE, EARLY_HINTS, PROCESSING};
use tokenjar_e2e::{raw_conversation, raw_request, spawn_app, Reply, TestApp};

/// Login clients and pinging clients of the concurrent scenario.
const LOGIN_CLIENTS: usize = 5;
const PING_CLIENTS: usize = 4;
/// Logins each login client makes.
const LOGINS_EACH: usize = 3;

/// A login of `user` at `/api/login`.
fn login_request(user: &str) -> Vec<u8> {
    login_request_at("/api/login", user)
}

/// A login of `user` at `path`, with the CSRF header.
fn login_request_at(path: &str, user: &str) -> Vec<u8> {
    let body = format!(r#"{{"username":"{user}","password":"pw"}}"#);
    format!(
        "POST {path} HTTP/1.1\r\nHost: app.test\r\nContent-Type: application/json\r\n\
         X-CSRF: 1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n").into_bytes()
}

/// tokenjar with one worker, so every request shares one pool of API
/// connections (the setting in which an answer left on a connection is
/// handed to the next request).
fn one_worker_app(api: &HostileApi) -> TestApp {
    spawn_app(&api.url("/v1"), &[("TOKENJAR_SERVER__WORKERS", "1")])
}

/// Checks a login answer for `user`: 200, logged in as that user (the
/// answer is its own), a cookie, and no token anywhere.
fn check_login(reply: &Reply, user: &str) -> Result<(), String> {
    let problem = |what: &str| {
        Err(format!(
            "login of {user}: {what}: {} {:?}",
            reply.status,
            reply.text()
        ))
    };
    if reply.status != 200 {
        return problem("not 200");
    }
    let body: serde_json::Value = match serde_json::from_slice(&reply.body) {
        Ok(body) => body,
        Err(_) => return problem("not JSON"),
    };
    if body["user"] != user || body["loggedIn"] != true {
        return problem("someone else's answer");
    }
    if reply.leaks("tok-") || reply.leaks("authToken") {
        return problem("the token reached the client");
    }
    if reply
        .set_cookie_for("auth-token")
        .is_none_or(|c| c.value.is_empty())
    {
        return problem("no cookie");
    }
    Ok(())
}

/// Checks an echo answer: 200 and the echo of exactly this request.
fn check_echo(reply: &Reply, target: &str) -> Result<(), String> {
    let body: Option<serde_json::Value> = serde_json::from_slice(&reply.body).ok();
    let echoed = body.as_ref().and_then(|b| b["echo"].as_str());
    if reply.status == 200 && echoed == Some(target) && !reply.leaks("tok-") {
        Ok(())
    } else {
        Err(format!(
            "GET {target}: {} {:?} is not this request's own answer",
            reply.status,
            reply.text()
        ))
    }
}

/// Five users log in while four clients without a cookie ping, all at once,
/// through one tokenjar worker in front of an API that sends `interim`
/// before every final answer; every answer is checked to be its request's
/// own. The problems found, if any.
fn concurrent_round(interim: &Interim) -> Vec<String> {
    let api = HostileApi::start(interim.clone());
    let app = one_worker_app(&api);
    let addr = app.address;
    let logins_done = Arc::new(AtomicBool::new(false));
    let mut pingers = Vec::new();
    for client in 0..PING_CLIENTS {
        let done = Arc::clone(&logins_done);
        pingers.push(std::thread::spawn(move || ping_until(addr, client, &done)));
    }
    let loggers: Vec<_> = (0..LOGIN_CLIENTS)
        .map(|client| {
            std::thread::spawn(move || {
                let mut problems = Vec::new();
                for n in 0..LOGINS_EACH {
                    let user = format!("user{client}x{n}");
                    let reply = raw_request(addr, &login_request(&user));
                    if let Err(problem) = check_login(&reply, &user) {
                        problems.push(problem);
                    }
                }
                problems
            })
        })
        .collect();
    let mut problems: Vec<String> = loggers.into_iter().flat_map(|t| t.join().unwrap()).collect();
    logins_done.store(true, Ordering::SeqCst);
    let mut pings = 0;
    for pinger in pingers {
        let (sent, found) = pinger.join().unwrap();
        pings += sent;
        problems.extend(found);
    }
    eprintln!(
        "interim {:?}: {} logins and {pings} pings over {} API connections, {} problems",
        interim
            .heads
            .iter()
            .map(|h| h.lines().next().unwrap_or(""))
            .collect::<Vec<_>>(),
        LOGIN_CLIENTS * LOGINS_EACH,
        api.connections(),
        problems.len()
    );
    problems
}

/// Pings with unique targets until `done` (and at least twice): (pings
/// sent, problems found).
fn ping_until(addr: SocketAddr, client: usize, done: &AtomicBool) -> (usize, Vec<String>) {
    let mut problems = Vec::new();
    let mut n = 0;
    while n < 2 || !done.load(Ordering::SeqCst) {
        let path = format!("/api/echo/ping{client}x{n}");
        let reply = raw_request(addr, &get(&path));
        if let Err(problem) = check_echo(&reply, &format!("/v1/echo/ping{client}x{n}")) {
            problems.push(problem);
        }
        n += 1;
    }
    (n, problems)
}

fn interim(heads: &[&'static str], pause_ms: u64) -> Interim {
    Interim {
        heads: heads.to_vec(),
        pause: Duration::from_millis(pause_ms),
    }
}

/// The severe finding: an API that answers `103 Early Hints` (or `100
/// Continue`, or several interim answers in a row), waits 150 ms, then
/// sends the real answer. While five users log in, four clients ping
/// without a cookie. Every login gets its own logged-in answer and cookie,
/// every ping its own echo, and no one ever sees a token or an interim
/// answer.
#[test]
fn interim_answers_are_dropped_and_every_client_gets_its_own_answer() {
    let mut problems = Vec::new();
    for heads in [
        vec![EARLY_HINTS],
        vec![CONTINUE],
        vec![CONTINUE, EARLY_HINTS, EARLY_HINTS],
        vec![PROCESSING, CONTINUE],
    ] {
        problems.extend(concurrent_round(&interim(&heads, 150)));
    }
    assert!(
        problems.is_empty(),
        "{} answers went to the wrong client or were wrong; first ones:\n{}",
        problems.len(),
        problems.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
    );
}

/// Interim answers that arrive together with the final one (no pause): the
/// same rule on the fast path, one request at a time, on login and on an
/// ordinary route.
#[test]
fn interim_answers_sent_with_the_final_one_are_dropped() {
    let api = HostileApi::start(interim(&[EARLY_HINTS, CONTINUE], 0));
    let app = one_worker_app(&api);
    for n in 0..5 {
        let user = format!("fast{n}");
        check_login(&raw_request(app.address, &login_request(&user)), &user).unwrap();
        let reply = raw_request(app.address, &get(&format!("/api/echo/{n}")));
        check_echo(&reply, &format!("/v1/echo/{n}")).unwrap();
    }
}

/// `Content-Length: 100`, then 23 bytes of complete JSON, then the API
/// closes: the login gets 502 `bad_login_response` and no cookie.
#[test]
fn a_login_answer_shorter_than_its_length_logs_no_one_in() {
    let api = HostileApi::start(Interim::default());
    let app = spawn_app(&api.url("/v1"), &[("TOKENJAR_ROUTES__LOGIN", "/api/short-login")]);
    let reply = raw_request(app.address, &login_request_at("/api/short-login", "u"));
    reply.assert_error(502, "bad_login_response");
    assert!(
        reply.set_cookie_for("auth-token").is_none(),
        "no cookie: {:?}",
        reply.headers
    );
    assert!(!reply.leaks("tok-cut"), "the token never reaches the client");
    assert_eq!(api.requests(), 1, "the login reached the API");
}

/// The same cut on an ordinary route: the client never gets an answer that
/// looks complete. Whatever it receives before the connection ends (here
/// nothing: the cut is seen before the head was flushed) falls short of the
/// API's announced length.
#[test]
fn an_answer_shorter_than_its_length_is_cut_for_the_client() {
    let api = HostileApi::start(Interim::default());
    let app = spawn_app(&api.url("/v1"), &[]);
    let request = "GET /api/short/100 HTTP/1.1\r\nHost: app.test\r\n\r\n";
    let received = raw_conversation(app.address, request.as_bytes());
    let text = String::from_utf8_lossy(&received).into_owned();
    if let Some(head_end) = text.find("\r\n\r\n") {
        let head = text[..head_end].to_ascii_lowercase();
        let body = received.len() - head_end - 4;
        assert!(
            head.contains("content-length: 100") && body < 100,
            "a cut answer passed on as complete: {text:?}"
        );
    }
    // The same process still serves a whole answer.
    let reply = raw_request(app.address, &get("/api/echo/after"));
    check_echo(&reply, "/v1/echo/after").unwrap();
}

/// An HTTP/1.1 answer with neither a length nor chunking runs until the API
/// closes (RFC 9112 §6.3): the client gets all of it, and the next request
/// gets its own answer.
#[test]
fn an_answer_that_runs_until_the_close_arrives_whole() {
    let api = HostileApi::start(Interim::default());
    let app = one_worker_app(&api);
    for n in 0..3 {
        let reply = raw_request(app.address, &get(&format!("/api/{n}/until-close")));
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json()["echo"], format!("/v1/{n}/until-close"), "{n}");
        let reply = raw_request(app.address, &get(&format!("/api/echo/{n}")));
        check_echo(&reply, &format!("/v1/echo/{n}")).unwrap();
    }
}

/// An answer followed by a second, unasked one on the same connection: the
/// first goes to its request, the stray one to no one (the connection is
/// not used again).
#[test]
fn stray_bytes_after_an_answer_reach_no_one() {
    let api = HostileApi::start(Interim::default());
    let app = one_worker_app(&api);
    for n in 0..5 {
        let reply = raw_request(app.address, &get(&format!("/api/{n}/stray")));
        check_echo(&reply, &format!("/v1/{n}/stray")).unwrap();
        let reply = raw_request(app.address, &get(&format!("/api/echo/{n}")));
        check_echo(&reply, &format!("/v1/echo/{n}")).unwrap();
    }
}

/// `101 Switching Protocols` to a request that asked for no upgrade: 502,
/// never passed on.
#[test]
fn an_unasked_protocol_switch_is_502() {
    let api = HostileApi::start(Interim::default());
    let app = spawn_app(&api.url("/v1"), &[]);
    let reply = raw_request(app.address, &get("/api/switch"));
    reply.assert_error(502, "upstream_unavailable");
    let reply = raw_request(app.address, &get("/api/echo/after"));
    check_echo(&reply, "/v1/echo/after").unwrap();
}

/// A login refused (any status but 2xx) whose answer still holds a string
/// at the token field would hand the page a token: 502
/// `bad_login_response`, no cookie, the token nowhere. A refusal without
/// one passes through with its status and body.
#[test]
fn a_refused_login_that_carries_a_token_is_502() {
    let api = HostileApi::start(Interim::default());
    for status in [302, 400, 401, 403, 422, 500, 503] {
        let route = format!("/api/status/{status}/login");
        let app = spawn_app(&api.url("/v1"), &[("TOKENJAR_ROUTES__LOGIN", route.as_str())]);
        let reply = raw_request(app.address, &login_request_at(&route, "u"));
        reply.assert_error(502, "bad_login_response");
        assert!(
            !reply.leaks("tok-refused"),
            "{status}: the token reached the client"
        );
        assert!(
            reply.set_cookie_for("auth-token").is_none(),
            "{status}: a cookie was set"
        );
    }

    let (recording, app) = tokenjar_e2e::setup();
    let request = "POST /api/login HTTP/1.1\r\nHost: app.test\r\nContent-Type: application/json\r\n\
                   X-CSRF: 1\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";
    let reply = raw_request(app.address, request.as_bytes());
    assert_eq!(
        reply.status,
        401,
        "a plain refusal passes through: {}",
        reply.text()
    );
    assert_eq!(reply.json(), serde_json::json!({"error": "bad credentials"}));
    assert!(reply.set_cookie_for("auth-token").is_none());
    assert_eq!(recording.requests().len(), 1);
}

/// A `304` or `204` has no body whatever its head announces (RFC 9112
/// §6.3): an API that sends `Content-Length` with one (a 304 may, for the
/// representation it stands for) must not leave the client's connection
/// waiting for bytes that never come. The next request on the same
/// connection is answered.
#[test]
fn a_bodiless_status_with_a_length_leaves_the_connection_usable() {
    use std::io::{Read as _, Write as _};
    for head in [
        "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\nETag: \"v1\"\r\n\r\n",
        "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
    ] {
        let api = tokenjar_e2e::RawUpstream::answering(head.as_bytes());
        let app = spawn_app(&api.url(""), &[]);
        let mut client = std::net::TcpStream::connect(app.address).unwrap();
        client.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let status = head.split("\r\n").next().unwrap().split(' ').nth(1).unwrap();
        for round in 1..=2 {
            let request = format!("GET /api/cached/{round} HTTP/1.1\r\nHost: app.test\r\n\r\n");
            client.write_all(request.as_bytes()).unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = client
                    .read(&mut buf)
                    .unwrap_or_else(|e| panic!("{status}, request {round}: no answer ({e}); got {seen:?}"));
                assert!(
                    n > 0,
                    "{status}, request {round}: connection closed; got {seen:?}; {:#?}",
                    app.logs()
                );
                seen.extend_from_slice(&buf[..n]);
            }
            let text = String::from_utf8_lossy(&seen);
            assert!(text.starts_with(&format!("HTTP/1.1 {status}")), "{text}");
        }
    }
}
