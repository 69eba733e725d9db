//! The WebSocket relay (SPEC §13). The domain plans the API's handshake
//! ([`tokenjar_domain::Gateway::websocket`]); here it is made with awc's
//! WebSocket client ([`AwcUpstream::websocket`]), and only once the API has
//! switched is the browser's answered (actix-ws), so that a refusal reaches
//! the browser as the API's status. Then one task per socket passes
//! messages both ways, frame by frame (continuations as continuations),
//! with its own small queue per direction: it reads from a side only while
//! what it read last from that side has been handed to the other, so a
//! slow reader slows its writer and memory stays bounded, and neither
//! direction ever waits for the other.
//!
//! tokenjar itself closes a socket, on both sides, with 1009 for a message
//! over `websocket.max_message_bytes` (counted over all of its frames),
//! 1008 when the session's token expires, 1001 on shutdown, 1002 or 1007
//! for a broken frame; every other close is the other side's, passed on.
//! Once a close is under way the sides get [`CLOSING_GRACE`] to finish it.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_codec::Framed;
use actix_rt::time::{sleep, Sleep};
use actix_web::http::header::SEC_WEBSOCKET_PROTOCOL;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{CloseReason, Item, Message, MessageStream, ProtocolError, Session};
use awc::error::{ConnectError, SendRequestError, WsClientError};
use awc::ws::{Codec, Frame};
use awc::BoxedSocket;
use bytestring::ByteString;
use futures_core::Stream;
use futures_util::Sink;
use prometheus::IntGauge;
use tokenjar_domain::{CloseCode, FlowError, MessageSize, UpstreamError, WebSocketPlan};
use tokio::sync::watch;

use crate::headers;
use crate::upstream::AwcUpstream;

/// The relay's settings (the `websocket.*` keys).
#[derive(Clone, Debug)]
pub struct WebSocketSettings {
    /// Largest message passed on, either way, in bytes.
    pub max_message_bytes: usize,
}

impl Default for WebSocketSettings {
    fn default() -> Self {
        Self {
            max_message_bytes: 1024 * 1024,
        }
    }
}

/// How long the sides get to finish a close (answer it, or take the
/// messages still queued for them) before both sockets are dropped.
const CLOSING_GRACE: Duration = Duration::from_secs(5);

/// Rounds of the relay's loop before it lets other tasks of the worker
/// run: a side that sends without pause must not hold the thread.
const ROUNDS_PER_TURN: usize = 64;

/// What every worker's sockets share: the settings, the shutdown signal
/// and the open-sockets gauge.
pub(crate) struct Sockets {
    settings: WebSocketSettings,
    /// The API's time to answer a handshake (`upstream.timeout_ms`).
    handshake_timeout: Duration,
    stopping: Arc<watch::Sender<bool>>,
    open: IntGauge,
}

impl Sockets {
    pub(crate) fn new(
        settings: WebSocketSettings,
        handshake_timeout: Duration,
        stopping: Arc<watch::Sender<bool>>,
        open: IntGauge,
    ) -> Self {
        Self {
            settings,
            handshake_timeout,
            stopping,
            open,
        }
    }
}

/// What a browser's handshake came to.
pub(crate) enum Handshake {
    /// The API switched: this `101` goes back and the relay runs.
    Open(HttpResponse),
    /// The API answered the handshake with this status instead: passed on
    /// (awc keeps no body of a refused handshake).
    Refused(u16),
    /// Malformed, or the API could not be reached or answered wrongly.
    Failed(FlowError),
}

