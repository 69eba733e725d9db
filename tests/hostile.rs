//! Hostile input against the real binary: malformed and stuffed cookies,
//! tampered sealed values, header injection through the login answer,
//! request-smuggling shapes, oversized heads, path tricks, non-UTF-8 bytes,
//! unusable login answers, forged token headers and cross-site requests.
//!
//! Every case checks the exact answer (and SPEC §8 code where tokenjar
//! answers), what the recording API received (nothing, or only the sanitised
//! request), and that the same process still serves a good session
//! afterwards. Each test prints `hostile: <case> -> <status> <code> ...` per
//! case when it ends, so a run's output lists every input and its outcome.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use bytes::Bytes;
use serde_json::{json, Value};
use tokenjar_e2e::api::CannedReply;
use tokenjar_e2e::metrics::metric_sum;
use tokenjar_e2e::{
    parse_responses, raw_conversation, spawn_app, Recorded, RecordingApi, Reply, TestApp, KEY_1, KEY_2,
};

/// The outcome of every case of one test, printed when the test ends (also
/// when it fails, so the cases before the failure are still listed).
struct Tally {
    lines: Vec<String>,
}

impl Tally {
    fn new() -> Self {
        Self { lines: Vec::new() }
    }

    fn note(&mut self, case: &str, outcome: impl Into<String>) {
        self.lines.push(format!("{case} -> {}", outcome.into()));
    }

    fn reply(&mut self, case: &str, reply: &Reply, detail: &str) {
        let outcome = if detail.is_empty() {
            status_and_code(reply)
        } else {
            format!("{} ({detail})", status_and_code(reply))
        };
        self.note(case, outcome);
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        for line in &self.lines {
            eprintln!("hostile: {line}");
        }
    }
}

/// `STATUS CODE`, the code being the SPEC §8 `error` of a tokenjar error
/// body, or `-` for any other answer (the API's, or actix-web's plain one).
fn status_and_code(reply: &Reply) -> String {
    let code = serde_json::from_slice::<Value>(&reply.body)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| "-".to_owned());
    format!("{} {code}", reply.status)
}

/// An API (base path `/v1`), a tokenjar in front of it, and a good session.
struct Scene {
    api: RecordingApi,
    app: TestApp,
    /// `auth-token=<sealed>` as a browser sends it back.
    cookie: String,
    /// The token sealed in `cookie`.
    token: String,
}

impl Scene {
    async fn start(env: &[(&str, &str)]) -> Self {
        Self::start_at("/v1", env).await
    }

    async fn start_at(base: &str, env: &[(&str, &str)]) -> Self {
        let api = RecordingApi::start();
        let app = spawn_app(&api.url(base), env);
        let cookie = app.login_cookie().await;
        let token = api.last_issued().token;
        Self {
            api,
            app,
            cookie,
            token,
        }
    }

    /// The sealed value of the good cookie.
    fn sealed(&self) -> &str {
        self.cookie.split_once('=').unwrap().1
    }

    /// How many requests the API has received so far.
    fn seen(&self) -> usize {
        self.api.requests().len()
    }

    /// Requests the API received after the first `before`.
    fn seen_since(&self, before: usize) -> Vec<Recorded> {
        self.api.requests().into_iter().skip(before).collect()
    }

    /// Sends raw bytes; the one answer, or `None` if the server closed
    /// without answering.
    fn raw(&self, request: &[u8]) -> Option<Reply> {
        let answers = parse_responses(&raw_conversation(self.app.address, request));
        assert!(
            answers.len() <= 1,
            "one request, several answers: {:?}",
            answers.iter().map(|a| a.status).collect::<Vec<_>>()
        );
        answers.into_iter().next()
    }

    /// Between cases: the good cookie still opens a session (over a fresh
    /// raw connection, so a broken worker would show).
    fn assert_alive(&self, case: &str) {
        let line = cookie_line(self.cookie.as_bytes());
        let reply = self
            .raw(&get_with(b"/api/session", &[&line]))
            .unwrap_or_else(|| panic!("after {case}: no answer to GET /api/session"));
        assert_eq!(reply.status, 200, "after {case}: {}", reply.text());
        assert_eq!(reply.json()["loggedIn"], true, "after {case}: {}", reply.text());
    }

    /// Has the API answer the next login with `canned` and asserts that
    /// tokenjar refuses it: `502 bad_login_response`, no `Set-Cookie`, none of
    /// `needles` (parts of the token) anywhere in the answer, and exactly one
    /// login request at the API. Notes the case in `tally`.
    async fn refuses_login_answer(
        &self,
        tally: &mut Tally,
        case: &str,
        canned: CannedReply,
        needles: &[&str],
    ) {
        let before = self.seen();
        self.api.push_login_reply(canned);
        let reply = self.app.login("demo", "demo").await;
        reply.assert_error(502, "bad_login_response");
        assert!(
            reply.header_all("set-cookie").is_empty(),
            "{case}: no cookie may be set: {:?}",
            reply.header_all("set-cookie")
        );
        for needle in needles {
            assert!(
                !reply.leaks(needle),
                "{case}: {needle:?} leaked: headers {:?}, body {}",
                reply.headers,
                reply.text()
            );
        }
        assert_eq!(self.seen_since(before).len(), 1, "{case}: one login request");
        tally.reply(case, &reply, "no Set-Cookie");
        self.assert_alive(case);
    }

