//! Upstream connections that hold the API to exactly one complete answer per
//! request: interim 1xx answers are read and dropped, a body cut short by a
//! close ends in an error instead of a clean end, and a connection that
//! carried anything else is never used again.
//!
//! awc reads one response head per request and takes whatever comes first
//! as the answer. Given `103 Early Hints` (or `100 Continue`) it returns that
//! as the final answer and puts the connection back in its pool with the
//! real answer still on the wire, so the next request on that connection —
//! another user's — receives it. It also ends a body the same way whether
//! it is complete or the API closed the connection in the middle of it.
//!
//! [`GuardedStream`] sits between awc and the socket and follows each
//! exchange as awc's own decoder (actix-http's) reads it, so that both agree
//! on where every answer ends: heads are parsed in place with `httparse`,
//! with actix-http's limits and its rules for a body's framing ([`framing`],
//! checked against that decoder in the tests), and a chunked body is
//! followed by actix-http's own chunked decoder on a copy of its bytes.
//! - Between a request and its final answer, interim heads (1xx other than
//!   101) are removed from the byte stream before awc sees them.
//! - A close-delimited HTTP/1.1 answer (no length, not chunked), which awc
//!   would take as bodiless, is presented to awc as HTTP/1.0, whose framing
//!   is the same (read until the close) and which awc never reuses.
//! - The end of the connection inside a head or a body is an
//!   `UnexpectedEof` error, which awc passes on as a failed body.
//! - Bytes past the end of the answer, bytes arriving while no request is
//!   in flight, and a new request before the last answer ended poison the
//!   connection: every later read or write fails, so awc's pool drops it.
//! - On the WebSocket client's connections only, a `101 Switching
//!   Protocols` answer to a request that asked to switch (an `Upgrade`
//!   header: awc's WebSocket handshake) turns the connection
//!   into a tunnel: from then on bytes pass unchanged both ways for the
//!   rest of its life, and it never carries another HTTP request (awc
//!   takes a tunnelled connection out of its pool for good). A `101` to a
//!   request that did not ask is read until the close like any body
//!   without a length, and any later write poisons the connection.

use std::cell::OnceCell;
use std::fmt;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context, Poll};

use actix_codec::{AsyncRead, AsyncWrite, Decoder as _, ReadBuf};
use actix_http::h1::{ClientCodec, ClientPayloadCodec, MessageType};
use actix_http::ServiceConfig;
use actix_rt::net::{ActixStream, Ready};
use actix_service::Service;
use actix_tls::connect::{ConnectError, ConnectInfo, Connection, ConnectorService};
use awc::http::Uri;
use bytes::{Buf as _, BytesMut};
use futures_core::future::LocalBoxFuture;

use crate::outbound::{OutboundTls, Transport};

/// Where the connection is in its current exchange.
enum Exchange {
    /// No request on the wire: a fresh connection, or one whose last answer
    /// ended.
    Idle,
    /// A request is being written, or its final answer head awaited.
    Head {
        /// The request was `HEAD`: its answer has no body, whatever its
        /// headers say.
        head_request: bool,
        /// The request asked to switch protocols (it has an `Upgrade`
        /// header): only then does a `101` make a tunnel.
        upgrade: bool,
    },
    /// A body with a length: this many bytes still to come.
    Length(u64),
    /// A chunked body, followed by actix-http's decoder on a copy.
    Chunked {
        codec: ClientPayloadCodec,
        copy: BytesMut,
    },
    /// A body that ends when the API closes the connection.
    UntilClose,
    /// The API closed the connection after a close-delimited body.
    Closed,
    /// The API switched protocols as asked: a tunnel (a WebSocket) whose
    /// bytes pass unchanged both ways until the connection ends.
    Switched,
}

/// What [`GuardedStream::take_head`] found at the front of the bytes.
enum Head {
    /// The head is not whole yet.
    Partial,
    /// An interim answer of this many bytes, to drop.
    Interim(usize),
    /// The final answer's head, this many bytes.
    Final(usize),
}

/// actix-http's limits on an answer head: the number of headers, and the
/// bytes read before the head must be whole.
const MAX_HEADERS: usize = 96;
const MAX_HEAD: usize = 131_072;

