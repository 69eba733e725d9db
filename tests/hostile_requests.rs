//! Hostile request framing against the real binary: request-smuggling
//! shapes, oversized heads and path tricks. Nothing reaches the API twice,
//! outside its base path, or past actix-web's limits.
//!
//! Like every `hostile_*` target, each case checks the exact answer (and
//! SPEC §8 code where tokenjar answers), what the recording API received
//! (nothing, or only the sanitised request), and that the same process
//! still serves a good session afterwards. Each test prints `hostile: <case>
//! -> <status> <code> ...` per case when it ends, so a run's output lists
//! every input and its outcome (tests/support/hostile.rs).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use tokenjar_e2e::hostile::{get_with, Scene, Tally};
use tokenjar_e2e::{parse_responses, raw_conversation};

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
