//! End-to-end tests of WebSocket proxying (SPEC §13, and wss:// to an
//! https API, §12): the tokenjar binary between awc's WebSocket client (the
//! browser) and a WebSocket API that reports what it saw. The handshake's rules (token from the cookie, no
//! cookie, the Origin rule, subprotocols, refusals), messages both ways,
//! close codes both ways, the message limit, the session's expiry,
//! shutdown and the open-sockets gauge. No timing is assumed: every wait
//! is for a frame or a report, bounded only to fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use actix_ws::Item;
use awc::error::WsClientError;
use awc::ws::{CloseCode, CloseReason, Frame, Message};
use bytes::Bytes;
use futures_util::SinkExt as _;
use tokenjar_e2e::metrics::metric_sum;
use tokenjar_e2e::pki::TestCa;
use tokenjar_e2e::ws_api::{
    close_of, connect, next_frame, websockets_open_reaches, Ended, Socket, WsApi, CHOSEN_PROTOCOL,
};
use tokenjar_e2e::{spawn_app, TempDir, TestApp};

/// tokenjar in front of a fresh WebSocket API (base path `/v1`).
fn setup_with(env: &[(&str, &str)]) -> (WsApi, TestApp) {
    let api = WsApi::start();
    let app = spawn_app(&api.url("/v1"), env);
    (api, app)
}

/// The `ws://` URL of `path` at tokenjar.
fn ws_url(app: &TestApp, path: &str) -> String {
    format!("ws://{}{path}", app.address)
}

/// The origin a page served by this tokenjar has (awc sends the URL's
/// host as `Host`).
fn own_origin(app: &TestApp) -> String {
    format!("http://{}", app.address)
}

/// Opens a socket as the app's own page would, with `cookie` if given.
async fn open(app: &TestApp, path: &str, cookie: Option<&str>) -> (awc::ClientResponse, Socket) {
    connect(&ws_url(app, path), Some(&own_origin(app)), cookie, &[])
        .await
        .unwrap_or_else(|e| panic!("handshake to {path} failed: {e}"))
}

async fn send(socket: &mut Socket, message: Message) {
    socket.send(message).await.expect("send a frame");
}