/// A connection to the API (TCP, or TLS over it) that lets through
/// exactly one complete answer per request (see the module documentation).
pub struct GuardedStream {
    io: Transport,
    /// Boxed: awc moves its connections by value several times per
    /// request, so the stream itself stays as small as the socket.
    state: Box<State>,
}

/// What the guard knows of the connection's current exchange.
struct State {
    exchange: Exchange,
    /// Bytes of an answer head still being collected (a head split over
    /// reads, or what followed an interim one).
    inbox: BytesMut,
    /// Bytes of the final answer ready for awc, not yet taken.
    outbox: BytesMut,
    /// Why the connection may not be used any more.
    poisoned: Option<&'static str>,
    config: ServiceConfig,
    /// The connection belongs to the WebSocket client: a request that asks
    /// to switch may become a tunnel. Elsewhere no request is even looked
    /// at for it (the scan would cost every ordinary request), and a `101`
    /// is always unasked.
    tunnels: bool,
}

impl fmt::Debug for GuardedStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedStream")
            .field("poisoned", &self.state.poisoned)
            .finish_non_exhaustive()
    }
}

impl GuardedStream {
    fn new(io: Transport, config: ServiceConfig, tunnels: bool) -> Self {
        Self {
            io,
            state: Box::new(State {
                exchange: Exchange::Idle,
                inbox: BytesMut::new(),
                outbox: BytesMut::new(),
                poisoned: None,
                config,
                tunnels,
            }),
        }
    }
}

impl State {
    /// Marks the connection unusable from now on; the answer already
    /// released to awc (if any) is still delivered.
    fn poison(&mut self, why: &'static str) -> io::Error {
        tracing::debug!(reason = why, "upstream connection retired");
        self.poisoned = Some(why);
        self.inbox = BytesMut::new();
        io::Error::new(io::ErrorKind::InvalidData, why)
    }

    fn check(&self) -> io::Result<()> {
        match self.poisoned {
            Some(why) => Err(io::Error::new(io::ErrorKind::InvalidData, why)),
            None => Ok(()),
        }
    }

    /// Called with the first bytes of every write: a write while idle starts
    /// a new exchange.
    fn begin_request(&mut self, first: &[u8]) -> io::Result<()> {
        self.check()?;
        match self.exchange {
            Exchange::Idle if !first.is_empty() => {
                self.exchange = Exchange::Head {
                    head_request: first.starts_with(b"HEAD "),
                    upgrade: self.tunnels && asks_to_switch(first),
                };
                Ok(())
            }
            // A tunnel's bytes are the switched protocol's, not requests.
            Exchange::Idle | Exchange::Head { .. } | Exchange::Switched => Ok(()),
            _ => Err(self.poison("a new request was sent before the last answer ended")),
        }
    }

    /// Reads the answer head at the front of `bytes`: not whole yet, an
    /// interim one to drop, or the final one, whose body framing then
    /// becomes the exchange (a close-delimited HTTP/1.1 head is rewritten
    /// in place as HTTP/1.0, see the module documentation).
    fn take_head(&mut self, bytes: &mut [u8], head_request: bool, upgrade: bool) -> io::Result<Head> {
        let (len, version, status, framing) = {
            let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
            let mut response = httparse::Response::new(&mut []);
            let mut config = httparse::ParserConfig::default();
            config.allow_spaces_after_header_name_in_responses(true);
            let len = match config.parse_response_with_uninit_headers(&mut response, bytes, &mut headers) {
                Ok(httparse::Status::Complete(len)) => len,
                Ok(httparse::Status::Partial) if bytes.len() < MAX_HEAD => return Ok(Head::Partial),
                _ => return Err(self.poison("the API sent a malformed answer head")),
            };
            let version = response.version.unwrap_or(0);
            let status = response.code.unwrap_or(0);
            (len, version, status, framing(version, status, response.headers))
        };
        if (100..200).contains(&status) && status != 101 {
            // RFC 9110 §15.2: an interim answer; the final one follows.
            tracing::debug!(status, "interim answer from the API dropped");
            return Ok(Head::Interim(len));
        }
        let Ok(framing) = framing else {
            return Err(self.poison("the API sent a malformed answer head"));
        };
        if status == 101 && upgrade {
            // What follows the head is the new protocol's, however the
            // head describes a body.
            self.exchange = Exchange::Switched;
            return Ok(Head::Final(len));
        }
        self.exchange = match framing {
            _ if head_request => Exchange::Idle,
            Framing::None if version == 1 && is_close_delimited(status, &bytes[..len]) => {
                if !present_as_http10(&mut bytes[..len]) {
                    return Err(self.poison("the API sent an answer whose end cannot be told"));
                }
                Exchange::UntilClose
            }
            Framing::None => Exchange::Idle,
            Framing::Length(n) => Exchange::Length(n),
            Framing::UntilClose => Exchange::UntilClose,
            Framing::Chunked => match chunked_decoder(&self.config) {
                Some(codec) => Exchange::Chunked {
                    codec,
                    copy: BytesMut::new(),
                },
                None => return Err(self.poison("no chunked decoder")),
            },
        };
        Ok(Head::Final(len))
    }

