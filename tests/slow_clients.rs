//! Slow clients of the tokenjar binary hurt nobody else: a slowloris is cut
//! off, a client that never reads holds back its own download only (with
//! bounded memory), and stalled uploads never hold the API connections
//! others need.
//!
//! The tests print their measurements (`--nocapture` shows them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokenjar_e2e::endurance::{get, percentile, Baseline, Pacer, HOST, IO_TIMEOUT, RSS_LIMIT_KIB};
use tokenjar_e2e::hostile_api::{HostileApi, Interim};
use tokenjar_e2e::load::Conn;
use tokenjar_e2e::pattern::PatternCheck;
use tokenjar_e2e::{spawn_app, RecordingApi};

/// Requests a normal client makes while others misbehave, until `stop`:
/// (answers that were 200, the rest described, latencies).
fn normal_client(addr: SocketAddr, stop: &AtomicBool) -> (usize, Vec<String>, Vec<Duration>) {
    let mut conn = Conn::connect(addr, IO_TIMEOUT).expect("connect");
    let mut pacer = Pacer::new(Duration::from_millis(10));
    let (mut ok, mut bad, mut latencies) = (0, Vec::new(), Vec::new());
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        pacer.wait();
        n += 1;
        let started = Instant::now();
        match conn.request(&get(&format!("/api/normal/{n}"), None)) {
            Ok(reply) if reply.status == 200 => ok += 1,
            Ok(reply) => bad.push(format!("{} {}", reply.status, reply.text())),
            Err(err) => {
                bad.push(format!("no answer: {err}"));
                conn = Conn::connect(addr, IO_TIMEOUT).expect("reconnect");
            }
        }
        latencies.push(started.elapsed());
    }
    latencies.sort();
    (ok, bad, latencies)
}

/// Slow clients at once.
const SLOWLORIS: usize = 8;
/// The slowloris guard configured for the test.
const CLIENT_REQUEST_TIMEOUT: Duration = Duration::from_millis(1000);
/// The longest a normal client's answer may take while others misbehave.
const FAST: Duration = Duration::from_secs(1);

/// How a slowloris connection ended.
#[derive(Debug)]
struct Dribbled {
    /// From connecting to the server's 408 or close.
    cut_after: Duration,
    /// Header bytes sent by then.
    bytes_sent: usize,
    /// What the server wrote.
    answer: String,
}

/// Connects and dribbles a request head one byte every 100 ms (the behaviour
/// under test), never finishing it, until the server answers or closes.
fn slowloris(addr: SocketAddr, path: &str) -> Dribbled {
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\nX-Dribble: ").into_bytes();
    head.resize(400, b'a');
    let started = Instant::now();
    let mut writer = TcpStream::connect(addr).expect("connect");
    writer.set_nodelay(true).expect("nodelay");
    let mut reader = writer.try_clone().expect("clone the socket");
    // Ten times the configured guard: past it the server never cut us off.
    reader
        .set_read_timeout(Some(CLIENT_REQUEST_TIMEOUT * 10))
        .expect("timeout");
    let cut = AtomicBool::new(false);
    let sent = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for byte in &head {
                if cut.load(Ordering::SeqCst) || writer.write_all(std::slice::from_ref(byte)).is_err() {
                    break;
                }
                sent.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let mut answer = Vec::new();
        let mut chunk = [0u8; 4096];
        let mut cut_after = None;
        loop {
            match reader.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    cut_after.get_or_insert_with(|| started.elapsed());
                    answer.extend_from_slice(&chunk[..n]);
                }
                Err(err) if err.kind() == ErrorKind::ConnectionReset => break,
                Err(err) => {
                    cut.store(true, Ordering::SeqCst);
                    panic!(
                        "a slowloris client was still connected after {:?} ({err}); sent {} bytes",
                        started.elapsed(),
                        sent.load(Ordering::SeqCst)
                    );
                }
            }
        }
        cut.store(true, Ordering::SeqCst);
        Dribbled {
            cut_after: cut_after.unwrap_or_else(|| started.elapsed()),
            bytes_sent: sent.load(Ordering::SeqCst),
            answer: String::from_utf8_lossy(&answer).into_owned(),
        }
    })
}