    /// Sends `GET /api/echo` with `headers` (forged token headers, maybe a
    /// cookie) and asserts that the API got `upstream` (the header tokenjar
    /// fills) exactly as `want`: the cookie's token, or nothing. Where the
    /// client sent `upstream` itself, none of its forged values may reach the
    /// API. Notes `details.0` (a token got through) or `details.1` in `tally`.
    async fn forwards_only_the_cookie_token(
        &self,
        tally: &mut Tally,
        case: &str,
        headers: &[(&str, &str)],
        upstream: &str,
        want: Option<&str>,
        details: (&str, &str),
    ) {
        let before = self.seen();
        let reply = self.app.send("GET", "/api/echo", headers, Bytes::new()).await;
        assert_eq!(reply.status, 200, "{case}: {}", reply.text());
        let seen = self.seen_since(before);
        assert_eq!(seen.len(), 1, "{case}");
        let expected: Vec<&str> = want.into_iter().collect();
        assert_eq!(seen[0].header_all(upstream), expected, "{case}");
        if headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(upstream)) {
            assert!(
                !seen[0].headers_contain("forged"),
                "{case}: {:?}",
                seen[0].headers
            );
        }
        tally.reply(case, &reply, if want.is_some() { details.0 } else { details.1 });
        self.assert_alive(case);
    }

    /// After the hostile cases: the same process is alive, answers the good
    /// cookie with a session, and never panicked.
    async fn assert_still_serving(&mut self) {
        let reply = self.app.session(Some(&self.cookie)).await;
        assert_eq!(
            reply.status,
            200,
            "session after the hostile cases: {}",
            reply.text()
        );
        assert_eq!(reply.json()["loggedIn"], true, "the good cookie stopped working");
        let reply = self.app.session(None).await;
        assert_eq!(reply.json(), json!({"loggedIn": false}));
        assert!(
            self.app.exit_status().is_none(),
            "tokenjar exited: {:?}",
            self.app.exit_status()
        );
        let logs = self.app.logs();
        assert!(
            !logs.iter().any(|l| l.contains("panicked")),
            "tokenjar panicked:\n{}",
            logs.join("\n")
        );
    }
}

/// Bytes for a case name: printable ASCII as is, anything else as `\xNN`.
fn show(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| {
            if (0x20..0x7f).contains(&b) {
                char::from(b).to_string()
            } else {
                format!("\\x{b:02x}")
            }
        })
        .collect()
}

/// A raw GET with `Host` and `Connection: close`, then `lines` (each a whole
/// header line without CRLF, any bytes).
fn get_with(target: &[u8], lines: &[&[u8]]) -> Vec<u8> {
    let mut req = b"GET ".to_vec();
    req.extend_from_slice(target);
    req.extend_from_slice(b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for line in lines {
        req.extend_from_slice(line);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"\r\n");
    req
}

/// `Cookie: <value>` as a header line.
fn cookie_line(value: &[u8]) -> Vec<u8> {
    [b"Cookie: ".as_slice(), value].concat()
}

/// The `Set-Cookie` for `auth-token` in `reply`: `Some(true)` if it deletes
/// the cookie (`Max-Age=0`, empty value), `Some(false)` if it sets a value,
/// `None` if there is none.
fn auth_cookie_deleted(reply: &Reply) -> Option<bool> {
    reply
        .set_cookie_for("auth-token")
        .map(|c| c.max_age() == Some(0) && c.value.is_empty())
}

/// What a set of `Cookie` header lines must amount to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// The good cookie among them is used.
    LoggedIn,
    /// No usable auth cookie; a refused one is deleted.
    NoCookie { deleted: bool },
}

/// Sends `GET /api/echo` and `GET /api/session` with the given `Cookie`
/// header lines and checks them against `expect`: the token the API got,
/// the session answer and the cookie deletion. Returns a note for the tally.
fn check_cookies(scene: &Scene, case: &str, lines: &[Vec<u8>], expect: Expect) -> String {
    let lines: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
    let before = scene.seen();
    let echo = scene
        .raw(&get_with(b"/api/echo", &lines))
        .unwrap_or_else(|| panic!("{case}: no answer"));
    if echo.status == 431 || (echo.status == 400 && serde_json::from_slice::<Value>(&echo.body).is_err()) {
        // actix-web refused the head itself: tokenjar never saw the request.
        assert!(
            scene.seen_since(before).is_empty(),
            "{case}: refused, yet forwarded"
        );
        return format!("{} - (refused by the HTTP server, API saw nothing)", echo.status);
    }
    assert_eq!(echo.status, 200, "{case}: {}", echo.text());
    let seen = scene.seen_since(before);
    assert_eq!(
        seen.len(),
        1,
        "{case}: the API should get exactly the echo request"
    );
    let seen = &seen[0];
    assert_eq!(seen.target, "/v1/echo", "{case}");
    assert!(
        seen.header_all("cookie").is_empty(),
        "{case}: the Cookie header reached the API"
    );
    let session = scene
        .raw(&get_with(b"/api/session", &lines))
        .unwrap_or_else(|| panic!("{case}: no session answer"));
    assert_eq!(session.status, 200, "{case}: {}", session.text());
    match expect {
        Expect::LoggedIn => {
            assert_eq!(
                seen.header_all("auth-token"),
                vec![scene.token.as_str()],
                "{case}: the API should get the good cookie's token"
            );
            assert_eq!(session.json()["loggedIn"], true, "{case}: {}", session.text());
            assert_eq!(auth_cookie_deleted(&echo), None, "{case}: {:?}", echo.headers);
            assert_eq!(
                auth_cookie_deleted(&session),
                None,
                "{case}: {:?}",
                session.headers
            );
            "200 - (logged in, API got the cookie's token)".to_owned()
        }
        Expect::NoCookie { deleted } => {
            assert!(
                seen.header_all("auth-token").is_empty(),
                "{case}: the API got a token: {:?}",
                seen.headers
            );
            assert_eq!(session.json(), json!({"loggedIn": false}), "{case}");
            let want = deleted.then_some(true);
            assert_eq!(
                auth_cookie_deleted(&echo),
                want,
                "{case}: echo {:?}",
                echo.headers
            );
            assert_eq!(
                auth_cookie_deleted(&session),
                want,
                "{case}: session {:?}",
                session.headers
            );
            format!(
                "200 - (no cookie: API got no token, session loggedIn=false, {})",
                if deleted {
                    "cookie deleted Max-Age=0"
                } else {
                    "nothing deleted"
                }
            )
        }
    }
}