    /// Takes answer heads off the front of `inbox`: interim ones are
    /// dropped, a final one moves to `outbox` with whatever of its body
    /// came along. Returns with the head still incomplete, or the exchange
    /// moved on.
    fn take_heads(&mut self, head_request: bool, upgrade: bool) -> io::Result<()> {
        loop {
            let mut inbox = std::mem::take(&mut self.inbox);
            let head = self.take_head(&mut inbox, head_request, upgrade);
            self.inbox = inbox;
            match head? {
                Head::Partial => return Ok(()),
                Head::Interim(len) => self.inbox.advance(len),
                Head::Final(len) => {
                    let head_bytes = self.inbox.split_to(len);
                    self.outbox.extend_from_slice(&head_bytes);
                    let rest = std::mem::take(&mut self.inbox);
                    if !rest.is_empty() {
                        let belongs = self.body_bytes(&rest)?;
                        self.outbox.extend_from_slice(&rest[..belongs]);
                    }
                    return Ok(());
                }
            }
        }
    }

    /// Follows `fresh` bytes of a body through the exchange: how many of
    /// them belong to the answer. Past its end the connection is poisoned
    /// (the rest is dropped) and the exchange is over.
    fn body_bytes(&mut self, fresh: &[u8]) -> io::Result<usize> {
        let belongs = match &mut self.exchange {
            Exchange::Length(left) => {
                let len = fresh.len() as u64;
                if len < *left {
                    *left -= len;
                    return Ok(fresh.len());
                }
                let belongs = usize::try_from(*left).unwrap_or(fresh.len());
                self.exchange = Exchange::Idle;
                belongs
            }
            Exchange::Chunked { codec, copy } => {
                copy.extend_from_slice(fresh);
                loop {
                    match codec.decode(copy) {
                        Ok(Some(Some(_))) => {}
                        Ok(Some(None)) => break,
                        Ok(None) => return Ok(fresh.len()),
                        Err(_) => return Err(self.poison("the API sent a malformed chunked body")),
                    }
                }
                let belongs = fresh.len().saturating_sub(copy.len());
                self.exchange = Exchange::Idle;
                belongs
            }
            Exchange::UntilClose | Exchange::Switched => return Ok(fresh.len()),
            Exchange::Idle | Exchange::Closed | Exchange::Head { .. } => 0,
        };
        if belongs < fresh.len() {
            // The answer is whole; what follows answers no request.
            self.poison("the API sent more than one answer");
        }
        Ok(belongs)
    }

    /// The end of the connection, as the exchange sees it.
    fn end_of_stream(&mut self) -> io::Result<()> {
        match self.exchange {
            Exchange::Idle | Exchange::Closed | Exchange::Switched => Ok(()),
            Exchange::UntilClose => {
                self.exchange = Exchange::Closed;
                Ok(())
            }
            Exchange::Head { .. } if self.inbox.is_empty() => {
                // Closed before any answer: awc reports the disconnect.
                Ok(())
            }
            Exchange::Head { .. } | Exchange::Length(_) | Exchange::Chunked { .. } => {
                self.poisoned = Some("the API closed the connection inside an answer");
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the API closed the connection inside an answer",
                ))
            }
        }
    }
}