/// With `server.client_request_timeout_ms = 1000`, 8 clients that dribble a
/// request head one byte per 100 ms each get a 408 (or a close) between
/// 0.8 s and 2.5 s after connecting, while a normal client on the same
/// (single) worker keeps getting 200s, each within 1 s.
#[test]
fn a_slowloris_is_cut_off_and_others_are_unaffected() {
    let api = RecordingApi::start_counting();
    let app = spawn_app(
        &api.url("/v1"),
        &[
            ("TOKENJAR_SERVER__WORKERS", "1"),
            (
                "TOKENJAR_SERVER__CLIENT_REQUEST_TIMEOUT_MS",
                &CLIENT_REQUEST_TIMEOUT.as_millis().to_string(),
            ),
        ],
    );
    let stop = AtomicBool::new(false);
    let (dribbled, normal) = std::thread::scope(|scope| {
        let normal = scope.spawn(|| normal_client(app.address, &stop));
        let slow: Vec<_> = (0..SLOWLORIS)
            .map(|i| {
                let addr = app.address;
                scope.spawn(move || slowloris(addr, &format!("/api/slow/{i}")))
            })
            .collect();
        let dribbled: Vec<Dribbled> = slow.into_iter().map(|s| s.join().expect("slowloris")).collect();
        stop.store(true, Ordering::Relaxed);
        (dribbled, normal.join().expect("normal client"))
    });
    let (ok, bad, latencies) = normal;
    let cuts: Vec<Duration> = dribbled.iter().map(|d| d.cut_after).collect();
    eprintln!(
        "slowloris: {SLOWLORIS} dribbling clients cut after {:?} (sent {:?} bytes); first answer {:?}; \
         meanwhile a normal client got {ok} 200s, {} failures, latency p50 {:?} max {:?}",
        cuts,
        dribbled.iter().map(|d| d.bytes_sent).collect::<Vec<_>>(),
        dribbled[0]
            .answer
            .lines()
            .next()
            .unwrap_or("(closed without an answer)"),
        bad.len(),
        percentile(&latencies, 0.5),
        latencies.last().copied().unwrap_or_default()
    );
    for d in &dribbled {
        assert!(
            d.answer.is_empty() || d.answer.starts_with("HTTP/1.1 408"),
            "a slowloris gets a 408 or a close, not {:?}",
            d.answer
        );
        assert!(
            d.cut_after >= CLIENT_REQUEST_TIMEOUT * 8 / 10 && d.cut_after <= CLIENT_REQUEST_TIMEOUT * 5 / 2,
            "a slowloris was cut after {:?}; expected about {CLIENT_REQUEST_TIMEOUT:?}",
            d.cut_after
        );
    }
    assert!(bad.is_empty(), "normal requests failed meanwhile: {bad:?}");
    assert!(ok >= 20, "the normal client got only {ok} answers meanwhile");
    let slowest = latencies.last().copied().unwrap_or_default();
    assert!(
        slowest < FAST,
        "a normal request took {slowest:?} while slowloris clients were connected"
    );
}

/// The stalled download.
const BIG: u64 = 256 * 1024 * 1024;