#[actix_web::test]
async fn malformed_and_stuffed_cookie_headers_never_yield_a_foreign_token() {
    let mut scene = Scene::start(&[]).await;
    let mut tally = Tally::new();
    let good = scene.cookie.clone();
    let no = |deleted| Expect::NoCookie { deleted };

    // A huge auth cookie and a huge neighbour of the good one (64 KiB each:
    // under actix-web's 128 KiB head limit, so tokenjar sees them).
    let big = "A".repeat(64 * 1024);
    let junk: Vec<String> = (0..100).map(|i| format!("auth-token=junk{i}")).collect();
    let junk = junk.join("; ");

    let cases: Vec<(&str, Vec<Vec<u8>>, Expect)> = vec![
        // A name without `=` is no cookie at all: nothing to delete.
        ("Cookie: auth-token", vec![cookie_line(b"auth-token")], no(false)),
        // An empty value is an auth cookie that does not open.
        (
            "Cookie: auth-token=;;;",
            vec![cookie_line(b"auth-token=;;;")],
            no(true),
        ),
        ("Cookie: =;=", vec![cookie_line(b"=;=")], no(false)),
        ("Cookie: ;", vec![cookie_line(b";")], no(false)),
        ("Cookie: (empty)", vec![cookie_line(b"")], no(false)),
        (
            "Cookie: auth-token=\"abc (unbalanced quote)",
            vec![cookie_line(b"auth-token=\"abc")],
            no(true),
        ),
        (
            "Cookie: auth-token=\"<good> (good value behind an unbalanced quote)",
            vec![cookie_line(format!("auth-token=\"{}", scene.sealed()).as_bytes())],
            no(true),
        ),
        (
            "Cookie: x=\"abc; <good> (unbalanced quote in a neighbour)",
            vec![cookie_line(format!("x=\"abc; {good}").as_bytes())],
            Expect::LoggedIn,
        ),
        (
            "two Cookie lines, good cookie in the second",
            vec![cookie_line(b"theme=dark; lang=en"), cookie_line(good.as_bytes())],
            Expect::LoggedIn,
        ),
        (
            "two Cookie lines, junk auth-token first, good second",
            vec![cookie_line(b"auth-token=junk"), cookie_line(good.as_bytes())],
            Expect::LoggedIn,
        ),
        (
            "Cookie: auth-token=<64 KiB>",
            vec![cookie_line(format!("auth-token={big}").as_bytes())],
            no(true),
        ),
        (
            "Cookie: pad=<64 KiB>; <good>",
            vec![cookie_line(format!("pad={big}; {good}").as_bytes())],
            Expect::LoggedIn,
        ),
        // Every auth cookie is tried: junk placed first (stuffed by a
        // neighbour, to log the user out) neither hides the good cookie nor
        // gets it deleted.
        (
            "Cookie: 4 junk auth-token pairs then the good one",
            vec![cookie_line(
                format!("auth-token=a; auth-token=b; auth-token=c; auth-token=d; {good}").as_bytes(),
            )],
            Expect::LoggedIn,
        ),
        (
            "Cookie: 100 junk auth-token pairs then the good one",
            vec![cookie_line(format!("{junk}; {good}").as_bytes())],
            Expect::LoggedIn,
        ),
        (
            "100 junk auth-token pairs in one Cookie line, the good one in the next",
            vec![cookie_line(junk.as_bytes()), cookie_line(good.as_bytes())],
            Expect::LoggedIn,
        ),
        (
            "Cookie: 1000 copies of one junk pair then the good one",
            vec![cookie_line(
                format!("{}{good}", "auth-token=junk; ".repeat(1000)).as_bytes(),
            )],
            Expect::LoggedIn,
        ),
        (
            "Cookie: the good auth-token then 100 junk pairs",
            vec![cookie_line(format!("{good}; {junk}").as_bytes())],
            Expect::LoggedIn,
        ),
    ];
    for (case, lines, expect) in cases {
        let outcome = check_cookies(&scene, case, &lines, expect);
        tally.note(case, outcome);
        scene.assert_alive(case);
    }
    scene.assert_still_serving().await;
}

