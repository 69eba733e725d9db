//! Upstream connections that report when the API closes them, so that a
//! chunked body cut short by a close is told apart from a complete one.
//!
//! awc ends a response stream the same way whether the chunked decoder saw
//! the final `0\r\n\r\n` or the socket simply reached end-of-file in the
//! middle of a chunk (its payload codec has no end-of-file check). Passing
//! the second off as a whole body would hand the browser a truncated file
//! that looks complete. The one difference that can be seen from outside
//! is that the end-of-file read happens inside the very `poll_next` call
//! that returns the end: awc's framed reader only reads again when the
//! decoder needs more bytes, and turns a zero-byte read into the end of
//! the stream straight away. So every upstream socket counts its
//! end-of-file reads in a per-thread counter ([`eof_reads`]), and the
//! response body compares the counter across each poll. A worker runs on
//! one thread and a poll is synchronous, so no other connection's read can
//! slip in between.

use std::cell::Cell;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use actix_codec::{AsyncRead, AsyncWrite, ReadBuf};
use actix_rt::net::{ActixStream, Ready, TcpStream};
use actix_service::Service;
use actix_tls::connect::{ConnectError, ConnectInfo, Connection, ConnectorService};
use awc::http::Uri;
use futures_core::future::LocalBoxFuture;

thread_local! {
    static EOF_READS: Cell<u64> = const { Cell::new(0) };
}

/// How many reads on this thread's upstream sockets have found the API's
/// end of the connection so far.
pub fn eof_reads() -> u64 {
    EOF_READS.with(Cell::get)
}

/// A TCP connection to the API that counts its end-of-file reads.
#[derive(Debug)]
pub struct WatchedStream(TcpStream);

impl AsyncRead for WatchedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.0).poll_read(cx, buf);
        // A read with room that fills nothing is the peer's end of stream.
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() == before && buf.remaining() > 0 {
            EOF_READS.with(|count| count.set(count.get().wrapping_add(1)));
        }
        polled
    }
}

impl AsyncWrite for WatchedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl ActixStream for WatchedStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<Ready>> {
        ActixStream::poll_read_ready(&self.0, cx)
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<Ready>> {
        ActixStream::poll_write_ready(&self.0, cx)
    }
}

/// awc's own TCP connector (the same resolver and connect logic), handing
/// out [`WatchedStream`]s.
#[derive(Clone, Default)]
pub struct WatchedConnector(ConnectorService);

impl fmt::Debug for WatchedConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WatchedConnector")
    }
}

impl Service<ConnectInfo<Uri>> for WatchedConnector {
    type Response = Connection<Uri, WatchedStream>;
    type Error = ConnectError;
    // Boxed: paid once per new pooled connection, not per request.
    type Future = LocalBoxFuture<'static, Result<Self::Response, ConnectError>>;

    actix_service::always_ready!();

    fn call(&self, info: ConnectInfo<Uri>) -> Self::Future {
        let connecting = self.0.call(info);
        Box::pin(async move {
            let (tcp, request) = connecting.await?.into_parts();
            Ok(Connection::new(request, WatchedStream(tcp)))
        })
    }
}