/// A client asks for a 256 MiB download and reads nothing. While it stalls,
/// a normal client on the same (single) worker keeps getting 200s within
/// 1 s; once the API can push no more (its sent-byte count stops growing),
/// the API has sent far less than the whole body and tokenjar's peak memory
/// (`VmHWM`) is under 64 MiB: the response is not buffered. The stalled
/// download then resumes intact when read, and after it is dropped
/// tokenjar's fds return to the baseline.
#[test]
fn a_client_that_never_reads_does_not_block_others() {
    let api = RecordingApi::start_counting();
    let app = spawn_app(
        &api.url("/v1"),
        &[
            ("TOKENJAR_SERVER__WORKERS", "1"),
            ("TOKENJAR_UPSTREAM__TIMEOUT_MS", "600000"),
        ],
    );
    // Warm-up: small answers and whole downloads, read as they come, so the
    // baseline has the streaming buffers in use already.
    let mut warm = Conn::connect(app.address, IO_TIMEOUT).expect("connect");
    for n in 0..20 {
        let path = if n % 5 == 0 {
            format!("/api/download/{}", 16 * 1024 * 1024)
        } else {
            format!("/api/warm/{n}")
        };
        let reply = warm.request(&get(&path, None)).expect("warm-up");
        assert_eq!(reply.status, 200, "warm-up: {}", reply.text());
    }
    drop(warm);
    let baseline = Baseline::take(&app);
    // The API's count includes the warm-up downloads.
    let sent_before = api.download_bytes_sent();

    let mut stalled = Conn::connect(app.address, Duration::from_secs(30)).expect("connect");
    stalled
        .send(&get(&format!("/api/download/{BIG}"), None))
        .expect("ask for the download");
    let stop = AtomicBool::new(false);
    let (settled, normal) = std::thread::scope(|scope| {
        let normal = scope.spawn(|| normal_client(app.address, &stop));
        // The API pushes until every buffer between it and the stalled reader
        // is full; wait for its count to stop growing (the same for 10
        // readings 100 ms apart), or for the whole body to have gone.
        let deadline = Instant::now() + Duration::from_secs(60);
        let (mut last, mut same) = (0, 0);
        while same < 10 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            let now = api.download_bytes_sent() - sent_before;
            same = if now == last && now > 0 { same + 1 } else { 0 };
            last = now;
        }
        stop.store(true, Ordering::Relaxed);
        (last, normal.join().expect("normal client"))
    });
    let queued = stalled.queued_bytes(64 * 1024 * 1024).expect("peek");
    let hwm = app.peak_rss_kib();
    let rss = app.rss_kib();
    let (ok, bad, latencies) = normal;
    eprintln!(
        "stalled reader: the API sent {} KiB of {} MiB and stopped; {} KiB wait in the client's \
         socket; tokenjar VmRSS {rss} KiB, VmHWM {hwm} KiB; meanwhile a normal client got {ok} 200s, \
         {} failures, latency p50 {:?} max {:?}",
        settled / 1024,
        BIG >> 20,
        queued / 1024,
        bad.len(),
        percentile(&latencies, 0.5),
        latencies.last().copied().unwrap_or_default()
    );
    assert!(
        bad.is_empty(),
        "normal requests failed while a client stalled: {bad:?}"
    );
    assert!(ok >= 20, "the normal client got only {ok} answers meanwhile");
    let slowest = latencies.last().copied().unwrap_or_default();
    assert!(
        slowest < FAST,
        "a normal request took {slowest:?} while a client stalled"
    );
    assert!(
        settled < BIG / 4,
        "the API pushed {settled} bytes of {BIG} to a client that reads nothing: tokenjar buffers them"
    );
    assert!(
        hwm < RSS_LIMIT_KIB,
        "tokenjar peaked at {hwm} KiB with a stalled 256 MiB download; limit {RSS_LIMIT_KIB} KiB"
    );

    // The stalled download is alive and intact when read again.
    let (status, _) = stalled.read_head().expect("the download's head");
    assert_eq!(status, 200);
    let mut check = PatternCheck::new();
    while check.received() < 16 * 1024 * 1024 {
        let bytes = stalled.read_some().expect("the download resumes");
        assert!(!bytes.is_empty(), "the stalled download was closed");
        check.feed(&bytes);
    }
    assert!(check.intact(), "the resumed download is the API's bytes");
    drop(stalled);
    baseline.assert_returned(&app, "stalled reader");
}

/// API connections per worker in the slow-upload test: small, so that a
/// handful of slow uploaders would hold them all.
const UPLOAD_POOL: usize = 4;
/// Slow uploaders of each size.
const SLOW_UPLOADERS: usize = 2 * UPLOAD_POOL;
/// The pause allowed between two reads of a request body in that test.
const BODY_TIMEOUT: Duration = Duration::from_millis(1500);

/// A client that announces a body of `length` bytes, sends one byte and
/// stalls; its connection, to read the answer from later.
fn stalled_upload(addr: SocketAddr, n: usize, length: usize) -> TcpStream {
    let mut conn = TcpStream::connect(addr).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let head = format!(
        "POST /api/upload/slow{n} HTTP/1.1\r\nHost: {HOST}\r\nX-Csrf: 1\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {length}\r\n\r\nx"
    );
    conn.write_all(head.as_bytes()).expect("send the stalled upload");
    conn
}