/// Makes the API's handshake as planned; once the API has switched,
/// answers the browser's and starts the relay on this worker.
pub(crate) async fn open(
    request: &HttpRequest,
    payload: web::Payload,
    plan: WebSocketPlan,
    upstream: &AwcUpstream,
    sockets: &Sockets,
) -> Handshake {
    // A malformed handshake (no key, another version) is refused before
    // the API is troubled with it.
    if actix_http::ws::verify_handshake(request.head()).is_err() {
        return Handshake::Failed(FlowError::BadRequest("The WebSocket handshake is malformed."));
    }
    let limit = sockets.settings.max_message_bytes;
    let mut outgoing = match upstream.websocket(&plan.url) {
        Ok(request) => request.max_frame_size(limit),
        Err(error) => return Handshake::Failed(error.into()),
    };
    for (name, value) in headers::to_actix(plan.headers) {
        outgoing = outgoing.header(name, value);
    }
    let (answer, api) = match actix_rt::time::timeout(sockets.handshake_timeout, outgoing.connect()).await {
        Ok(Ok(connected)) => connected,
        Ok(Err(WsClientError::InvalidResponseStatus(status))) => return Handshake::Refused(status.as_u16()),
        Ok(Err(WsClientError::SendRequest(error))) => {
            return Handshake::Failed(send_error(error, &plan.url).into())
        }
        Ok(Err(other)) => {
            let detail = format!("{}: not a WebSocket answer: {other}", origin_of(&plan.url));
            return Handshake::Failed(UpstreamError::Unavailable(detail).into());
        }
        Err(_) => return Handshake::Failed(UpstreamError::Timeout.into()),
    };
    let Ok((mut response, session, messages)) = actix_ws::handle(request, payload) else {
        return Handshake::Failed(FlowError::BadRequest("The WebSocket handshake is malformed."));
    };
    // The API's choice among the browser's subprotocols, if it made one.
    if let Some(protocol) = answer.headers().get(SEC_WEBSOCKET_PROTOCOL) {
        response
            .headers_mut()
            .insert(SEC_WEBSOCKET_PROTOCOL, protocol.clone());
    }
    for (name, value) in headers::to_actix(plan.reply_headers) {
        response.headers_mut().append(name, value);
    }
    let stopping = sockets.stopping.subscribe();
    let relay = Relay {
        browser_in: messages.max_frame_size(limit),
        browser_out: session,
        api,
        to_api: VecDeque::new(),
        to_browser: VecDeque::new(),
        from_browser: MessageSize::new(limit as u64),
        from_api: MessageSize::new(limit as u64),
        browser: Side::default(),
        api_side: Side::default(),
        closing: false,
        grace: None,
        expiry: plan
            .session_left_s
            .map(|left| Box::pin(sleep(Duration::from_secs(left)))),
        stopping: Some(Box::pin(async move {
            let mut stopping = stopping;
            // An error means the server is gone: stopping as well.
            let _ = stopping.wait_for(|stop| *stop).await;
        })),
        _open: OpenSocket::new(&sockets.open),
    };
    actix_rt::spawn(relay.run());
    Handshake::Open(response)
}

/// Counts an open socket in `tokenjar_websockets_open` for as long as it
/// lives, whichever way its relay ends.
struct OpenSocket(IntGauge);

