//! A slow, resetting or truncating API behind the tokenjar binary: a slow
//! one gets 504 on time, a body cut by a reset or a missing last chunk
//! reaches the client as a cut stream (never as a whole one, never as a
//! hang), a cut login reply logs no one in, and afterwards tokenjar's memory
//! and descriptors are back at their baseline.
//!
//! The tests print their measurements (`--nocapture` shows them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use tokenjar_e2e::endurance::{auth_cookie, get, login_request, percentile, Baseline, HOST, IO_TIMEOUT};
use tokenjar_e2e::load::{chunked_progress, Conn, ScriptedUpstream};
use tokenjar_e2e::pattern::{chunks, make_jwt, PatternCheck};
use tokenjar_e2e::raw::{raw_request, RawUpstream};
use tokenjar_e2e::{spawn_app, unix_now, RecordingApi, Reply, TestApp};

/// Concurrent requests to the slow API.
const SLOW_REQUESTS: usize = 16;

/// The API answers after 1 s, tokenjar waits 300 ms: 16 concurrent requests,
/// three times over, each get 504 `upstream_timeout` after 300 ms and well
/// before the API would have answered; then tokenjar's fds and memory return
/// to their baseline and a normal request is served.
#[test]
fn a_slow_api_is_504_and_memory_returns_to_baseline() {
    let api = RecordingApi::start();
    let app = spawn_app(
        &api.url("/v1"),
        &[
            ("TOKENJAR_SERVER__WORKERS", "1"),
            ("TOKENJAR_UPSTREAM__TIMEOUT_MS", "300"),
        ],
    );
    for i in 0..20 {
        let reply = app.raw(&format!(
            "GET /api/warm/{i} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n"
        ));
        assert_eq!(reply.status, 200, "warm-up: {}", reply.text());
    }
    let baseline = Baseline::take(&app);

    let mut elapsed = Vec::new();
    for round in 0..3 {
        let replies: Vec<(Reply, Duration)> = std::thread::scope(|scope| {
            let requests: Vec<_> = (0..SLOW_REQUESTS)
                .map(|i| {
                    let addr = app.address;
                    scope.spawn(move || {
                        let mut conn = Conn::connect(addr, IO_TIMEOUT).expect("connect");
                        let started = Instant::now();
                        let reply = conn
                            .request(&get(&format!("/api/delay/1000?r={round}&i={i}"), None))
                            .unwrap_or_else(|err| panic!("no answer to a slow request: {err}"));
                        (reply, started.elapsed())
                    })
                })
                .collect();
            requests
                .into_iter()
                .map(|r| r.join().expect("request thread"))
                .collect()
        });
        for (reply, took) in replies {
            reply.assert_error(504, "upstream_timeout");
            elapsed.push(took);
        }
    }
    elapsed.sort();
    eprintln!(
        "slow API: {} requests answered 504 upstream_timeout in {:?} .. {:?} (median {:?})",
        elapsed.len(),
        elapsed[0],
        elapsed[elapsed.len() - 1],
        percentile(&elapsed, 0.5)
    );
    assert!(
        elapsed[0] >= Duration::from_millis(300),
        "a 504 came before upstream.timeout_ms (300 ms): {:?}",
        elapsed[0]
    );
    assert!(
        elapsed[elapsed.len() - 1] < Duration::from_millis(1000),
        "a 504 took {:?}: tokenjar waited for the slow API instead of its 300 ms timeout",
        elapsed[elapsed.len() - 1]
    );

    baseline.assert_returned(&app, "slow API");
    let reply = app.raw(&format!(
        "GET /api/after HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n"
    ));
    assert_eq!(
        reply.status,
        200,
        "a normal request after the timeouts: {}",
        reply.text()
    );
}

/// A download cut by the API, as the client saw it.
#[derive(Debug)]
struct CutStream {
    status: u16,
    headers: Vec<(String, String)>,
    /// Body bytes received (raw bytes on the wire for a chunked response).
    received: Vec<u8>,
    /// How the connection ended: "closed" (FIN), "reset", or left open after
    /// a chunked body that looks complete.
    ended: &'static str,
    /// From the API's hang-up to the client seeing the end.
    noticed_in: Duration,
}