#[actix_web::test]
async fn a_tossed_cookie_beside_the_victims_yields_no_session_and_deletes_nothing() {
    // The victim's session is the scene's; the attacker logs in through the
    // same tokenjar and plants that cookie in the victim's browser (from a
    // sibling subdomain, with a longer path, so that it is sent first).
    let scene = Scene::start(&[]).await;
    let mut tally = Tally::new();
    let victim = scene.cookie.clone();
    let attacker = scene.app.login_cookie().await;
    let attacker_token = scene.api.last_issued().token;
    assert_ne!(attacker_token, scene.token, "two logins, two tokens");
    let metrics_before = scene.app.get_api("/metrics", None).await.text();

    let no_deletion = Expect::NoCookie { deleted: false };
    let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
        (
            "Cookie: <attacker's>; <victim's>",
            vec![cookie_line(format!("{attacker}; {victim}").as_bytes())],
        ),
        (
            "Cookie: <victim's>; <attacker's>",
            vec![cookie_line(format!("{victim}; {attacker}").as_bytes())],
        ),
        (
            "two Cookie lines, the attacker's first",
            vec![cookie_line(attacker.as_bytes()), cookie_line(victim.as_bytes())],
        ),
        (
            "Cookie: junk, <attacker's>, junk, <victim's>",
            vec![cookie_line(
                format!("auth-token=a; {attacker}; auth-token=b; {victim}").as_bytes(),
            )],
        ),
    ];
    for (case, lines) in &cases {
        // No token at all upstream (neither the attacker's nor the victim's),
        // `loggedIn: false`, and no Set-Cookie deleting anything.
        let outcome = check_cookies(&scene, case, lines, no_deletion);
        tally.note(case, outcome);
    }
    // Each request above (an echo and a session per case) was counted as a
    // conflict, and none as a deletion.
    let metrics = scene.app.get_api("/metrics", None).await.text();
    let grew = |name: &str| metric_sum(&metrics, name, &[]) - metric_sum(&metrics_before, name, &[]);
    let requests = (2 * cases.len()) as f64;
    assert_eq!(grew("tokenjar_cookie_conflicts_total"), requests, "{metrics}");
    assert_eq!(grew("tokenjar_cookies_rejected_total"), 0.0, "{metrics}");
    // Logged once per request, naming neither value nor token.
    let logs = scene.app.logs();
    let conflicts: Vec<&String> = logs
        .iter()
        .filter(|l| l.contains("auth cookies open to different sessions"))
        .collect();
    assert_eq!(conflicts.len(), 2 * cases.len(), "{}", logs.join("\n"));
    for secret in [&attacker_token, &scene.token, &attacker, &victim] {
        let (_, tail) = secret.split_at(secret.len() - 16);
        assert!(
            !logs.iter().any(|l| l.contains(tail)),
            "a cookie or token reached the log:\n{}",
            logs.join("\n")
        );
    }
    // Each cookie alone is still its owner's session: nothing was deleted
    // or spoiled, and the victim is back once the tossed cookie is gone.
    for (who, cookie, token) in [
        ("victim", &victim, &scene.token),
        ("attacker", &attacker, &attacker_token),
    ] {
        let before = scene.seen();
        let echo = scene.app.get_api("/api/echo", Some(cookie)).await;
        assert_eq!(echo.status, 200, "{who}: {}", echo.text());
        assert_eq!(
            scene.seen_since(before)[0].header_all("auth-token"),
            vec![token.as_str()],
            "{who}"
        );
    }
    tally.note(
        "each cookie alone afterwards",
        "200 - (its own token upstream: nothing was deleted)",
    );
}

/// Logs in (up to 64 times) until the sealed value satisfies `wanted`; the
/// value. Sealed values are random, so a wanted character (`+` or `/`) turns
/// up within a login or two.
async fn sealed_where(app: &TestApp, wanted: impl Fn(&str) -> bool) -> String {
    for _ in 0..64 {
        let pair = app.login_cookie().await;
        let value = pair.split_once('=').unwrap().1.to_owned();
        if wanted(&value) {
            return value;
        }
    }
    panic!("no sealed value of the wanted shape in 64 logins");
}

#[actix_web::test]
async fn tampered_sealed_cookies_count_as_no_cookie() {
    let mut scene = Scene::start(&[]).await;
    let mut tally = Tally::new();
    let sealed = scene.sealed().to_owned();

    let mut flipped = STANDARD
        .decode(&sealed)
        .expect("the sealed value is standard base64");
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x01;
    let flipped = STANDARD.encode(flipped);
    let flipped_last = {
        let mut raw = STANDARD.decode(&sealed).unwrap();
        *raw.last_mut().unwrap() ^= 0x80;
        STANDARD.encode(raw)
    };
    let url_source = sealed_where(&scene.app, |v| v.contains(['+', '/'])).await;
    let url_safe = URL_SAFE.encode(STANDARD.decode(&url_source).unwrap());
    // Sealed bytes are 12 (nonce) + 1 (`:`, no expiry) + token + 16 (tag):
    // a 20-byte opaque token makes 49 bytes, whose base64 ends in `==`.
    scene.api.push_login_reply(CannedReply::json(
        200,
        &json!({"authToken": "opaque-token-20-byte"}),
    ));
    let padded = scene.app.login("demo", "demo").await;
    assert_eq!(padded.status, 200, "{}", padded.text());
    let padded = padded.set_cookie_for("auth-token").expect("a cookie").value;
    assert!(padded.ends_with("=="), "{padded}");
    let unpadded = padded.trim_end_matches('=').to_owned();
    let url_safe_unpadded = URL_SAFE_NO_PAD.encode(STANDARD.decode(&padded).unwrap());

    // The same keys, another cookie name: the name is the AEAD's associated
    // data, so the value must not open as `auth-token`.
    let other_name = {
        let other = spawn_app(&scene.api.url("/v1"), &[("TOKENJAR_COOKIE__NAME", "other")]);
        let reply = other.login("demo", "demo").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let cookie = reply.set_cookie_for("other").expect("a cookie named other");
        // It does open where it belongs.
        assert_eq!(other.session(Some(&cookie.pair())).await.json()["loggedIn"], true);
        cookie.value
    };

    let cases: Vec<(&str, String)> = vec![
        ("one bit flipped (middle byte)", flipped),
        ("one bit flipped (last byte)", flipped_last),
        ("truncated by 4 characters", sealed[..sealed.len() - 4].to_owned()),
        ("truncated by 1 character", sealed[..sealed.len() - 1].to_owned()),
        ("truncated to 16 characters", sealed[..16].to_owned()),
        ("re-encoded url-safe alphabet", url_safe),
        ("re-encoded padding stripped", unpadded),
        ("re-encoded url-safe, no padding", url_safe_unpadded),
        ("sealed under cookie name `other`, sent as auth-token", other_name),
    ];
    for (case, value) in cases {
        assert_ne!(value, sealed, "{case}: the tampered value must differ");
        let lines = vec![cookie_line(format!("auth-token={value}").as_bytes())];
        let outcome = check_cookies(&scene, case, &lines, Expect::NoCookie { deleted: true });
        tally.note(case, outcome);
        scene.assert_alive(case);
    }
    // The source values themselves were good.
    for value in [&url_source, &padded] {
        let line = cookie_line(format!("auth-token={value}").as_bytes());
        let reply = scene.raw(&get_with(b"/api/session", &[&line])).unwrap();
        assert_eq!(reply.json()["loggedIn"], true, "untampered source value");
    }

    // Sealed with a retired key: log in under K1, restart with K2 only.
    let retired = {
        let k1 = spawn_app(&scene.api.url("/v1"), &[("TOKENJAR_COOKIE__KEYS", KEY_1)]);
        k1.login_cookie().await
    };
    let mut k2 = spawn_app(&scene.api.url("/v1"), &[("TOKENJAR_COOKIE__KEYS", KEY_2)]);
    let before = scene.seen();
    let echo = k2.get_api("/api/echo", Some(&retired)).await;
    assert_eq!(echo.status, 200, "{}", echo.text());
    let seen = scene.seen_since(before);
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0].header_all("auth-token").is_empty(),
        "{:?}",
        seen[0].headers
    );
    assert_eq!(auth_cookie_deleted(&echo), Some(true), "{:?}", echo.headers);
    let session = k2.session(Some(&retired)).await;
    assert_eq!(session.json(), json!({"loggedIn": false}));
    assert_eq!(auth_cookie_deleted(&session), Some(true));
    tally.reply(
        "sealed under a retired key (K1 cookie, restarted with K2 only)",
        &echo,
        "no cookie: API got no token, session loggedIn=false, cookie deleted Max-Age=0",
    );
    // The restarted instance still serves its own sessions.
    let fresh = k2.login_cookie().await;
    assert_eq!(k2.session(Some(&fresh)).await.json()["loggedIn"], true);
    assert!(k2.exit_status().is_none());

    scene.assert_still_serving().await;
}