async fn text(socket: &mut Socket) -> String {
    match next_frame(socket).await {
        Some(Frame::Text(bytes)) => String::from_utf8(bytes.to_vec()).unwrap(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// A raw handshake to `path` with `extra` header lines: tokenjar's answer
/// with its body (awc's WebSocket client keeps no body of a refusal).
fn raw_handshake(app: &TestApp, path: &str, extra: &str) -> tokenjar_e2e::Reply {
    app.raw(&format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n",
        app.address
    ))
}

async fn metrics(app: &TestApp) -> String {
    app.get_api("/metrics", None).await.text()
}

/// Waits (at most 10 s) until the open-sockets gauge reads `value`.
async fn gauge_reaches(app: &TestApp, value: f64) {
    websockets_open_reaches(app.address, value, Duration::from_secs(10)).await;
}

#[actix_web::test]
async fn the_api_gets_the_cookies_token_and_never_the_cookie() {
    let (api, app) = setup_with(&[]);
    let cookie = app.login_cookie().await;
    let (response, mut socket) = open(&app, "/api/chat/room?x=1", Some(&cookie)).await;
    assert_eq!(response.status(), 101);

    let seen = api.handshake(1);
    assert_eq!(seen.target, "/v1/chat/room?x=1");
    let token = seen.token.expect("the API got the token");
    assert!(token.split('.').count() == 3, "a JWT: {token}");
    assert!(!seen.cookie, "the cookie must not reach the API");
    assert_eq!(seen.extensions, None, "no extension is offered upstream");
    // The token stays between tokenjar and the API.
    send(&mut socket, Message::Text("whoami".into())).await;
    assert_eq!(text(&mut socket).await, format!("token:{token}"));
    assert!(
        !app.logs().iter().any(|line| line.contains(&token)),
        "the token is logged"
    );
}

#[actix_web::test]
async fn an_https_api_is_reached_over_wss_with_the_token() {
    let ca = TestCa::new();
    let cert = ca.server_cert("ws-api");
    let api = WsApi::start_tls(TestCa::server_config(&cert, &[b"http/1.1"], None));
    let dir = TempDir::new("wss");
    dir.write("ca.pem", &ca.pem);
    let ca_file = dir.path().join("ca.pem").display().to_string();
    let app = spawn_app(&api.url("/v1"), &[("TOKENJAR_TLS__CA_FILE", &ca_file)]);
    let cookie = app.login_cookie().await;
    let (response, mut socket) = open(&app, "/api/chat", Some(&cookie)).await;
    assert_eq!(response.status(), 101);

    let seen = api.handshake(1);
    assert_eq!(seen.target, "/v1/chat");
    let token = seen.token.expect("the API got the token");
    assert!(!seen.cookie, "the cookie must not reach the API");
    send(&mut socket, Message::Text("whoami".into())).await;
    assert_eq!(text(&mut socket).await, format!("token:{token}"));
    // Messages keep flowing both ways over the TLS tunnel.
    let binary = Bytes::from_static(b"\x00\x01\x02");
    send(&mut socket, Message::Binary(binary.clone())).await;
    assert_eq!(next_frame(&mut socket).await, Some(Frame::Binary(binary)));
}

#[actix_web::test]
async fn without_a_usable_cookie_the_socket_opens_without_a_token() {
    let (api, app) = setup_with(&[]);
    let (_, mut socket) = open(&app, "/api/chat", None).await;
    send(&mut socket, Message::Text("whoami".into())).await;
    assert_eq!(text(&mut socket).await, "token:");
    assert_eq!(api.handshake(1).token, None);

    // A cookie that does not open counts as none, and is deleted.
    let (response, mut socket) = open(&app, "/api/chat", Some("auth-token=garbage")).await;
    assert_eq!(api.handshake(2).token, None);
    assert!(!api.handshake(2).cookie);
    let deleted = response.headers().get_all("set-cookie").any(|v| {
        v.to_str()
            .is_ok_and(|v| v.starts_with("auth-token=") && v.contains("Max-Age=0"))
    });
    assert!(deleted, "the bad cookie is deleted: {:?}", response.headers());
    send(&mut socket, Message::Text("whoami".into())).await;
    assert_eq!(text(&mut socket).await, "token:");
}

#[actix_web::test]
async fn the_handshake_needs_its_own_or_an_allowed_origin() {
    let (api, app) = setup_with(&[("TOKENJAR_CSRF__ALLOWED_ORIGINS", "https://admin.example")]);
    let url = ws_url(&app, "/api/chat");
    for origin in [own_origin(&app), "https://admin.example".to_owned()] {
        let opened = connect(&url, Some(&origin), None, &[]).await;
        assert!(opened.is_ok(), "{origin}: {:?}", opened.err());
    }
    for origin in ["https://evil.example", "null"] {
        match connect(&url, Some(origin), None, &[]).await {
            Err(WsClientError::InvalidResponseStatus(status)) => assert_eq!(status, 403, "{origin}"),
            other => panic!(
                "{origin}: expected a 403, got {:?}",
                other.map(|(r, _)| r.status())
            ),
        }
    }
    match connect(&url, None, None, &[]).await {
        Err(WsClientError::InvalidResponseStatus(status)) => assert_eq!(status, 403),
        other => panic!(
            "no Origin: expected a 403, got {:?}",
            other.map(|(r, _)| r.status())
        ),
    }
    // Refused by tokenjar with the JSON error of SPEC §8, not by the API.
    raw_handshake(&app, "/api/chat", "Origin: https://evil.example\r\n").assert_error(403, "origin");
    raw_handshake(&app, "/api/chat", "x-csrf: 1\r\n").assert_error(403, "origin");
    assert_eq!(api.handshakes(), 2);
    let text = metrics(&app).await;
    assert_eq!(metric_sum(&text, "tokenjar_csrf_refused_total", &[]), 5.0);
}

#[actix_web::test]
async fn subprotocols_pass_both_ways() {
    let (api, app) = setup_with(&[]);
    let (response, _socket) = connect(
        &ws_url(&app, "/api/chat"),
        Some(&own_origin(&app)),
        None,
        &["chat.v1", CHOSEN_PROTOCOL],
    )
    .await
    .unwrap();
    // As the client listed them (awc joins them without a space).
    assert_eq!(api.handshake(1).protocols.as_deref(), Some("chat.v1,chat.v2"));
    let chosen = response.headers().get("sec-websocket-protocol").unwrap();
    assert_eq!(chosen, CHOSEN_PROTOCOL);
}

#[actix_web::test]
async fn text_binary_fragments_and_pings_pass_both_ways() {
    let (api, app) = setup_with(&[]);
    let (_, mut socket) = open(&app, "/api/echo", None).await;

    send(&mut socket, Message::Text("hello".into())).await;
    assert_eq!(text(&mut socket).await, "hello");
    let binary = Bytes::from_static(&[0, 1, 2, 255]);
    send(&mut socket, Message::Binary(binary.clone())).await;
    assert_eq!(next_frame(&mut socket).await, Some(Frame::Binary(binary)));

    // The browser's fragments reach the API as fragments, and back.
    for item in [
        Item::FirstText(Bytes::from_static(b"fra")),
        Item::Continue(Bytes::from_static(b"gm")),
        Item::Last(Bytes::from_static(b"ent")),
    ] {
        send(&mut socket, Message::Continuation(item)).await;
    }
    let mut echoed = Vec::new();
    for _ in 0..3 {
        match next_frame(&mut socket).await {
            Some(Frame::Continuation(item)) => echoed.push(item),
            other => panic!("expected a continuation, got {other:?}"),
        }
    }
    assert_eq!(
        echoed,
        [
            Item::FirstText(Bytes::from_static(b"fra")),
            Item::Continue(Bytes::from_static(b"gm")),
            Item::Last(Bytes::from_static(b"ent")),
        ]
    );
    // The API's own fragmented message.
    send(&mut socket, Message::Text("fragments:3".into())).await;
    let mut parts = Vec::new();
    for _ in 0..3 {
        match next_frame(&mut socket).await {
            Some(Frame::Continuation(item)) => parts.push(item),
            other => panic!("expected a continuation, got {other:?}"),
        }
    }
    assert!(matches!(parts[0], Item::FirstText(_)) && matches!(parts[2], Item::Last(_)));

    // The browser's ping reaches the API, whose pong comes back.
    send(&mut socket, Message::Ping(Bytes::from_static(b"are you there"))).await;
    assert_eq!(
        next_frame(&mut socket).await,
        Some(Frame::Pong(Bytes::from_static(b"are you there")))
    );
    // The API's ping reaches the browser, whose pong reaches the API.
    send(&mut socket, Message::Text("ping:hi".into())).await;
    assert_eq!(
        next_frame(&mut socket).await,
        Some(Frame::Ping(Bytes::from_static(b"hi")))
    );
    send(&mut socket, Message::Pong(Bytes::from_static(b"hi"))).await;
    assert_eq!(api.pongs(1), [b"hi".to_vec()]);
    assert_eq!(text(&mut socket).await, "pong:hi");
}

#[actix_web::test]
async fn closes_pass_both_ways_with_their_code_and_reason() {
    let (api, app) = setup_with(&[]);
    // The browser closes: the API sees its code and reason, and its answer
    // comes back.
    let (_, mut socket) = open(&app, "/api/echo", None).await;
    send(
        &mut socket,
        Message::Close(Some(CloseReason {
            code: CloseCode::Other(4000),
            description: Some("bye".into()),
        })),
    )
    .await;
    assert_eq!(api.ended(1), Ended::Closed(Some(4000), "bye".into()));
    match next_frame(&mut socket).await {
        Some(Frame::Close(Some(reason))) => assert_eq!(u16::from(reason.code), 4000),
        other => panic!("expected the close answered, got {other:?}"),
    }

    // The API closes: the browser sees its code and reason.
    let (_, mut socket) = open(&app, "/api/echo", None).await;
    send(&mut socket, Message::Text("close:4001:done here".into())).await;
    assert_eq!(close_of(&mut socket).await, (Some(4001), "done here".into()));
    // actix-ws ends the API's connection with its close, so the browser's
    // answer may find it gone.
    let ended = api.ended(2);
    assert!(
        matches!(&ended, Ended::Gone) || ended == Ended::Closed(Some(4001), "done here".into()),
        "{ended:?}"
    );
}

#[actix_web::test]
async fn a_message_over_the_limit_closes_the_socket_with_1009() {
    let (api, app) = setup_with(&[]);
    let two_mib = 2 * 1024 * 1024;

    // From the browser, in one frame: neither the message nor more after
    // it reaches the API, which is closed with 1009 too.
    let (_, mut socket) = open(&app, "/api/echo", None).await;
    send(&mut socket, Message::Binary(Bytes::from(vec![7u8; two_mib]))).await;
    assert_eq!(close_of(&mut socket).await.0, Some(1009));
    assert_eq!(api.ended(1), Ended::Closed(Some(1009), "message too big".into()));

    // From the browser, in frames each under the limit.
    let (_, mut socket) = open(&app, "/api/echo", None).await;
    let half = Bytes::from(vec![7u8; 600 * 1024]);
    send(
        &mut socket,
        Message::Continuation(Item::FirstBinary(half.clone())),
    )
    .await;
    send(&mut socket, Message::Continuation(Item::Last(half))).await;
    let mut code = None;
    while code.is_none() {
        match next_frame(&mut socket).await {
            // The first frame may have been echoed before the second came.
            Some(Frame::Continuation(Item::FirstBinary(_))) => {}
            Some(Frame::Close(reason)) => code = reason.map(|r| u16::from(r.code)),
            other => panic!("expected a close, got {other:?}"),
        }
    }
    assert_eq!(code, Some(1009));
    assert_eq!(api.ended(2), Ended::Closed(Some(1009), "message too big".into()));

    // From the API.
    let (_, mut socket) = open(&app, "/api/echo", None).await;
    send(&mut socket, Message::Text(format!("big:{two_mib}").into())).await;
    assert_eq!(close_of(&mut socket).await.0, Some(1009));
    assert_eq!(api.ended(3), Ended::Closed(Some(1009), "message too big".into()));

    // A message at the limit passes.
    let (_, mut socket) = open(&app, "/api/echo", None).await;
    let limit = Bytes::from(vec![1u8; 1024 * 1024]);
    send(&mut socket, Message::Binary(limit.clone())).await;
    assert_eq!(next_frame(&mut socket).await, Some(Frame::Binary(limit)));
}

#[actix_web::test]
async fn the_apis_refusal_reaches_the_browser_as_its_status() {
    let (_api, app) = setup_with(&[]);
    for status in [401, 403, 404] {
        match connect(
            &ws_url(&app, &format!("/api/refuse/{status}")),
            Some(&own_origin(&app)),
            None,
            &[],
        )
        .await
        {
            Err(WsClientError::InvalidResponseStatus(got)) => assert_eq!(got, status),
            other => panic!(
                "{status}: expected a refusal, got {:?}",
                other.map(|(r, _)| r.status())
            ),
        }
    }
}

#[actix_web::test]
async fn an_unreachable_api_is_a_502() {
    let app = spawn_app(&tokenjar_e2e::refused_url(), &[]);
    let origin = format!("Origin: {}\r\n", own_origin(&app));
    raw_handshake(&app, "/api/chat", &origin).assert_error(502, "upstream_unavailable");
}

#[actix_web::test]
async fn the_socket_closes_with_1008_when_the_session_expires() {
    let (api, app) = setup_with(&[("TOKENJAR_COOKIE__MAX_AGE_S", "2")]);
    let cookie = app.login_cookie().await;
    let (_, mut socket) = open(&app, "/api/chat", Some(&cookie)).await;
    assert!(api.handshake(1).token.is_some());
    let (code, _) = close_of(&mut socket).await;
    assert_eq!(code, Some(1008));
    assert_eq!(
        api.ended(1),
        Ended::Closed(Some(1008), "the session has expired".into())
    );
}

#[actix_web::test]
async fn the_open_sockets_gauge_follows_sockets_and_the_handshake_counts_as_101() {
    let (_api, app) = setup_with(&[]);
    let (_, mut socket) = open(&app, "/api/echo", None).await;
    gauge_reaches(&app, 1.0).await;
    send(&mut socket, Message::Close(None)).await;
    assert_eq!(close_of(&mut socket).await.0, None);
    gauge_reaches(&app, 0.0).await;

    // A browser that just goes away is counted out too.
    let (_, socket) = open(&app, "/api/echo", None).await;
    gauge_reaches(&app, 1.0).await;
    drop(socket);
    gauge_reaches(&app, 0.0).await;
    let text = metrics(&app).await;
    assert_eq!(
        metric_sum(
            &text,
            "tokenjar_requests_total",
            &[("route", "api"), ("status", "101")]
        ),
        2.0
    );
}

#[actix_web::test]
async fn sigterm_closes_open_sockets_with_1001_and_exits() {
    let (api, mut app) = setup_with(&[]);
    let (_, mut socket) = open(&app, "/api/echo", None).await;
    send(&mut socket, Message::Text("ready?".into())).await;
    assert_eq!(text(&mut socket).await, "ready?");
    app.signal("TERM");
    assert_eq!(close_of(&mut socket).await.0, Some(1001));
    assert_eq!(
        api.ended(1),
        Ended::Closed(Some(1001), "tokenjar is shutting down".into())
    );
    let status = app.wait_exit(Duration::from_secs(20)).expect("tokenjar exits");
    assert!(status.success(), "{status:?}");
}
