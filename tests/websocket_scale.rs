//! 1,000 WebSockets open at once through the tokenjar binary, each
//! carrying a few messages both ways, and what each open socket costs
//! tokenjar in memory (printed; `--nocapture` shows it). Needs about 2,100
//! open files in the test process (the clients and the test API's ends)
//! and as many in tokenjar; kept out of `make check`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use awc::ws::{Frame, Message};
use futures_util::future::join_all;
use futures_util::SinkExt as _;
use tokenjar_e2e::external::in_ci;
use tokenjar_e2e::load::open_files_soft_limit;
use tokenjar_e2e::spawn_app;
use tokenjar_e2e::ws_api::{close_of, connect, next_frame, websockets_open_reaches, Socket, WsApi};

const SOCKETS: usize = 1_000;
const MESSAGES: usize = 3;
/// Handshakes in flight at a time.
const BATCH: usize = 100;

/// A generous sanity bound on what one open socket may cost (VmRSS): far
/// above what it costs today (printed by the test), low enough to catch a
/// relay that buffers whole streams.
const MAX_KIB_PER_SOCKET: f64 = 256.0;

async fn open_and_talk(url: String, origin: String, n: usize) -> Socket {
    let (_, mut socket) = connect(&url, Some(&origin), None, &[])
        .await
        .unwrap_or_else(|e| panic!("socket {n}: handshake failed: {e}"));
    for i in 0..MESSAGES {
        let text = format!("socket {n} message {i}");
        socket.send(Message::Text(text.clone().into())).await.unwrap();
        match next_frame(&mut socket).await {
            Some(Frame::Text(echo)) => assert_eq!(echo, text.as_bytes()),
            other => panic!("socket {n}: expected the echo, got {other:?}"),
        }
    }
    socket
}

async fn gauge_reaches(address: std::net::SocketAddr, value: f64) {
    websockets_open_reaches(address, value, Duration::from_secs(30)).await;
}

#[actix_web::test]
async fn a_thousand_open_sockets_and_what_each_costs() {
    match open_files_soft_limit() {
        Some(limit) if limit < 2_500 => {
            let problem = format!("the open-files limit is {limit}; this test needs about 2,500");
            assert!(!in_ci(), "CI=true forbids skipping: {problem}");
            eprintln!("SKIPPED: {problem}");
            return;
        }
        _ => {}
    }
    let api = WsApi::start();
    let app = spawn_app(&api.url("/v1"), &[("TOKENJAR_SERVER__WORKERS", "2")]);
    let url = format!("ws://{}/api/scale", app.address);
    let origin = format!("http://{}", app.address);

    // A few sockets first, so that what every process pays once (the
    // workers' pools, buffers grown to their working size) is in the
    // baseline rather than in the per-socket figure.
    let warm = join_all((0..20).map(|n| open_and_talk(url.clone(), origin.clone(), n))).await;
    for mut socket in warm {
        socket.send(Message::Close(None)).await.unwrap();
        close_of(&mut socket).await;
    }
    gauge_reaches(app.address, 0.0).await;
    let before = app.rss_kib();

    let started = Instant::now();
    let mut sockets = Vec::with_capacity(SOCKETS);
    for batch in 0..SOCKETS / BATCH {
        let opened =
            join_all((0..BATCH).map(|i| open_and_talk(url.clone(), origin.clone(), batch * BATCH + i))).await;
        sockets.extend(opened);
    }
    gauge_reaches(app.address, SOCKETS as f64).await;
    let held = app.rss_kib();
    let per_socket = held.saturating_sub(before) as f64 / SOCKETS as f64;
    eprintln!(
        "websocket scale: {SOCKETS} sockets open with {MESSAGES} echoes each in {:?}; tokenjar VmRSS \
         {before} KiB before, {held} KiB with them open: {per_socket:.1} KiB per open socket",
        started.elapsed()
    );

    // Every socket still carries messages both ways.
    let still = join_all(sockets.iter_mut().enumerate().map(|(n, socket)| async move {
        socket
            .send(Message::Text(format!("again {n}").into()))
            .await
            .unwrap();
        matches!(next_frame(socket).await, Some(Frame::Text(t)) if t == format!("again {n}").as_bytes())
    }))
    .await;
    assert!(still.iter().all(|ok| *ok), "some sockets stopped echoing");
    assert!(
        per_socket < MAX_KIB_PER_SOCKET,
        "{per_socket:.1} KiB of VmRSS per open socket, over the {MAX_KIB_PER_SOCKET} KiB bound"
    );

    drop(sockets);
    gauge_reaches(app.address, 0.0).await;
}