/// Sends a GET through tokenjar to the scripted upstream, lets the upstream
/// write `head_and_part`, waits until the client has `part_len` body bytes,
/// hangs up the upstream with `hang_up`, and reads the client side until it
/// ends. Panics if the client's stream neither ends nor resets within
/// [`IO_TIMEOUT`] (a hang).
fn cut_download(
    app: &TestApp,
    upstream: &ScriptedUpstream,
    path: &str,
    head_and_part: &[u8],
    part_len: usize,
    reset: bool,
) -> CutStream {
    let mut client = Conn::connect(app.address, IO_TIMEOUT).expect("connect to tokenjar");
    client.send(&get(path, None)).expect("send");
    let mut conn = upstream.next_conn(IO_TIMEOUT);
    if reset {
        // Keep the request unread: closing then resets the connection.
        conn.peek_head();
    } else {
        conn.read_head();
    }
    conn.write(head_and_part);
    let (status, headers) = client.read_head().expect("the response head through tokenjar");
    let mut received = Vec::new();
    while received.len() < part_len {
        let bytes = client
            .read_some()
            .unwrap_or_else(|err| panic!("reading the first part of the body: {err}"));
        assert!(
            !bytes.is_empty(),
            "tokenjar closed before forwarding the body's first part"
        );
        received.extend(bytes);
    }
    let hung_up = Instant::now();
    if reset {
        conn.reset();
    } else {
        conn.close();
    }
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    let ended = loop {
        if chunked && chunked_progress(&received).1 {
            // The final chunk came: the connection may stay open for the
            // next request, and the client believes it has the whole body.
            break "left open after a final chunk";
        }
        match client.read_some() {
            Ok(bytes) if bytes.is_empty() => break "closed",
            Ok(bytes) => received.extend(bytes),
            Err(err) if err.kind() == ErrorKind::ConnectionReset => break "reset",
            Err(err) => panic!(
                "after the API hung up, the client's download neither ended nor was reset \
                 ({err}, {:?} later, {} bytes received): a hang",
                hung_up.elapsed(),
                received.len()
            ),
        }
    };
    CutStream {
        status,
        headers,
        received,
        ended,
        noticed_in: hung_up.elapsed(),
    }
}

/// Rounds of each broken download (leaks show over many).
const CUT_ROUNDS: usize = 20;
/// The first part of a cut body.
const CUT_PART: usize = 64 * 1024;

/// tokenjar in front of a scripted upstream, with its baseline taken after
/// it served small answers and whole 1 MiB bodies (with a length and
/// chunked): the same buffers a cut download uses are then warm, so the
/// allocator's one-time growth is not taken for a leak.
fn scripted_app() -> (ScriptedUpstream, TestApp, Baseline) {
    let upstream = ScriptedUpstream::start();
    let app = spawn_app(&upstream.url("/v1"), &[("TOKENJAR_SERVER__WORKERS", "1")]);
    let body: Vec<u8> = chunks(1024 * 1024).flat_map(|c| c.to_vec()).collect();
    for _ in 0..3 {
        assert_normal_request(&app, &upstream);
        for chunked in [false, true] {
            let mut client = Conn::connect(app.address, IO_TIMEOUT).expect("connect");
            client.send(&get("/api/whole", None)).expect("send");
            let mut conn = upstream.next_conn(IO_TIMEOUT);
            conn.read_head();
            let mut answer = b"HTTP/1.1 200 OK\r\nConnection: close\r\n".to_vec();
            if chunked {
                answer.extend(format!("Transfer-Encoding: chunked\r\n\r\n{:x}\r\n", body.len()).bytes());
                answer.extend_from_slice(&body);
                answer.extend_from_slice(b"\r\n0\r\n\r\n");
            } else {
                answer.extend(format!("Content-Length: {}\r\n\r\n", body.len()).bytes());
                answer.extend_from_slice(&body);
            }
            conn.write(&answer);
            conn.close();
            let reply = client.read_response(false).expect("a whole body");
            assert_eq!((reply.status, reply.body.len()), (200, body.len()), "warm-up");
        }
    }
    let baseline = Baseline::take(&app);
    (upstream, app, baseline)
}

/// A normal request through tokenjar to the scripted upstream answers 200.
fn assert_normal_request(app: &TestApp, upstream: &ScriptedUpstream) {
    let mut client = Conn::connect(app.address, IO_TIMEOUT).expect("connect");
    client
        .send(format!("GET /api/normal HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n").as_bytes())
        .expect("send");
    let head = upstream.serve_ok(IO_TIMEOUT);
    assert!(head.starts_with("GET /v1/normal "), "{head}");
    let reply = client.read_response(false).expect("an answer");
    assert_eq!((reply.status, reply.text().as_str()), (200, "ok"));
}

/// The API sends `Content-Length: 1 MiB`, 64 KiB of it, then resets the
/// connection: the client gets the head and fewer than 1 MiB bytes, then the
/// connection ends (closed or reset) at once, never a hang; 20 times over,
/// after which tokenjar's fds and memory are back at baseline and it serves
/// normally.
#[test]
fn an_api_reset_mid_body_cuts_the_stream_cleanly() {
    let (upstream, app, baseline) = scripted_app();
    let total = 1024 * 1024;
    let part: Vec<u8> = chunks(CUT_PART as u64).flat_map(|c| c.to_vec()).collect();
    let mut head_and_part = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {total}\r\n\r\n"
    )
    .into_bytes();
    head_and_part.extend_from_slice(&part);

    let mut slowest = Duration::ZERO;
    let mut endings = Vec::new();
    for round in 0..CUT_ROUNDS {
        let cut = cut_download(
            &app,
            &upstream,
            &format!("/api/reset/{round}"),
            &head_and_part,
            CUT_PART,
            true,
        );
        if round == 0 {
            eprintln!(
                "reset mid-body: client got {} {:?}, {} of {total} body bytes, then the connection {} \
                 {:?} after the API's reset",
                cut.status,
                cut.headers,
                cut.received.len(),
                cut.ended,
                cut.noticed_in
            );
        }
        assert_eq!(cut.status, 200, "the head was already sent");
        let length = cut.headers.iter().find(|(n, _)| n == "content-length");
        assert_eq!(
            length.map(|(_, v)| v.as_str()),
            Some(total.to_string().as_str()),
            "the API's length is announced: {:?}",
            cut.headers
        );
        assert!(
            cut.received.len() < total,
            "the client must see a cut stream, not {} bytes of {total}",
            cut.received.len()
        );
        let mut check = PatternCheck::new();
        check.feed(&cut.received);
        assert!(check.intact(), "the bytes that came through are the API's");
        slowest = slowest.max(cut.noticed_in);
        endings.push(cut.ended);
    }
    eprintln!(
        "reset mid-body: {CUT_ROUNDS} rounds, client saw the end within {slowest:?} ({} closed, {} reset)",
        endings.iter().filter(|e| **e == "closed").count(),
        endings.iter().filter(|e| **e == "reset").count()
    );
    baseline.assert_returned(&app, "reset mid-body");
    assert_normal_request(&app, &upstream);
}

