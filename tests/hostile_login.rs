//! Login answers tokenjar must refuse, against the real binary: a token that
//! could inject headers, and unusable answers (wrong types, no token, not
//! JSON, too large, compressed). Each is 502 `bad_login_response` with no
//! cookie and no part of the token in the answer.
//!
//! Like every `hostile_*` target, each case checks the exact answer (and
//! SPEC §8 code where tokenjar answers), what the recording API received
//! (nothing, or only the sanitised request), and that the same process
//! still serves a good session afterwards. Each test prints `hostile: <case>
//! -> <status> <code> ...` per case when it ends, so a run's output lists
//! every input and its outcome (tests/support/hostile.rs).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;
use tokenjar_e2e::api::CannedReply;
use tokenjar_e2e::hostile::{Scene, Tally};

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
    ];
    for (case, canned) in cases {
        scene
            .refuses_login_answer(&mut tally, case, canned, &["tok-"])
            .await;
    }
    // Longer than `cookie.max_chunks` (4) cookies hold, and longer than any
    // token tokenjar reads: refused as too large, not as a bad answer.
    for (case, len) in [
        ("token needing more than 4 cookies", 20_000),
        ("token over 64 KiB", 70_000),
    ] {
        let token = "tok-".to_owned() + &"t".repeat(len);
        let canned = CannedReply::json(200, &json!({ "authToken": token }));
        scene
            .refuses_login_answer_as(&mut tally, case, canned, &["tok-"], "token_too_large")
            .await;
    }
    scene.assert_still_serving().await;
}
