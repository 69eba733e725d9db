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
//! exchange with actix-http's own HTTP/1 decoder (the one awc itself uses,
//! run on a copy of the bytes), so both always agree on where an answer
//! ends:
//! - between a request and its final answer, interim heads (1xx other than
//!   101) are removed from the byte stream before awc sees them;
//! - a close-delimited HTTP/1.1 answer (no length, not chunked), which awc
//!   would take as bodiless, is presented to awc as HTTP/1.0, whose framing
//!   is the same (read until the close) and which awc never reuses;
//! - the end of the connection inside a head or a body is an
//!   `UnexpectedEof` error, which awc passes on as a failed body;
//! - bytes past the end of the answer, bytes arriving while no request is
//!   in flight, and a new request before the last answer ended poison the
//!   connection: every later read or write fails, so awc's pool drops it.

use std::cell::OnceCell;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context, Poll};

use actix_codec::{AsyncRead, AsyncWrite, Decoder as _, ReadBuf};
use actix_http::h1::{ClientCodec, ClientPayloadCodec, MessageType};
use actix_http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use actix_http::{ResponseHead, ServiceConfig, StatusCode, Version};
use actix_rt::net::{ActixStream, Ready, TcpStream};
use actix_service::Service;
use actix_tls::connect::{ConnectError, ConnectInfo, Connection, ConnectorService};
use awc::http::Uri;
use bytes::{Buf as _, BytesMut};
use futures_core::future::LocalBoxFuture;

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
}

/// A TCP connection to the API that lets through exactly one complete
/// answer per request (see the module documentation).
pub struct GuardedStream {
    io: TcpStream,
    exchange: Exchange,
    /// Bytes of an answer head still being collected.
    inbox: BytesMut,
    /// Bytes of the final answer ready for awc, not yet taken.
    outbox: BytesMut,
    /// Why the connection may not be used any more.
    poisoned: Option<&'static str>,
    config: ServiceConfig,
}

impl fmt::Debug for GuardedStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedStream")
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

impl GuardedStream {
    fn new(io: TcpStream, config: ServiceConfig) -> Self {
        Self {
            io,
            exchange: Exchange::Idle,
            inbox: BytesMut::new(),
            outbox: BytesMut::new(),
            poisoned: None,
            config,
        }
    }

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
                };
                Ok(())
            }
            Exchange::Idle | Exchange::Head { .. } => Ok(()),
            _ => Err(self.poison("a new request was sent before the last answer ended")),
        }
    }

    /// Takes answer heads off the front of `inbox`: interim ones are
    /// dropped, a final one moves to `outbox` with whatever of its body
    /// came along. Returns with the head still incomplete, or the exchange
    /// moved on.
    fn take_heads(&mut self, head_request: bool) -> io::Result<()> {
        loop {
            let mut codec = ClientCodec::new(self.config.clone());
            let mut copy = self.inbox.clone();
            let head = match codec.decode(&mut copy) {
                Ok(Some(head)) => head,
                Ok(None) => return Ok(()),
                Err(_) => return Err(self.poison("the API sent a malformed answer head")),
            };
            let head_len = self.inbox.len() - copy.len();
            if head.status.is_informational() && head.status != StatusCode::SWITCHING_PROTOCOLS {
                // RFC 9110 §15.2: an interim answer; the final one follows.
                tracing::debug!(
                    status = head.status.as_u16(),
                    "interim answer from the API dropped"
                );
                self.inbox.advance(head_len);
                continue;
            }
            if !head_request && is_close_delimited(&head, codec.message_type()) {
                if present_as_http10(&mut self.inbox[..head_len]) {
                    continue;
                }
                return Err(self.poison("the API sent an answer whose end cannot be told"));
            }
            self.exchange = if head_request {
                Exchange::Idle
            } else {
                body_framing(&head, codec)
            };
            let head_bytes = self.inbox.split_to(head_len);
            self.outbox.extend_from_slice(&head_bytes);
            let rest = std::mem::take(&mut self.inbox);
            if !rest.is_empty() {
                let belongs = self.body_bytes(&rest)?;
                self.outbox.extend_from_slice(&rest[..belongs]);
            }
            return Ok(());
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
            Exchange::UntilClose => return Ok(fresh.len()),
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
            Exchange::Idle | Exchange::Closed => Ok(()),
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

/// An HTTP/1.1 answer with neither a length nor chunking, which actix-http
/// takes as bodiless although it runs until the API closes (RFC 9112 §6.3).
fn is_close_delimited(head: &ResponseHead, message: MessageType) -> bool {
    let bodiless = head.status.is_informational()
        || head.status == StatusCode::NO_CONTENT
        || head.status == StatusCode::NOT_MODIFIED;
    head.version == Version::HTTP_11
        && matches!(message, MessageType::None)
        && !bodiless
        && !head.headers.contains_key(CONTENT_LENGTH)
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

/// How the body of a final answer that has one is delimited, read the way
/// actix-http's decoder read it.
fn body_framing(head: &ResponseHead, codec: ClientCodec) -> Exchange {
    if matches!(codec.message_type(), MessageType::None) {
        return Exchange::Idle;
    }
    let chunked = head.version == Version::HTTP_11
        && head
            .headers
            .get(TRANSFER_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("chunked"));
    if chunked {
        return Exchange::Chunked {
            codec: codec.into_payload_codec(),
            copy: BytesMut::new(),
        };
    }
    let length = head
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match length {
        Some(n) => Exchange::Length(n),
        None => Exchange::UntilClose,
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
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
            ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
            let read = buf.filled().len() - before;
            if read == 0 {
                return Poll::Ready(this.end_of_stream());
            }
            match this.exchange {
                Exchange::Head { head_request } => {
                    // Collected, not handed over, until the head is whole
                    // and known to be the final one.
                    this.inbox.extend_from_slice(&buf.filled()[before..]);
                    buf.set_filled(before);
                    this.take_heads(head_request)?;
                }
                Exchange::Length(_) | Exchange::Chunked { .. } | Exchange::UntilClose => {
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
        self.begin_request(buf)?;
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| &b[..]);
        self.begin_request(first)?;
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
/// out [`GuardedStream`]s.
#[derive(Clone, Default)]
pub struct GuardedConnector {
    tcp: ConnectorService,
    /// The decoder's settings, made on the first connection: making them
    /// starts a timer task, which needs the worker's runtime.
    config: Rc<OnceCell<ServiceConfig>>,
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
        let connecting = self.tcp.call(info);
        let config = self.config.get_or_init(ServiceConfig::default).clone();
        Box::pin(async move {
            let (tcp, request) = connecting.await?.into_parts();
            Ok(Connection::new(request, GuardedStream::new(tcp, config)))
        })
    }
}