#[actix_web::test]
async fn a_login_token_that_could_inject_headers_is_502() {
    let mut scene = Scene::start(&[]).await;
    let mut tally = Tally::new();

    for (case, token) in [
        (
            "token with CR LF and a Set-Cookie",
            "tok-inject\r\nSet-Cookie: evil=1",
        ),
        ("token with a bare LF", "tok-inject\ndef"),
        ("token with a bare CR", "tok-inject\rdef"),
        ("token with NUL", "tok-inject\u{0}def"),
        ("token with a tab", "tok-inject\tdef"),
        ("token with DEL", "tok-inject\u{7f}def"),
        ("token with non-ASCII (é)", "tok-inject-t\u{e9}k\u{e9}n"),
        ("token with non-ASCII (emoji)", "tok-inject-\u{1f600}"),
    ] {
        let canned = CannedReply::json(200, &json!({"authToken": token, "user": {"name": "x"}}));
        // `tok-inject`: a needle no request id (hex UUID) or date can contain.
        scene
            .refuses_login_answer(&mut tally, case, canned, &["evil", "tok-inject"])
            .await;
    }
    scene.assert_still_serving().await;
}

/// A smuggling attempt: `head` (without the final CRLF), then `body` and a
/// second request hidden after it, all on one connection.
fn smuggle(head: &str, body: &str) -> Vec<u8> {
    format!(
        "POST /api/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nx-csrf: 1\r\n{head}\r\n{body}\
         GET /api/smuggled HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
}

#[actix_web::test]
async fn request_smuggling_shapes_never_reach_the_api_twice() {
    let mut scene = Scene::start(&[]).await;
    let mut tally = Tally::new();

    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "Content-Length + Transfer-Encoding: chunked",
            smuggle("Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"),
        ),
        (
            "Transfer-Encoding: chunked + Content-Length",
            smuggle(
                "Transfer-Encoding: chunked\r\nContent-Length: 60\r\n",
                "0\r\n\r\n",
            ),
        ),
        (
            "two different Content-Lengths",
            smuggle("Content-Length: 5\r\nContent-Length: 70\r\n", "hello"),
        ),
        (
            "two equal Content-Lengths",
            smuggle("Content-Length: 5\r\nContent-Length: 5\r\n", "hello"),
        ),
        (
            "Content-Length: 5, 70 (one line)",
            smuggle("Content-Length: 5, 70\r\n", "hello"),
        ),
        (
            "obs-folded header line",
            smuggle("X-Folded: a\r\n b\r\nContent-Length: 5\r\n", "hello"),
        ),
        (
            "obs-folded Transfer-Encoding",
            smuggle("Content-Length: 5\r\nTransfer-Encoding:\r\n chunked\r\n", "hello"),
        ),
        (
            "Transfer-Encoding: chunked, identity",
            smuggle(
                "Transfer-Encoding: chunked, identity\r\n",
                "5\r\nhello\r\n0\r\n\r\n",
            ),
        ),
        (
            "Transfer-Encoding: identity, chunked",
            smuggle(
                "Transfer-Encoding: identity, chunked\r\n",
                "5\r\nhello\r\n0\r\n\r\n",
            ),
        ),
        (
            "two Transfer-Encoding lines (identity, chunked)",
            smuggle(
                "Transfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n",
                "5\r\nhello\r\n0\r\n\r\n",
            ),
        ),
        (
            "Transfer-Encoding: xchunked",
            smuggle("Transfer-Encoding: xchunked\r\n", "5\r\nhello\r\n0\r\n\r\n"),
        ),
        (
            "space before the colon (Transfer-Encoding : chunked)",
            smuggle("Transfer-Encoding : chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"),
        ),
        (
            "chunked body with a bad chunk size",
            smuggle(
                "Transfer-Encoding: chunked\r\n",
                "5\r\nhello\r\nZZ\r\nworld\r\n0\r\n\r\n",
            ),
        ),
        (
            "chunked body with an oversized chunk size",
            smuggle(
                "Transfer-Encoding: chunked\r\n",
                "5\r\nhello\r\nFFFFFFFFFFFFFFFFFF\r\nworld\r\n0\r\n\r\n",
            ),
        ),
    ];

    for (case, request) in cases {
        let before = scene.seen();
        let answers = parse_responses(&raw_conversation(scene.app.address, &request));
        let seen = scene.seen_since(before);
        assert!(
            !seen.iter().any(|r| r.target.contains("smuggled")),
            "{case}: the smuggled request reached the API: {:?}",
            seen.iter().map(|r| &r.target).collect::<Vec<_>>()
        );
        assert!(
            seen.len() <= 1,
            "{case}: the API got {} requests: {:?}",
            seen.len(),
            seen.iter().map(|r| &r.target).collect::<Vec<_>>()
        );
        assert!(
            answers.len() <= 1,
            "{case}: the client got {} answers (a smuggled request was served): {:?}",
            answers.len(),
            answers.iter().map(|a| (a.status, a.text())).collect::<Vec<_>>()
        );
        let answer = answers.first();
        let detail = match seen.first() {
            None => "API saw nothing".to_owned(),
            Some(r) => {
                // Whatever got through was the one request with a
                // well-delimited body: each case's only unambiguous body is
                // "hello" (a cut stream may deliver less), never the smuggled
                // bytes or a framing guessed from the conflicting headers.
                assert_eq!(r.target, "/v1/echo", "{case}");
                assert!(
                    b"hello".starts_with(&r.body),
                    "{case}: the API got another body: {:?}",
                    String::from_utf8_lossy(&r.body)
                );
                format!(
                    "API got one POST /v1/echo, body {:?}{}",
                    String::from_utf8_lossy(&r.body),
                    if r.body_complete {
                        ""
                    } else {
                        " (cut: body stream failed)"
                    }
                )
            }
        };
        match answer {
            Some(reply) => {
                if seen.is_empty() {
                    assert_eq!(
                        reply.status,
                        400,
                        "{case}: refused heads are 400: {}",
                        reply.text()
                    );
                } else {
                    assert!(
                        reply.status == 400 || reply.status == 200,
                        "{case}: {} {}",
                        reply.status,
                        reply.text()
                    );
                }
                tally.reply(case, reply, &detail);
            }
            None => tally.note(case, format!("no answer, connection closed ({detail})")),
        }
        scene.assert_alive(case);
    }
    scene.assert_still_serving().await;
}

