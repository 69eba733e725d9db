//! End-to-end tests that bodies stream through tokenjar with bounded memory
//! (SPEC §3) and that `server.max_body_bytes` is enforced (SPEC §2, §8).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt as _;
use tokenjar_e2e::pattern::{chunks, PatternCheck};
use tokenjar_e2e::{setup_with, TestApp};

/// 256 MiB.
const BIG: u64 = 256 * 1024 * 1024;

/// tokenjar's peak resident memory must stay under this while streaming.
const RSS_LIMIT_KIB: u64 = 64 * 1024;

/// Environment for the big transfers: no upstream head timeout can cut a
/// slow debug-build transfer short.
const SLOW_OK: [(&str, &str); 1] = [("TOKENJAR_UPSTREAM__TIMEOUT_MS", "600000")];

fn big_client() -> awc::Client {
    awc::Client::builder().timeout(Duration::from_secs(600)).finish()
}

fn pattern_stream(total: u64) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::iter(chunks(total).map(Ok::<_, std::io::Error>))
}

/// Prints tokenjar's peak resident memory after a big `what` (`upload`,
/// `download`) that began at `started` with `before` KiB, and asserts the
/// peak stayed under [`RSS_LIMIT_KIB`]: the body streamed, it was never held
/// whole.
fn assert_bounded_memory(app: &TestApp, what: &str, before: u64, started: Instant) {
    let peak = app.peak_rss_kib();
    eprintln!(
        "tokenjar VmHWM: {peak} KiB after a {} MiB {what} in {:?} (before: {before} KiB)",
        BIG >> 20,
        started.elapsed()
    );
    assert!(
        peak < RSS_LIMIT_KIB,
        "tokenjar peaked at {peak} KiB during a 256 MiB {what}; limit {RSS_LIMIT_KIB} KiB"
    );
}

#[actix_web::test]
async fn a_256_mib_upload_streams_through_with_bounded_memory() {
    let (api, app) = setup_with(&SLOW_OK);
    let before = app.peak_rss_kib();
    let started = Instant::now();

    let mut res = big_client()
        .post(app.url("/api/upload"))
        .insert_header(("x-csrf", "1"))
        .insert_header(("content-type", "application/octet-stream"))
        .send_stream(pattern_stream(BIG))
        .await
        .expect("upload through tokenjar");
    let body = res.body().await.expect("upload answer");
    assert_eq!(res.status().as_u16(), 200, "{}", String::from_utf8_lossy(&body));
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["received"], BIG, "the API must get every byte: {answer}");
    assert_eq!(answer["intact"], true, "the bytes must arrive unchanged");
    let seen = api.last_request();
    assert_eq!(seen.target, "/v1/upload");
    assert_eq!(seen.body_len, BIG);

    assert_bounded_memory(&app, "upload", before, started);
}

#[actix_web::test]
async fn a_256_mib_download_streams_through_with_bounded_memory() {
    let (api, app) = setup_with(&SLOW_OK);
    let before = app.peak_rss_kib();
    let started = Instant::now();

    let mut res = big_client()
        .get(app.url(&format!("/api/download/{BIG}")))
        .send()
        .await
        .expect("download through tokenjar");
    assert_eq!(res.status().as_u16(), 200);
    let mut check = PatternCheck::new();
    while let Some(piece) = res.next().await {
        check.feed(&piece.expect("download body"));
    }
    assert_eq!(check.received(), BIG, "the client must get every byte");
    assert!(check.intact(), "the bytes must arrive unchanged");
    assert_eq!(api.last_request().target, format!("/v1/download/{BIG}"));

    assert_bounded_memory(&app, "download", before, started);
}

#[actix_web::test]
async fn bodies_over_max_body_bytes_are_413() {
    let (api, app) = setup_with(&[("TOKENJAR_SERVER__MAX_BODY_BYTES", "1024")]);
    let headers = [("x-csrf", "1"), ("content-type", "application/octet-stream")];

    // At the limit: forwarded whole.
    let reply = app
        .send("POST", "/api/upload", &headers, Bytes::from(vec![7u8; 1024]))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(api.last_request().body_len, 1024);

    // Over it, with a Content-Length.
    let reply = app
        .send("POST", "/api/upload", &headers, Bytes::from(vec![7u8; 4096]))
        .await;
    reply.assert_error(413, "payload_too_large");

    // Over it, chunked (no length known in advance): counted while streaming.
    let mut res = app
        .client()
        .post(app.url("/api/upload"))
        .insert_header(("x-csrf", "1"))
        .send_stream(pattern_stream(4096))
        .await
        .expect("chunked upload");
    let status = res.status().as_u16();
    let body = res.body().await.expect("413 body");
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_else(|_| {
        panic!(
            "status {status}, non-JSON body {:?}",
            String::from_utf8_lossy(&body)
        )
    });
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"], "payload_too_large", "{body}");
    assert!(
        api.requests().iter().all(|r| r.body_len <= 1024),
        "no more than the limit may reach the API"
    );
}
