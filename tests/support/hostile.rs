//! What the `hostile_*` targets share: a [`Scene`] (a recording API, a
//! tokenjar in front of it and a good session), a [`Tally`] that prints
//! every case's outcome, and raw request builders that take any bytes.

use bytes::Bytes;
use serde_json::{json, Value};

use crate::api::CannedReply;
use crate::{parse_responses, raw_conversation, spawn_app, Recorded, RecordingApi, Reply, TestApp};

/// The outcome of every case of one test, printed when the test ends (also
/// when it fails, so the cases before the failure are still listed).
#[derive(Default)]
pub struct Tally {
    lines: Vec<String>,
}

impl Tally {
    /// A tally with no case yet.
    pub fn new() -> Self {
        Self { lines: Vec::new() }
    }

    /// Notes `case` and its outcome.
    pub fn note(&mut self, case: &str, outcome: impl Into<String>) {
        self.lines.push(format!("{case} -> {}", outcome.into()));
    }

    /// Notes `case` with `reply`'s status and SPEC §8 code, and `detail`.
    pub fn reply(&mut self, case: &str, reply: &Reply, detail: &str) {
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
pub struct Scene {
    /// The recording API.
    pub api: RecordingApi,
    /// tokenjar in front of it.
    pub app: TestApp,
    /// `auth-token=<sealed>` as a browser sends it back.
    pub cookie: String,
    /// The token sealed in `cookie`.
    pub token: String,
}

impl Scene {
    /// A scene with base path `/v1` and `env` for tokenjar.
    pub async fn start(env: &[(&str, &str)]) -> Self {
        Self::start_at("/v1", env).await
    }

    /// A scene with API base path `base` and `env` for tokenjar.
    pub async fn start_at(base: &str, env: &[(&str, &str)]) -> Self {
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
    pub fn sealed(&self) -> &str {
        self.cookie.split_once('=').unwrap().1
    }

    /// How many requests the API has received so far.
    pub fn seen(&self) -> usize {
        self.api.requests().len()
    }

    /// Requests the API received after the first `before`.
    pub fn seen_since(&self, before: usize) -> Vec<Recorded> {
        self.api.requests().into_iter().skip(before).collect()
    }

    /// Sends raw bytes; the one answer, or `None` if the server closed
    /// without answering.
    pub fn raw(&self, request: &[u8]) -> Option<Reply> {
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
    pub fn assert_alive(&self, case: &str) {
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
    pub async fn refuses_login_answer(
        &self,
        tally: &mut Tally,
        case: &str,
        canned: CannedReply,
        needles: &[&str],
    ) {
        self.refuses_login_answer_as(tally, case, canned, needles, "bad_login_response")
            .await;
    }

    /// [`refuses_login_answer`](Self::refuses_login_answer), the 502
    /// carrying error `code`.
    pub async fn refuses_login_answer_as(
        &self,
        tally: &mut Tally,
        case: &str,
        canned: CannedReply,
        needles: &[&str],
        code: &str,
    ) {
        let before = self.seen();
        self.api.push_login_reply(canned);
        let reply = self.app.login("demo", "demo").await;
        reply.assert_error(502, code);
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
    pub async fn forwards_only_the_cookie_token(
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
    pub async fn assert_still_serving(&mut self) {
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

/// A raw GET with `Host` and `Connection: close`, then `lines` (each a whole
/// header line without CRLF, any bytes).
pub fn get_with(target: &[u8], lines: &[&[u8]]) -> Vec<u8> {
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
pub fn cookie_line(value: &[u8]) -> Vec<u8> {
    [b"Cookie: ".as_slice(), value].concat()
}