#[actix_web::test]
async fn oversized_heads_are_refused_by_the_http_server_and_it_survives() {
    let mut scene = Scene::start(&[]).await;
    let mut tally = Tally::new();

    let header_100k = format!("X-Big: {}", "b".repeat(100 * 1024));
    let header_200k = format!("X-Big: {}", "b".repeat(200 * 1024));
    let many: Vec<String> = (0..500).map(|i| format!("X-H{i}: {i}")).collect();
    let many: Vec<&[u8]> = many.iter().map(|h| h.as_bytes()).collect();
    let uri_100k = format!("/api/{}", "u".repeat(100 * 1024));
    let uri_200k = format!("/api/{}", "u".repeat(200 * 1024));

    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "one 100 KiB header",
            get_with(b"/api/echo", &[header_100k.as_bytes()]),
        ),
        (
            "one 200 KiB header",
            get_with(b"/api/echo", &[header_200k.as_bytes()]),
        ),
        ("500 headers", get_with(b"/api/echo", &many)),
        ("100 KiB URI", get_with(uri_100k.as_bytes(), &[])),
        ("200 KiB URI", get_with(uri_200k.as_bytes(), &[])),
    ];
    for (case, request) in cases {
        let before = scene.seen();
        let reply = scene.raw(&request);
        let seen = scene.seen_since(before);
        match reply {
            Some(reply) if reply.status == 200 => {
                // Under actix-web's 128 KiB head limit (and its 96 headers):
                // forwarded like any request.
                assert_eq!(seen.len(), 1, "{case}");
                tally.reply(
                    case,
                    &reply,
                    "accepted and forwarded: under actix-web's 128 KiB head limit",
                );
            }
            Some(reply) => {
                assert!(
                    matches!(reply.status, 400 | 414 | 431),
                    "{case}: {} {}",
                    reply.status,
                    reply.text()
                );
                assert!(seen.is_empty(), "{case}: refused, yet forwarded");
                tally.reply(case, &reply, "refused by actix-web, API saw nothing");
            }
            None => {
                assert!(seen.is_empty(), "{case}: no answer, yet forwarded");
                tally.note(case, "no answer, connection closed (API saw nothing)");
            }
        }
        scene.assert_alive(case);
    }
    scene.assert_still_serving().await;
}