impl OpenSocket {
    fn new(gauge: &IntGauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for OpenSocket {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What the relay knows of one side.
#[derive(Default)]
struct Side {
    /// Nothing more will be read from it: it closed, went away or broke.
    done: bool,
    /// A close was sent to it; nothing else may follow.
    close_sent: bool,
}

/// One socket's relay: the browser's side (actix-ws) and the API's (awc).
struct Relay {
    browser_in: MessageStream,
    browser_out: Session,
    api: Framed<BoxedSocket, Codec>,
    /// Messages read from one side, not yet handed to the other.
    to_api: VecDeque<Message>,
    to_browser: VecDeque<Message>,
    from_browser: MessageSize,
    from_api: MessageSize,
    browser: Side,
    api_side: Side,
    /// tokenjar closed the socket itself: data from either side is dropped.
    closing: bool,
    grace: Option<Pin<Box<Sleep>>>,
    /// The session's end, when known.
    expiry: Option<Pin<Box<Sleep>>>,
    /// Ready once tokenjar is shutting down.
    stopping: Option<Pin<Box<dyn Future<Output = ()>>>>,
    _open: OpenSocket,
}

impl Relay {
    async fn run(mut self) {
        poll_fn(|cx| self.poll(cx)).await;
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        for _ in 0..ROUNDS_PER_TURN {
            if self
                .grace
                .as_mut()
                .is_some_and(|g| g.as_mut().poll(cx).is_ready())
            {
                return Poll::Ready(());
            }
            if self
                .stopping
                .as_mut()
                .is_some_and(|s| s.as_mut().poll(cx).is_ready())
            {
                self.stopping = None;
                self.close_both(CloseCode::GoingAway);
            }
            if self
                .expiry
                .as_mut()
                .is_some_and(|e| e.as_mut().poll(cx).is_ready())
            {
                self.expiry = None;
                self.close_both(CloseCode::Policy);
            }
            let mut progress = false;
            if !self.browser.done && self.to_api.is_empty() {
                if let Poll::Ready(item) = Pin::new(&mut self.browser_in).poll_next(cx) {
                    self.read_browser(item);
                    progress = true;
                }
            }
            if !self.api_side.done && self.to_browser.is_empty() {
                if let Poll::Ready(item) = Pin::new(&mut self.api).poll_next(cx) {
                    self.read_api(item);
                    progress = true;
                }
            }
            progress |= self.write_api(cx);
            progress |= self.write_browser(cx);
            if self.browser.done && self.api_side.done && self.to_api.is_empty() && self.to_browser.is_empty()
            {
                return Poll::Ready(());
            }
            if !progress {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Hands queued messages to the API's socket and flushes it; whether
    /// anything moved.
    fn write_api(&mut self, cx: &mut Context<'_>) -> bool {
        let mut moved = false;
        while !self.to_api.is_empty() {
            match Pin::new(&mut self.api).poll_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Pending => break,
                Poll::Ready(Err(_)) => return self.api_broken(),
            }
            let Some(message) = self.to_api.pop_front() else {
                break;
            };
            if Pin::new(&mut self.api).start_send(message).is_err() {
                return self.api_broken();
            }
            moved = true;
        }
        match Pin::new(&mut self.api).poll_flush(cx) {
            Poll::Ready(Err(_)) => self.api_broken(),
            _ => moved,
        }
    }

    /// The same towards the browser (actix-ws queues what the response
    /// body has not written yet, a few messages deep).
    fn write_browser(&mut self, cx: &mut Context<'_>) -> bool {
        let mut moved = false;
        while !self.to_browser.is_empty() {
            match Pin::new(&mut self.browser_out).poll_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Pending => break,
                Poll::Ready(Err(_)) => return self.browser_broken(),
            }
            let Some(message) = self.to_browser.pop_front() else {
                break;
            };
            if Pin::new(&mut self.browser_out).start_send(message).is_err() {
                return self.browser_broken();
            }
            moved = true;
        }
        match Pin::new(&mut self.browser_out).poll_flush(cx) {
            Poll::Ready(Err(_)) => self.browser_broken(),
            _ => moved,
        }
    }

    /// The API's socket failed: nothing more goes either way on it; the
    /// browser is told the other side went away.
    fn api_broken(&mut self) -> bool {
        self.to_api.clear();
        self.api_side.done = true;
        self.api_side.close_sent = true;
        self.send_close_to_browser(None);
        self.start_grace();
        true
    }

    fn browser_broken(&mut self) -> bool {
        self.to_browser.clear();
        self.browser.done = true;
        self.browser.close_sent = true;
        self.send_close_to_api(None);
        self.start_grace();
        true
    }

    fn read_browser(&mut self, item: Option<Result<Message, ProtocolError>>) {
        let message = match item {
            None => {
                // The browser's connection ended without a close of its own.
                self.browser.done = true;
                self.browser.close_sent = true;
                self.send_close_to_api(None);
                self.start_grace();
                return;
            }
            Some(Err(ProtocolError::Overflow)) => return self.close_both(CloseCode::TooBig),
            Some(Err(_)) => return self.close_both(CloseCode::Protocol),
            Some(Ok(message)) => message,
        };
        if matches!(message, Message::Close(_)) {
            self.browser.done = true;
            self.start_grace();
        }
        if self.closing {
            return;
        }
        if !within(&mut self.from_browser, &message) {
            return self.close_both(CloseCode::TooBig);
        }
        match message {
            Message::Nop => {}
            Message::Close(reason) => self.send_close_to_api(reason),
            message if !self.api_side.close_sent => self.to_api.push_back(message),
            _ => {}
        }
    }

    fn read_api(&mut self, item: Option<Result<Frame, ProtocolError>>) {
        let frame = match item {
            None => {
                self.api_side.done = true;
                self.api_side.close_sent = true;
                self.send_close_to_browser(None);
                self.start_grace();
                return;
            }
            Some(Err(ProtocolError::Overflow)) => return self.close_both(CloseCode::TooBig),
            Some(Err(_)) => return self.close_both(CloseCode::Protocol),
            Some(Ok(frame)) => frame,
        };
        if matches!(frame, Frame::Close(_)) {
            self.api_side.done = true;
            self.start_grace();
        }
        if self.closing {
            return;
        }
        let message = match frame {
            Frame::Text(bytes) => match ByteString::try_from(bytes) {
                Ok(text) => Message::Text(text),
                Err(_) => return self.close_both(CloseCode::InvalidText),
            },
            Frame::Binary(bytes) => Message::Binary(bytes),
            Frame::Continuation(item) => Message::Continuation(item),
            Frame::Ping(bytes) => Message::Ping(bytes),
            Frame::Pong(bytes) => Message::Pong(bytes),
            Frame::Close(reason) => return self.send_close_to_browser(reason),
        };
        if !within(&mut self.from_api, &message) {
            return self.close_both(CloseCode::TooBig);
        }
        if !self.browser.close_sent {
            self.to_browser.push_back(message);
        }
    }

    /// tokenjar ends the socket: whatever is queued is dropped and both
    /// sides get `code`.
    fn close_both(&mut self, code: CloseCode) {
        if self.closing {
            return;
        }
        tracing::debug!(code = code.code(), "tokenjar closes a WebSocket");
        self.closing = true;
        self.to_api.clear();
        self.to_browser.clear();
        let reason = || {
            Some(CloseReason {
                code: code.code().into(),
                description: Some(code.reason().to_owned()),
            })
        };
        self.send_close_to_api(reason());
        self.send_close_to_browser(reason());
        self.start_grace();
    }

    fn send_close_to_api(&mut self, reason: Option<CloseReason>) {
        if !self.api_side.close_sent {
            self.api_side.close_sent = true;
            self.to_api.push_back(Message::Close(reason));
        }
    }

    fn send_close_to_browser(&mut self, reason: Option<CloseReason>) {
        if !self.browser.close_sent {
            self.browser.close_sent = true;
            self.to_browser.push_back(Message::Close(reason));
        }
    }

    fn start_grace(&mut self) {
        if self.grace.is_none() {
            self.grace = Some(Box::pin(sleep(CLOSING_GRACE)));
        }
    }
}

/// Counts a data frame against the message limit; false once its message
/// is over it. Control frames are limited by the protocol itself.
fn within(size: &mut MessageSize, message: &Message) -> bool {
    match message {
        Message::Text(text) => size.frame(true, text.len()),
        Message::Binary(bytes) => size.frame(true, bytes.len()),
        Message::Continuation(Item::FirstText(bytes) | Item::FirstBinary(bytes)) => {
            size.frame(true, bytes.len())
        }
        Message::Continuation(Item::Continue(bytes) | Item::Last(bytes)) => size.frame(false, bytes.len()),
        Message::Ping(_) | Message::Pong(_) | Message::Close(_) | Message::Nop => true,
    }
}

/// A failed handshake's error: the API too slow, or unreachable (naming
/// its origin only: the path or query may carry what the client sent).
fn send_error(error: SendRequestError, url: &str) -> UpstreamError {
    match error {
        SendRequestError::Timeout | SendRequestError::Connect(ConnectError::Timeout) => {
            UpstreamError::Timeout
        }
        other => UpstreamError::Unavailable(format!("{}: {other}", origin_of(url))),
    }
}

/// `scheme://host[:port]` of an absolute URL.
fn origin_of(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    url[after_scheme..]
        .find('/')
        .map_or(url, |end| &url[..after_scheme + end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_counts_every_frame_of_a_message() {
        let mut size = MessageSize::new(4);
        let bytes = |n: usize| bytes::Bytes::from(vec![0u8; n]);
        assert!(within(&mut size, &Message::Binary(bytes(4))));
        assert!(!within(&mut size, &Message::Binary(bytes(5))));
        assert!(within(
            &mut size,
            &Message::Continuation(Item::FirstText(bytes(2)))
        ));
        assert!(within(&mut size, &Message::Ping(bytes(100))));
        assert!(within(
            &mut size,
            &Message::Continuation(Item::Continue(bytes(2)))
        ));
        assert!(!within(&mut size, &Message::Continuation(Item::Last(bytes(1)))));
        assert!(within(&mut size, &Message::Text("four".into())));
    }

    #[test]
    fn errors_name_the_origin_only() {
        assert_eq!(origin_of("ws://api:9000/v1/chat?token=x"), "ws://api:9000");
        assert_eq!(
            send_error(SendRequestError::Timeout, "ws://a/b"),
            UpstreamError::Timeout
        );
    }
}