/// How a body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// No body; for HTTP/1.1 also an answer with neither length nor
    /// chunking, which actix-http takes as bodiless.
    None,
    /// `Content-Length` (above zero).
    Length(u64),
    /// Chunked.
    Chunked,
    /// Until the close (HTTP/1.0 without a length, or `101`).
    UntilClose,
}

/// A header value as text, trimmed. Only the values of the few headers
/// that decide the framing are read as text.
fn text(value: &[u8]) -> Result<&str, ()> {
    std::str::from_utf8(value).map(str::trim).map_err(|_| ())
}

/// The body framing of an answer head as actix-http 3's response decoder
/// decides it (`MessageType::set_headers` and `ResponseHead`'s `decode` in
/// its `h1/decoder.rs`), which is where awc then stops reading; `Err` for a
/// head it refuses. It follows that decoder rather than RFC 9112 where the
/// two differ (a `204` or `304` with a length is read with that length):
/// what matters here is agreeing with awc.
fn framing(version: u8, status: u16, headers: &[httparse::Header<'_>]) -> Result<Framing, ()> {
    if !(100..=999).contains(&status) {
        return Err(());
    }
    let mut length = None;
    let mut chunked = false;
    let mut seen_te = false;
    let mut seen_host = false;
    let mut websocket = false;
    for header in headers {
        let name = header.name;
        if name.eq_ignore_ascii_case("content-length") {
            let value = text(header.value)?;
            if length.is_some() || value.starts_with('+') {
                return Err(());
            }
            length = Some(value.parse::<u64>().map_err(|_| ())?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if seen_te {
                return Err(());
            }
            if version == 1 {
                seen_te = true;
                match text(header.value)? {
                    v if v.eq_ignore_ascii_case("chunked") => chunked = true,
                    v if v.eq_ignore_ascii_case("identity") => {}
                    _ => return Err(()),
                }
            }
        } else if name.eq_ignore_ascii_case("host") {
            if seen_host {
                return Err(());
            }
            seen_host = true;
        } else if name.eq_ignore_ascii_case("upgrade") {
            websocket |= text(header.value).is_ok_and(|v| v.eq_ignore_ascii_case("websocket"));
        }
    }
    let payload = if chunked {
        Some(Framing::Chunked)
    } else if websocket {
        // actix-http reads an answer announcing a WebSocket upgrade as
        // one without a length, whatever `Content-Length` says.
        None
    } else {
        length.filter(|n| *n > 0).map(Framing::Length)
    };
    Ok(match payload {
        Some(framing) => framing,
        None if status == 101 || version == 0 => Framing::UntilClose,
        None => Framing::None,
    })
}

/// Whether a request's first written bytes ask to switch protocols: an
/// `Upgrade` header line in its head. awc writes a request head in one
/// write; a head split before that line only means a `101` is not taken
/// as a tunnel, which fails safe (the connection is retired).
fn asks_to_switch(first: &[u8]) -> bool {
    let head = head_end(first).map_or(first, |end| &first[..end]);
    head.split(|&b| b == b'\n').skip(1).any(|line| {
        let name = b"upgrade:";
        line.len() > name.len() && line[..name.len()].eq_ignore_ascii_case(name)
    })
}

/// Where a head ends (before its blank line), when it is whole.
fn head_end(bytes: &[u8]) -> Option<usize> {
    bytes.windows(4).position(|w| w == b"\r\n\r\n")
}

/// An HTTP/1.1 answer with neither a length nor chunking (whose body runs
/// until the API closes, RFC 9112 §6.3) that actix-http would take as
/// bodiless: any status but 1xx, 204 and 304, and no `Content-Length`
/// (one of zero is an empty body).
fn is_close_delimited(status: u16, head: &[u8]) -> bool {
    let bodiless = (100..200).contains(&status) || status == 204 || status == 304;
    !bodiless && !names_content_length(head)
}

/// Whether a head has a `Content-Length` line (any case, spaces allowed
/// before the colon as actix-http allows them in answers).
fn names_content_length(head: &[u8]) -> bool {
    head.split(|&b| b == b'\n').any(|line| {
        let name = b"content-length";
        line.len() > name.len()
            && line[..name.len()].eq_ignore_ascii_case(name)
            && line[name.len()..].trim_ascii_start().first() == Some(&b':')
    })
}

/// Rewrites the status line's `HTTP/1.1` as `HTTP/1.0` in place: the same
/// framing (until close), in the form awc reads that way. False when the
/// head does not start with `HTTP/1.1`.
fn present_as_http10(head: &mut [u8]) -> bool {
    // httparse skips empty lines before the status line.
    let start = head
        .iter()
        .position(|b| !matches!(b, b'\r' | b'\n'))
        .unwrap_or(head.len());
    match head.get_mut(start..start + 8) {
        Some(version) if version == b"HTTP/1.1" => {
            version[7] = b'0';
            true
        }
        _ => false,
    }
}

/// actix-http's chunked-body decoder, the one awc will use: reachable only
/// through a client codec that decoded a chunked head, so one decodes a
/// minimal one. Made for chunked answers only.
fn chunked_decoder(config: &ServiceConfig) -> Option<ClientPayloadCodec> {
    let mut codec = ClientCodec::new(config.clone());
    let mut head = BytesMut::from(&b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"[..]);
    match codec.decode(&mut head) {
        Ok(Some(_)) if matches!(codec.message_type(), MessageType::Payload) => {
            Some(codec.into_payload_codec())
        }
        _ => None,
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let GuardedStream { io, state: this } = self.get_mut();
        loop {
            if !this.outbox.is_empty() {
                let n = this.outbox.len().min(buf.remaining());
                buf.put_slice(&this.outbox[..n]);
                this.outbox.advance(n);
                return Poll::Ready(Ok(()));
            }
            this.check()?;
            if buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            let before = buf.filled().len();
            ready!(Pin::new(&mut *io).poll_read(cx, buf))?;
            let read = buf.filled().len() - before;
            if read == 0 {
                return Poll::Ready(this.end_of_stream());
            }
            match this.exchange {
                Exchange::Head {
                    head_request,
                    upgrade,
                } if this.inbox.is_empty() => {
                    // The usual case: the whole head came in one read,
                    // straight into awc's buffer, and stays there.
                    match this.take_head(&mut buf.filled_mut()[before..], head_request, upgrade)? {
                        Head::Final(len) => {
                            let belongs = this.body_bytes(&buf.filled()[before + len..])?;
                            buf.set_filled(before + len + belongs);
                            return Poll::Ready(Ok(()));
                        }
                        // Kept aside, not handed over, until the head is
                        // whole and known to be the final one.
                        Head::Partial | Head::Interim(_) => {
                            this.inbox.extend_from_slice(&buf.filled()[before..]);
                            buf.set_filled(before);
                            this.take_heads(head_request, upgrade)?;
                        }
                    }
                }
                Exchange::Head {
                    head_request,
                    upgrade,
                } => {
                    this.inbox.extend_from_slice(&buf.filled()[before..]);
                    buf.set_filled(before);
                    this.take_heads(head_request, upgrade)?;
                }
                Exchange::Length(_)
                | Exchange::Chunked { .. }
                | Exchange::UntilClose
                | Exchange::Switched => {
                    let belongs = this.body_bytes(&buf.filled()[before..])?;
                    buf.set_filled(before + belongs);
                    return Poll::Ready(Ok(()));
                }
                Exchange::Idle | Exchange::Closed => {
                    buf.set_filled(before);
                    return Poll::Ready(Err(this.poison("the API sent bytes no request asked for")));
                }
            }
        }
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.state.begin_request(buf)?;
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| &b[..]);
        self.state.begin_request(first)?;
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl ActixStream for GuardedStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<Ready>> {
        ActixStream::poll_read_ready(&self.io, cx)
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<Ready>> {
        ActixStream::poll_write_ready(&self.io, cx)
    }
}

/// awc's own TCP connector (the same resolver and connect logic), handing
/// out [`GuardedStream`]s; with [`OutboundTls`], every connection is TLS
/// (the handshake below the guard, so that the guard reads plain HTTP).
#[derive(Clone, Default)]
pub struct GuardedConnector {
    tcp: ConnectorService,
    tls: Option<OutboundTls>,
    /// The decoder's settings, made on the first connection: making them
    /// starts a timer task, which needs the worker's runtime.
    config: Rc<OnceCell<ServiceConfig>>,
    /// Connections for WebSocket handshakes (see [`State`]'s `tunnels`).
    tunnels: bool,
}

impl GuardedConnector {
    /// The same connector for the WebSocket client: its connections may
    /// become tunnels after a `101` that was asked for.
    pub fn for_websockets(&self) -> Self {
        Self {
            tunnels: true,
            ..self.clone()
        }
    }

    /// A connector whose every connection is TLS with `tls`.
    pub fn tls(tls: OutboundTls) -> Self {
        Self {
            tls: Some(tls),
            ..Self::default()
        }
    }
}

impl fmt::Debug for GuardedConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GuardedConnector")
    }
}

impl Service<ConnectInfo<Uri>> for GuardedConnector {
    type Response = Connection<Uri, GuardedStream>;
    type Error = ConnectError;
    // Boxed: paid once per new pooled connection, not per request.
    type Future = LocalBoxFuture<'static, Result<Self::Response, ConnectError>>;

    actix_service::always_ready!();

    fn call(&self, info: ConnectInfo<Uri>) -> Self::Future {
        let host = info.hostname().to_owned();
        let connecting = self.tcp.call(info);
        let tls = self.tls.clone();
        let config = self.config.get_or_init(ServiceConfig::default).clone();
        let tunnels = self.tunnels;
        Box::pin(async move {
            let (tcp, request) = connecting.await?.into_parts();
            let io = match tls {
                None => Transport::Plain(tcp),
                // awc's connect timeout runs over this future: it covers
                // the handshake too.
                Some(tls) => {
                    Transport::Tls(Box::new(tls.connect(&host, tcp).await.map_err(ConnectError::Io)?))
                }
            };
            Ok(Connection::new(request, GuardedStream::new(io, config, tunnels)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What actix-http's own decoder makes of `head` followed by `body`:
    /// `None` if it refuses the head, else how many body bytes belong to
    /// the answer and whether the answer ended within them.
    fn actix_reads(head: &str, body: &[u8]) -> Option<(usize, bool)> {
        let mut codec = ClientCodec::new(ServiceConfig::default());
        let mut bytes = BytesMut::from(head.as_bytes());
        codec.decode(&mut bytes).ok()??;
        if matches!(codec.message_type(), MessageType::None) {
            return Some((0, true));
        }
        read_body(&mut codec.into_payload_codec(), body)
    }

    /// How many bytes of `body` a payload decoder takes, and whether it
    /// found the end; `None` when it refuses them.
    fn read_body(payload: &mut ClientPayloadCodec, body: &[u8]) -> Option<(usize, bool)> {
        let mut rest = BytesMut::from(body);
        loop {
            match payload.decode(&mut rest) {
                Ok(Some(Some(_))) => {}
                Ok(Some(None)) => return Some((body.len() - rest.len(), true)),
                Ok(None) => return Some((body.len() - rest.len(), false)),
                Err(_) => return None,
            }
        }
    }

    /// The same, as the guard reads it.
    fn guard_reads(head: &str, body: &[u8]) -> Option<(usize, bool)> {
        let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        let mut config = httparse::ParserConfig::default();
        config.allow_spaces_after_header_name_in_responses(true);
        let parsed = config.parse_response_with_uninit_headers(&mut response, head.as_bytes(), &mut headers);
        if !matches!(parsed, Ok(httparse::Status::Complete(_))) {
            return None;
        }
        let framing = framing(response.version?, response.code?, response.headers).ok()?;
        Some(match framing {
            Framing::None => (0, true),
            Framing::Length(n) => {
                let n = usize::try_from(n).unwrap_or(usize::MAX);
                (n.min(body.len()), n <= body.len())
            }
            Framing::UntilClose => (body.len(), false),
            Framing::Chunked => read_body(&mut chunked_decoder(&ServiceConfig::default())?, body)?,
        })
    }

    /// The guard finds the end of every answer exactly where awc's decoder
    /// does (and refuses what it refuses), for the framings and the odd
    /// heads a hostile API can send.
    #[test]
    fn the_guard_reads_answers_as_awcs_decoder_does() {
        actix_rt::System::new().block_on(async {
            let chunked_body = b"5\r\nhello\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n\r\n";
            let plain_body = b"0123456789abcdef";
            let heads = [
                "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                "HTTP/1.1 200 OK\r\ncontent-length:  7 \r\n\r\n",
                "HTTP/1.1 200 OK\r\nContent-Length : 4\r\n\r\n",
                "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",
                "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
                "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked \r\nContent-Length: 3\r\n\r\n",
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\nContent-Length: 3\r\n\r\n",
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
                "HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n",
                "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
                "HTTP/1.0 200 OK\r\n\r\n",
                "HTTP/1.1 200 OK\r\n\r\n",
                "HTTP/1.1 204 No Content\r\n\r\n",
                "HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n",
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 3\r\n\r\n",
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
                "HTTP/1.1 200 OK\r\nUpgrade: websocket\r\nContent-Length: 3\r\n\r\n",
                "HTTP/1.0 200 OK\r\nUpgrade: websocket\r\nContent-Length: 3\r\n\r\n",
                "HTTP/1.1 200 OK\r\nHost: a\r\nHost: b\r\nContent-Length: 3\r\n\r\n",
                "HTTP/1.1 099 Odd\r\nContent-Length: 3\r\n\r\n",
                "HTTP/1.1 999 Odd\r\nContent-Length: 3\r\n\r\n",
                "\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n",
            ];
            for head in heads {
                for body in [&plain_body[..], &chunked_body[..]] {
                    assert_eq!(
                        guard_reads(head, body),
                        actix_reads(head, body),
                        "{head:?} then {:?}",
                        String::from_utf8_lossy(body)
                    );
                }
            }
        });
    }

    /// A guarded connection to a plain socket this test plays the API on,
    /// of the WebSocket client's kind when `tunnels`.
    async fn guarded_pair(tunnels: bool) -> (GuardedStream, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let tcp = actix_rt::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (api, _) = listener.accept().unwrap();
        (
            GuardedStream::new(Transport::Plain(tcp), ServiceConfig::default(), tunnels),
            api,
        )
    }

    async fn write(stream: &mut GuardedStream, bytes: &[u8]) -> io::Result<()> {
        let mut sent = 0;
        while sent < bytes.len() {
            sent += std::future::poll_fn(|cx| Pin::new(&mut *stream).poll_write(cx, &bytes[sent..])).await?;
        }
        Ok(())
    }

    /// Reads until `len` bytes came through the guard.
    async fn read(stream: &mut GuardedStream, len: usize) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = [0u8; 1024];
        while out.len() < len {
            let mut read_buf = ReadBuf::new(&mut buf);
            std::future::poll_fn(|cx| Pin::new(&mut *stream).poll_read(cx, &mut read_buf)).await?;
            let filled = read_buf.filled();
            if filled.is_empty() {
                break;
            }
            out.extend_from_slice(filled);
        }
        Ok(out)
    }

    /// The API's side: reads a request head whole.
    fn read_head(api: &mut std::net::TcpStream) -> Vec<u8> {
        use std::io::Read as _;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(api.read(&mut byte).unwrap(), 1, "the request head ended early");
            head.push(byte[0]);
        }
        head
    }

    const SWITCHED: &[u8] =
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n";

    /// After a `101` to a request that asked to switch, bytes pass both
    /// ways unchanged (WebSocket frames would otherwise count as stray
    /// bytes), even after the API closes its side.
    #[test]
    fn a_switch_that_was_asked_for_makes_a_tunnel() {
        use std::io::{Read as _, Write as _};
        actix_rt::System::new().block_on(async {
            let (mut guarded, mut api) = guarded_pair(true).await;
            let request =
                b"GET /ws HTTP/1.1\r\nhost: api\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n";
            write(&mut guarded, request).await.unwrap();
            read_head(&mut api);
            // A frame right behind the head, in the same segment.
            let mut answer = SWITCHED.to_vec();
            answer.extend_from_slice(b"\x81\x02hi");
            api.write_all(&answer).unwrap();
            assert_eq!(read(&mut guarded, answer.len()).await.unwrap(), answer);
            // The client's frames go out, more of the API's come in.
            write(&mut guarded, b"\x81\x82abcdXX").await.unwrap();
            let mut frame = [0u8; 8];
            api.read_exact(&mut frame).unwrap();
            assert_eq!(&frame, b"\x81\x82abcdXX");
            api.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
            assert_eq!(read(&mut guarded, 18).await.unwrap(), b"GET / HTTP/1.1\r\n\r\n");
            api.shutdown(std::net::Shutdown::Write).unwrap();
            assert_eq!(read(&mut guarded, 1).await.unwrap(), b"");
            write(&mut guarded, b"\x88\x80abcd").await.unwrap();
        });
    }

    /// A `101` nobody asked for is no tunnel: the connection is read until
    /// the close, and nothing may be written on it again.
    #[test]
    fn an_unasked_switch_retires_the_connection() {
        use std::io::Write as _;
        // Unasked: a request without `Upgrade` on the WebSocket client's
        // connection, or any request on an ordinary client's.
        let cases: [(bool, &[u8]); 3] = [
            (true, b"GET /plain HTTP/1.1\r\nhost: api\r\n\r\n"),
            (false, b"GET /plain HTTP/1.1\r\nhost: api\r\n\r\n"),
            (
                false,
                b"GET /ws HTTP/1.1\r\nhost: api\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
            ),
        ];
        for (tunnels, request) in cases {
            actix_rt::System::new().block_on(async {
                let (mut guarded, mut api) = guarded_pair(tunnels).await;
                write(&mut guarded, request).await.unwrap();
                read_head(&mut api);
                api.write_all(SWITCHED).unwrap();
                assert_eq!(read(&mut guarded, SWITCHED.len()).await.unwrap(), SWITCHED);
                let next = write(&mut guarded, b"GET /next HTTP/1.1\r\nhost: api\r\n\r\n").await;
                assert_eq!(next.unwrap_err().kind(), io::ErrorKind::InvalidData);
            });
        }
    }

    #[test]
    fn a_request_asks_to_switch_with_an_upgrade_header() {
        assert!(asks_to_switch(b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"));
        assert!(asks_to_switch(b"GET / HTTP/1.1\r\nhost: a\r\nupgrade: h2c\r\n"));
        assert!(!asks_to_switch(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n"));
        assert!(!asks_to_switch(b"GET / HTTP/1.1\r\nx-upgrade: websocket\r\n\r\n"));
        // A body that looks like a header is not the head.
        assert!(!asks_to_switch(
            b"POST / HTTP/1.1\r\ncontent-length: 20\r\n\r\nupgrade: websocket\r\n"
        ));
        assert!(!asks_to_switch(b"upgrade: websocket\r\n"));
    }

    #[test]
    fn a_close_delimited_head_is_presented_as_http10() {
        let mut head = b"\r\nHTTP/1.1 200 OK\r\n\r\n".to_vec();
        assert!(present_as_http10(&mut head));
        assert_eq!(head, b"\r\nHTTP/1.0 200 OK\r\n\r\n");
        assert!(!present_as_http10(&mut b"HTTP/2 200\r\n\r\n".to_vec()));
        assert!(is_close_delimited(200, b"HTTP/1.1 200 OK\r\nX: 1\r\n\r\n"));
        assert!(!is_close_delimited(
            200,
            b"HTTP/1.1 200 OK\r\nContent-length : 0\r\n\r\n"
        ));
        assert!(!is_close_delimited(204, b"HTTP/1.1 204 No Content\r\n\r\n"));
        assert!(!is_close_delimited(304, b"HTTP/1.1 304 Not Modified\r\n\r\n"));
    }
}