#[actix_web::test]
async fn path_tricks_are_refused_before_the_api() {
    // No base path, so a forwarded path is exactly what the API sees.
    let mut scene = Scene::start_at("", &[]).await;
    let mut tally = Tally::new();

    let refused: [&[u8]; 19] = [
        b"/api/../admin",
        b"/api/%2e%2e/admin",
        b"/api/%2E%2e/admin",
        b"/api/.%2e/admin",
        b"/api/%2e./admin",
        b"/api/..;/admin",
        b"/api/.;x/admin",
        b"/api/a/..%3b/admin",
        b"/api/a%2Fb",
        b"/api/a%2fb",
        b"/api/a\\b",
        b"/api/a%5Cb",
        b"/api/a%5cb",
        b"/api/a%00b",
        b"/api/a%0d%0ab",
        b"/api/a%0Ab",
        b"/api/a%7Fb",
        b"/api/a\x00b",
        b"/api/a\x01b",
    ];
    for target in refused {
        let case = format!("GET {}", show(target));
        let before = scene.seen();
        let reply = scene.raw(&get_with(target, &[]));
        assert!(scene.seen_since(before).is_empty(), "{case}: the API saw it");
        match reply {
            Some(reply) if serde_json::from_slice::<Value>(&reply.body).is_ok() => {
                reply.assert_error(400, "bad_request");
                tally.reply(&case, &reply, "API saw nothing");
            }
            Some(reply) => {
                // Not even a valid request line: actix-web's own plain 400.
                assert_eq!(reply.status, 400, "{case}: {}", reply.text());
                tally.reply(
                    &case,
                    &reply,
                    "actix-web refused the request line, API saw nothing",
                );
            }
            None => tally.note(&case, "no answer, connection closed (API saw nothing)"),
        }
        scene.assert_alive(&case);
    }

    for (target, forwarded) in [
        (b"/api//x".as_slice(), "/x"),
        (b"/api/%ff%fe", "/%ff%fe"),
        (b"/api/%252e%252e/admin", "/%252e%252e/admin"),
        (b"/api/a%3Bb", "/a%3Bb"),
        (b"/api/v1.2/..x/x..", "/v1.2/..x/x.."),
    ] {
        let case = format!("GET {}", show(target));
        let before = scene.seen();
        let reply = scene.raw(&get_with(target, &[])).expect("an answer");
        assert_eq!(reply.status, 200, "{case}: {}", reply.text());
        let seen = scene.seen_since(before);
        assert_eq!(seen.len(), 1, "{case}");
        assert_eq!(seen[0].target, forwarded, "{case}");
        tally.reply(&case, &reply, &format!("forwarded as {forwarded}"));
        scene.assert_alive(&case);
    }
    scene.assert_still_serving().await;
}

#[actix_web::test]
async fn non_utf8_header_bytes_pass_and_the_good_cookie_still_works() {
    let mut scene = Scene::start(&[]).await;
    let mut tally = Tally::new();

    let before = scene.seen();
    let reply = scene
        .raw(&get_with(b"/api/echo", &[b"X-Thing: \xff\xfe"]))
        .expect("an answer");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = scene.seen_since(before);
    assert_eq!(seen.len(), 1);
    // The recording API reads values lossily: the two bytes arrived as such.
    assert_eq!(seen[0].header_all("x-thing"), vec!["\u{fffd}\u{fffd}"]);
    tally.reply("X-Thing: \\xff\\xfe", &reply, "forwarded as is");

    let good = scene.cookie.clone();
    for (case, line) in [
        (
            "Cookie: junk=\\xff\\xfe; <good>",
            [b"Cookie: junk=\xff\xfe; ".as_slice(), good.as_bytes()].concat(),
        ),
        (
            "Cookie: <good>; junk=\\xff\\xfe",
            [b"Cookie: ".as_slice(), good.as_bytes(), b"; junk=\xff\xfe"].concat(),
        ),
        (
            "Cookie: \\xff\\xfe=\\x80; <good>",
            [b"Cookie: \xff\xfe=\x80; ".as_slice(), good.as_bytes()].concat(),
        ),
    ] {
        let line = line.strip_prefix(b"Cookie: ").unwrap().to_vec();
        let outcome = check_cookies(&scene, case, &[cookie_line(&line)], Expect::LoggedIn);
        tally.note(case, outcome);
        scene.assert_alive(case);
    }
    let case = "Cookie: auth-token=\\xff\\xfe";
    let outcome = check_cookies(
        &scene,
        case,
        &[cookie_line(b"auth-token=\xff\xfe")],
        Expect::NoCookie { deleted: true },
    );
    tally.note(case, outcome);
    scene.assert_still_serving().await;
}

#[actix_web::test]
async fn unusable_login_answers_are_502_without_cookie() {
    let mut scene = Scene::start(&[]).await;
    let mut tally = Tally::new();

    let two_mib = format!(
        "{{\"authToken\":\"tok-2mib\",\"pad\":\"{}\"}}",
        "p".repeat(2 * 1024 * 1024)
    );
    let cases: Vec<(&str, CannedReply)> = vec![
        (
            "2 MiB JSON login answer",
            CannedReply::raw(200, "application/json", two_mib),
        ),
        (
            "token is a number",
            CannedReply::json(200, &json!({"authToken": 42})),
        ),
        (
            "token is an object",
            CannedReply::json(200, &json!({"authToken": {"t": "x"}})),
        ),
        (
            "token is an array",
            CannedReply::json(200, &json!({"authToken": ["x"]})),
        ),
        (
            "token is null",
            CannedReply::json(200, &json!({"authToken": null})),
        ),
        (
            "token is an empty string",
            CannedReply::json(200, &json!({"authToken": ""})),
        ),
        (
            "token is true",
            CannedReply::json(200, &json!({"authToken": true})),
        ),
        (
            "token missing",
            CannedReply::json(200, &json!({"user": {"name": "x"}})),
        ),
        (
            "body is a bare string",
            CannedReply::json(200, &json!("tok-bare")),
        ),
        ("body is empty", CannedReply::raw(200, "application/json", "")),
        (
            "not JSON",
            CannedReply::raw(200, "text/plain", "authToken=tok-text"),
        ),
        (
            "truncated JSON",
            CannedReply::raw(200, "application/json", "{\"authToken\":\"tok-cut\""),
        ),
        (
            "gzip Content-Encoding on a 2xx",
            CannedReply::json(200, &json!({"authToken": "tok-gzip"})).with_header("content-encoding", "gzip"),
        ),
        (
            "token repeated elsewhere in the body",
            CannedReply::json(200, &json!({"authToken": "tok-twice", "echo": "tok-twice"})),
        ),
        (
            "token longer than 2900 bytes",
            CannedReply::json(200, &json!({"authToken": "t".repeat(3000)})),
        ),
    ];
    for (case, canned) in cases {
        scene
            .refuses_login_answer(&mut tally, case, canned, &["tok-"])
            .await;
    }
    scene.assert_still_serving().await;
}