/// The API sends a chunked body, 64 KiB of it, then closes without the last
/// `0\r\n\r\n`: the client's chunked stream ends without its last chunk (a
/// cut stream, not a complete-looking short body) and the connection closes,
/// never a hang; 20 times over, after which tokenjar's fds and memory are
/// back at baseline and it serves normally.
#[test]
fn a_truncated_chunked_body_cuts_the_stream_cleanly() {
    let (upstream, app, baseline) = scripted_app();
    let part: Vec<u8> = chunks(CUT_PART as u64).flat_map(|c| c.to_vec()).collect();
    let mut head_and_part = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n\
         {:x}\r\n",
        part.len()
    )
    .into_bytes();
    head_and_part.extend_from_slice(&part);
    head_and_part.extend_from_slice(b"\r\n");

    let mut slowest = Duration::ZERO;
    for round in 0..CUT_ROUNDS {
        let cut = cut_download(
            &app,
            &upstream,
            &format!("/api/truncated/{round}"),
            &head_and_part,
            // Chunk framing comes on top of the data.
            CUT_PART,
            false,
        );
        let chunked = cut
            .headers
            .iter()
            .any(|(n, v)| n == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
        let (data, complete) = if chunked {
            chunked_progress(&cut.received)
        } else {
            (cut.received.len(), false)
        };
        if round == 0 {
            let tail = &cut.received[cut.received.len().saturating_sub(12)..];
            eprintln!(
                "truncated chunked: client got {} {:?}, {data} data bytes in {} bytes on the wire \
                 ending {:?}, final chunk: {complete}; the connection {} {:?} after the API closed",
                cut.status,
                cut.headers,
                cut.received.len(),
                String::from_utf8_lossy(tail),
                cut.ended,
                cut.noticed_in
            );
        }
        assert_eq!(cut.status, 200, "the head was already sent");
        assert!(
            chunked || cut.headers.iter().all(|(n, _)| n != "content-length"),
            "a body of unknown length must not get a Content-Length: {:?}",
            cut.headers
        );
        assert!(
            !complete,
            "the client's stream looks complete (final chunk sent) though the API's was cut: \
             {data} bytes; a truncation passed off as a whole body"
        );
        assert!(data <= CUT_PART, "more data than the API sent: {data}");
        slowest = slowest.max(cut.noticed_in);
    }
    eprintln!("truncated chunked: {CUT_ROUNDS} rounds, client saw the end within {slowest:?}");
    baseline.assert_returned(&app, "truncated chunked");
    assert_normal_request(&app, &upstream);
}

/// A login reply sent chunked whose connection closes before the last
/// `0\r\n\r\n` is not a login, even though the JSON inside is whole: the
/// browser gets 502 `bad_login_response` and no cookie. The same reply
/// with its last chunk logs in, so the refusal is the cut, not the reply.
#[test]
fn a_login_reply_cut_before_its_last_chunk_logs_no_one_in() {
    let token = make_jwt(unix_now() + 3600);
    let json = format!(r#"{{"authToken":"{token}","user":{{"name":"demo"}}}}"#);
    let reply_with = |ending: &str| {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n\
             {:x}\r\n{json}\r\n{ending}",
            json.len()
        )
    };
    for (ending, logged_in) in [("0\r\n\r\n", true), ("", false)] {
        let upstream = RawUpstream::answering(reply_with(ending).as_bytes());
        let app = spawn_app(&upstream.url("/v1"), &[]);
        let reply = raw_request(app.address, &login_request());
        let context = format!("login reply ending {ending:?}");
        assert_eq!(upstream.heads().len(), 1, "{context}: one login reached the API");
        if logged_in {
            assert_eq!(reply.status, 200, "{context}: {}", reply.text());
            assert!(auth_cookie(&reply).is_some(), "{context}: the cookie is set");
        } else {
            reply.assert_error(502, "bad_login_response");
            assert!(auth_cookie(&reply).is_none(), "{context}: no cookie");
        }
        assert!(
            !reply.text().contains(&token),
            "{context}: the token never reaches the browser"
        );
    }
}