/// The status line of the answer on a stalled upload's connection.
fn answer_of(mut conn: TcpStream) -> String {
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    while find_crlf(&answer).is_none() {
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
        }
    }
    let line = String::from_utf8_lossy(&answer).into_owned();
    line.lines()
        .next()
        .unwrap_or("(closed without an answer)")
        .to_owned()
}

fn find_crlf(bytes: &[u8]) -> Option<usize> {
    bytes.windows(2).position(|w| w == b"\r\n")
}

/// Slow uploads cannot starve the API connection pool: with 4 API
/// connections per worker, 8 clients announcing a small body (100 bytes)
/// and 8 announcing a large one (100,000 bytes) each send one byte and
/// stall. Meanwhile a normal client's requests all get 200 (before the fix
/// they waited for a pooled connection until `upstream.timeout_ms` and got
/// 504). Small bodies are read whole before a connection is taken, large
/// ones stream over a pool of their own; each stalled uploader is then
/// answered 408 `request_timeout` once `server.client_body_timeout_ms`
/// passes (a large one still waiting for an upload connection may get 504
/// instead), and none ever gets 200.
#[test]
fn slow_uploads_never_hold_the_api_connections_of_others() {
    let api = HostileApi::start(Interim::default());
    let pool = UPLOAD_POOL.to_string();
    let body_timeout = BODY_TIMEOUT.as_millis().to_string();
    let app = spawn_app(
        &api.url("/v1"),
        &[
            ("TOKENJAR_SERVER__WORKERS", "1"),
            ("TOKENJAR_UPSTREAM__POOL_SIZE", &pool),
            ("TOKENJAR_UPSTREAM__TIMEOUT_MS", "3000"),
            ("TOKENJAR_SERVER__CLIENT_BODY_TIMEOUT_MS", &body_timeout),
        ],
    );
    let small: Vec<TcpStream> = (0..SLOW_UPLOADERS)
        .map(|n| stalled_upload(app.address, n, 100))
        .collect();
    let large: Vec<TcpStream> = (0..SLOW_UPLOADERS)
        .map(|n| stalled_upload(app.address, SLOW_UPLOADERS + n, 100_000))
        .collect();
    // The large uploads stream: wait until they hold as many connections
    // to the API as the pool has (a condition, bounded, not a fixed pause).
    let deadline = Instant::now() + Duration::from_secs(10);
    while api.connections() < UPLOAD_POOL as u64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        api.connections() >= UPLOAD_POOL as u64,
        "the large uploads never reached the API"
    );

    let mut conn = Conn::connect(app.address, IO_TIMEOUT).expect("connect");
    let mut latencies = Vec::new();
    let mut failures = Vec::new();
    for n in 0..20 {
        let started = Instant::now();
        match conn.request(&get(&format!("/api/normal/{n}"), None)) {
            Ok(reply) if reply.status == 200 => {}
            Ok(reply) => failures.push(format!("{} {}", reply.status, reply.text())),
            Err(err) => {
                failures.push(format!("no answer: {err}"));
                conn = Conn::connect(app.address, IO_TIMEOUT).expect("reconnect");
            }
        }
        latencies.push(started.elapsed());
    }
    latencies.sort();
    let small_answers: Vec<String> = small.into_iter().map(answer_of).collect();
    let large_answers: Vec<String> = large.into_iter().map(answer_of).collect();
    eprintln!(
        "slow uploads: a normal client got {} of 20 answers right (p50 {:?}, max {:?}) beside \
         {SLOW_UPLOADERS} small and {SLOW_UPLOADERS} large stalled uploads; they got {small_answers:?} \
         and {large_answers:?}",
        20 - failures.len(),
        percentile(&latencies, 0.5),
        latencies.last().copied().unwrap_or_default(),
    );
    assert!(
        failures.is_empty(),
        "normal requests failed meanwhile: {failures:?}"
    );
    for answer in &small_answers {
        assert!(
            answer.starts_with("HTTP/1.1 408"),
            "a stalled small upload got {answer:?}"
        );
    }
    for answer in &large_answers {
        assert!(
            answer.starts_with("HTTP/1.1 408") || answer.starts_with("HTTP/1.1 504"),
            "a stalled large upload got {answer:?}"
        );
    }
}