#[actix_web::test]
async fn client_sent_token_headers_never_reach_the_api() {
    let mut scene = Scene::start(&[]).await;
    let mut tally = Tally::new();
    let good = scene.cookie.clone();

    for (case, headers, want) in [
        (
            "auth-token: forged, no cookie",
            vec![("auth-token", "forged")],
            None,
        ),
        (
            "AUTH-TOKEN: forged twice, no cookie",
            vec![("AUTH-TOKEN", "forged"), ("auth-token", "forged-2")],
            None,
        ),
        (
            "auth-token: forged, good cookie",
            vec![("auth-token", "forged"), ("cookie", good.as_str())],
            Some(scene.token.clone()),
        ),
        (
            "auth-token: forged, tampered cookie",
            vec![("auth-token", "forged"), ("cookie", "auth-token=AAAA")],
            None,
        ),
    ] {
        scene
            .forwards_only_the_cookie_token(
                &mut tally,
                case,
                &headers,
                "auth-token",
                want.as_deref(),
                ("API got only the cookie's token", "API got no token"),
            )
            .await;
    }

    // The token in `Authorization: Bearer …`: a client's own Authorization
    // is removed too.
    let mut bearer = Scene::start(&[
        ("TOKENJAR_TOKEN__UPSTREAM_HEADER", "authorization"),
        ("TOKENJAR_TOKEN__UPSTREAM_SCHEME", "Bearer"),
    ])
    .await;
    let good = bearer.cookie.clone();
    let expected = format!("Bearer {}", bearer.token);
    for (case, headers, want) in [
        (
            "[authorization] Authorization: Bearer forged, no cookie",
            vec![("authorization", "Bearer forged")],
            None,
        ),
        (
            "[authorization] Authorization: Basic forged, good cookie",
            vec![("authorization", "Basic forged"), ("cookie", good.as_str())],
            Some(expected.clone()),
        ),
        (
            "[authorization] Authorization: Bearer forged, good cookie",
            vec![("authorization", "Bearer forged"), ("cookie", good.as_str())],
            Some(expected.clone()),
        ),
        (
            "[authorization] auth-token: forged is just another header",
            vec![("auth-token", "forged")],
            None,
        ),
    ] {
        bearer
            .forwards_only_the_cookie_token(
                &mut tally,
                case,
                &headers,
                "authorization",
                want.as_deref(),
                ("API got only Bearer <cookie's token>", "API got no Authorization"),
            )
            .await;
    }
    bearer.assert_still_serving().await;
    scene.assert_still_serving().await;
}

/// A cross-site case: its name, method, path and headers.
type CsrfCase<'a> = (String, &'a str, &'a str, Vec<(&'a str, &'a str)>);

#[actix_web::test]
async fn cross_site_requests_are_403_and_reach_nothing() {
    let mut scene = Scene::start(&[]).await;
    let mut tally = Tally::new();
    let good = scene.cookie.clone();
    let own = format!("http://{}", scene.app.address);

    let mut cases: Vec<CsrfCase<'_>> = Vec::new();
    for method in ["POST", "PUT", "PATCH", "DELETE"] {
        cases.push((
            format!("{method} /api/echo without x-csrf"),
            method,
            "/api/echo",
            vec![("cookie", good.as_str())],
        ));
    }
    cases.push((
        "POST /api/login without x-csrf".into(),
        "POST",
        "/api/login",
        vec![("content-type", "application/json")],
    ));
    cases.push((
        "POST /api/logout without x-csrf".into(),
        "POST",
        "/api/logout",
        vec![("cookie", good.as_str())],
    ));
    let own_with_path = format!("{own}/x");
    for (label, extra) in [
        ("Origin: http://evil.example", ("origin", "http://evil.example")),
        ("Origin: null", ("origin", "null")),
        ("Sec-Fetch-Site: cross-site", ("sec-fetch-site", "cross-site")),
        (
            "Origin: own origin plus a path",
            ("origin", own_with_path.as_str()),
        ),
    ] {
        for (method, path) in [
            ("POST", "/api/echo"),
            ("DELETE", "/api/echo"),
            ("POST", "/api/logout"),
        ] {
            cases.push((
                format!("{method} {path} with x-csrf, {label}"),
                method,
                path,
                vec![("x-csrf", "1"), extra, ("cookie", good.as_str())],
            ));
        }
    }
    for (case, method, path, headers) in &cases {
        let before = scene.seen();
        let reply = scene.app.send(method, path, headers, Bytes::new()).await;
        reply.assert_error(403, "csrf");
        assert!(
            reply.header_all("set-cookie").is_empty(),
            "{case}: a refused request must not touch the cookie: {:?}",
            reply.header_all("set-cookie")
        );
        assert!(scene.seen_since(before).is_empty(), "{case}: the API saw it");
        tally.reply(case, &reply, "API saw nothing");
        scene.assert_alive(case);
    }

    // A CORS preflight from a foreign origin is never granted.
    for path in ["/api/echo", "/api/login", "/api/session"] {
        let case = format!("OPTIONS {path} preflight from http://evil.example");
        let before = scene.seen();
        let reply = scene
            .app
            .send(
                "OPTIONS",
                path,
                &[
                    ("origin", "http://evil.example"),
                    ("access-control-request-method", "POST"),
                    ("access-control-request-headers", "x-csrf"),
                ],
                Bytes::new(),
            )
            .await;
        reply.assert_error(403, "csrf");
        assert!(
            !reply
                .headers
                .iter()
                .any(|(n, _)| n.starts_with("access-control-allow")),
            "{case}: {:?}",
            reply.headers
        );
        assert!(scene.seen_since(before).is_empty(), "{case}: the API saw it");
        tally.reply(&case, &reply, "no Access-Control-Allow-*, API saw nothing");
        scene.assert_alive(&case);
    }
    scene.assert_still_serving().await;
}
