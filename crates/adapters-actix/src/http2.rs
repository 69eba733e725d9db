//! HTTP/2 to an https API that offers it by ALPN (SPEC §12), over the `h2`
//! crate: which protocol each origin speaks, one multiplexed connection per
//! origin that speaks HTTP/2, and one request and its answer on it.
//!
//! awc picks HTTP/2 only from the ALPN of TLS it does itself, above its
//! connector, where the upstream guard ([`crate::guard`]) would read
//! ciphertext; so awc keeps HTTP/1.1 (ALPN `http/1.1` only, the guard on
//! every connection) and this module is the HTTP/2 path beside it. h2 does
//! the protocol (framing, flow control, HPACK, dropping 1xx answers); this
//! is the glue.
//!
//! **Finding out.** The first request to an https origin opens a TLS
//! connection offering `h2, http/1.1`. If the API picks `h2`, the
//! connection becomes the origin's HTTP/2 connection. Otherwise the
//! origin is remembered as HTTP/1.1 and the connection is closed unused:
//! awc opens its own (one wasted handshake per worker and origin). Requests
//! that arrive while that first connection is being opened wait for it
//! rather than open more. What an origin speaks is kept per worker
//! ([`Memo`]) until something fails: a broken or closed HTTP/2 connection
//! is forgotten (the next request connects and asks again), an HTTP/1.1
//! origin is asked again after an exchange with it failed (an API
//! redeployed with HTTP/2 is found then, or when tokenjar restarts), and an
//! HTTP/2 connection is retired after [`LIFETIME`], as awc retires its
//! own, so that DNS changes are followed.
//!
//! **No guard on HTTP/2.** The guard exists because HTTP/1.1 has no
//! request ids: an answer is the next bytes on the connection, so a stray
//! interim answer or a cut body can shift every later answer to another
//! user's request. HTTP/2 frames carry their stream's id; h2 hands each
//! request only its own stream's frames, drops interim (1xx) heads itself,
//! checks a body against its `Content-Length`, and reports a stream reset
//! or a lost connection as an error, never as a clean end.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::{poll_fn, Future as _};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use actix_codec::{AsyncRead, AsyncWrite, ReadBuf};
use actix_http::error::PayloadError;
use actix_rt::net::TcpStream;
use actix_rt::time::Instant;
use actix_service::Service as _;
use actix_tls::connect::{ConnectInfo, ConnectorService};
use bytes::Bytes;
use futures_core::Stream;
use futures_util::future::{abortable, AbortHandle, FutureExt as _, LocalBoxFuture, Shared};
use h2::client::{ResponseFuture, SendRequest};
use h2::{Reason, RecvStream, SendStream};
use http::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT_ENCODING, CONTENT_LENGTH};
use http::{Method, Uri, Version};
use tokenjar_domain::{Headers, UpstreamError};
use tokio_rustls::client::TlsStream;

use crate::body::RequestBody;
use crate::headers;
use crate::outbound::{self, OutboundTls};

/// How long a new request may use an HTTP/2 connection (awc's default
/// connection lifetime): then the next request opens a fresh one, so that
/// a changed DNS answer is followed. Requests in flight finish on the old
/// one, which closes after its last stream.
pub(crate) const LIFETIME: Duration = Duration::from_secs(75);

/// Flow-control window of each response stream: what the API may send
/// ahead of a browser that reads slowly (tokenjar holds at most this much
/// of one answer). h2's default (64 KiB) would hold a distant API to
/// 64 KiB per round trip.
const STREAM_WINDOW: u32 = 256 * 1024;

/// Window of the whole connection: shared by every stream, and taken by
/// data the browser has not read yet, so it is sized for 64 stalled
/// downloads before the others on the connection wait too.
const CONNECTION_WINDOW: u32 = 64 * STREAM_WINDOW;

/// The most an answer's headers may take (RFC 9113 §6.5.2's measure):
/// actix-http's limit on an HTTP/1 head, which the guard shares, instead
/// of h2's 16 MiB.
const MAX_HEADER_LIST: u32 = 128 * 1024;

/// HTTP/2 for the https origins of one worker.
pub(crate) struct Http2 {
    tls: OutboundTls,
    tcp: ConnectorService,
    connect_timeout: Duration,
    memo: RefCell<Memo<Connection, Probe>>,
}

/// The first connection to an origin, while it is being opened; awaited
/// by every request to that origin meanwhile.
type Probe = Shared<LocalBoxFuture<'static, Result<Speaks<Connection>, UpstreamError>>>;

/// What an origin was found to speak.
#[derive(Clone, Debug)]
pub(crate) enum Speaks<C> {
    /// HTTP/1.1 (or no ALPN at all): awc's guarded TLS clients.
    Http1,
    /// HTTP/2, on this connection.
    Http2(C),
}

/// One HTTP/2 connection to an origin; the driver runs as a task of the
/// worker.
#[derive(Clone)]
pub(crate) struct Connection {
    send: SendRequest<Bytes>,
    life: Rc<Life>,
}

struct Life {
    opened: Instant,
    /// Set when the connection ended (closed, broken, or gone away with
    /// nothing left in flight).
    ended: Cell<bool>,
    /// The TLS failure that broke the connection, explained ([`Watched`]).
    tls_failure: Rc<RefCell<Option<String>>>,
    /// h2's connection future, polled by its driver task and, before a
    /// request reuses the connection, by [`Life::catch_up`].
    driver: RefCell<Option<Driver>>,
    /// The driver task's waker: every poll of the connection uses it, so
    /// that its wake-ups always reach the driver task.
    waker: RefCell<Option<Waker>>,
}

/// h2's side of a connection: the future that reads and writes its frames.
type Driver = Pin<Box<h2::client::Connection<Watched, Bytes>>>;

impl Life {
    /// Polls the connection with `waker`; ready once it ended.
    fn drive(&self, waker: &Waker) -> Poll<()> {
        // Never re-entered (one thread, and h2 calls nothing of ours but
        // the socket); a second borrow would mean a poll already runs.
        let Ok(mut driver) = self.driver.try_borrow_mut() else {
            return Poll::Pending;
        };
        let Some(connection) = driver.as_mut() else {
            return Poll::Ready(());
        };
        let Poll::Ready(result) = connection.as_mut().poll(&mut Context::from_waker(waker)) else {
            return Poll::Pending;
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "HTTP/2 connection to the API failed");
        }
        *driver = None;
        self.ended.set(true);
        Poll::Ready(())
    }

    /// Lets the connection take in what already arrived (the API's close,
    /// a GOAWAY) before a request is put on it: its driver task may not
    /// have run since. awc checks an idle HTTP/1 connection the same way
    /// before reusing it.
    fn catch_up(&self) {
        let waker = self.waker.borrow().clone();
        if let Some(waker) = waker {
            if self.drive(&waker).is_ready() {
                // The driver task would wait for a wake-up that the ended
                // connection no longer sends: it is told to finish.
                waker.wake();
            }
        }
    }
}

impl Connection {
    /// A failure of this connection or of a stream on it, as the domain
    /// names it.
    pub(crate) fn failed(&self, error: &h2::Error) -> UpstreamError {
        match self.life.tls_failure.borrow().as_ref() {
            Some(why) => UpstreamError::Unavailable(why.clone()),
            None => unavailable(error),
        }
    }
}

/// Whether a remembered connection may take a new request.
pub(crate) trait Usable {
    /// Not ended, not too old.
    fn usable(&self, now: Instant) -> bool;
    /// The same connection (or probe) as `other`.
    fn same(&self, other: &Self) -> bool;
}

impl Usable for Connection {
    fn usable(&self, now: Instant) -> bool {
        !self.life.ended.get() && now.duration_since(self.life.opened) < LIFETIME
    }

    fn same(&self, other: &Self) -> bool {
        Rc::ptr_eq(&self.life, &other.life)
    }
}

/// Only [`Usable::same`] applies to a probe.
pub(crate) trait Same {
    /// The same probe as `other`.
    fn same(&self, other: &Self) -> bool;
}

impl Same for Probe {
    fn same(&self, other: &Self) -> bool {
        self.ptr_eq(other)
    }
}

/// What one worker knows of each https origin (by authority,
/// `host[:port]` as the URL spells it). Pure bookkeeping: no I/O, so that
/// its rules are tested on their own.
pub(crate) struct Memo<C, P> {
    origins: HashMap<Box<str>, Entry<C, P>>,
}

/// What is known of one origin.
#[derive(Clone, Debug)]
pub(crate) enum Entry<C, P> {
    /// Speaks HTTP/1.1.
    Http1,
    /// Speaks HTTP/2 on this connection.
    Http2(C),
    /// Being found out.
    Probing(P),
}

impl<C: Usable + Clone, P: Same + Clone> Memo<C, P> {
    pub(crate) fn new() -> Self {
        Self {
            origins: HashMap::new(),
        }
    }

    /// What is known of `authority`; `None` when nothing is (or only a
    /// connection that may not be used any more, which is forgotten).
    pub(crate) fn look(&mut self, authority: &str, now: Instant) -> Option<Entry<C, P>> {
        match self.origins.get(authority)? {
            Entry::Http2(conn) if !conn.usable(now) => {
                self.origins.remove(authority);
                None
            }
            entry => Some(entry.clone()),
        }
    }

    /// `probe` finds out what `authority` speaks.
    pub(crate) fn probing(&mut self, authority: &str, probe: P) {
        self.origins.insert(authority.into(), Entry::Probing(probe));
    }

    /// `probe` ended with `found` (`None`: it failed, so the next request
    /// asks again). True when this call recorded it (once per probe,
    /// whichever of its waiters comes first): the one to log it.
    pub(crate) fn settle(&mut self, authority: &str, probe: &P, found: Option<Speaks<C>>) -> bool {
        let Some(Entry::Probing(current)) = self.origins.get(authority) else {
            return false;
        };
        if !current.same(probe) {
            return false;
        }
        match found {
            None => {
                self.origins.remove(authority);
            }
            Some(Speaks::Http1) => {
                self.origins.insert(authority.into(), Entry::Http1);
            }
            Some(Speaks::Http2(conn)) => {
                self.origins.insert(authority.into(), Entry::Http2(conn));
            }
        }
        true
    }

    /// `conn` failed: forgotten, unless another already replaced it.
    pub(crate) fn forget_connection(&mut self, authority: &str, conn: &C) {
        if matches!(self.origins.get(authority), Some(Entry::Http2(known)) if known.same(conn)) {
            self.origins.remove(authority);
        }
    }

    /// An HTTP/1.1 exchange with `authority` failed: ask again next time.
    pub(crate) fn forget_http1(&mut self, authority: &str) {
        if matches!(self.origins.get(authority), Some(Entry::Http1)) {
            self.origins.remove(authority);
        }
    }
}

/// Where a request to an https origin goes.
pub(crate) enum Route {
    /// awc's guarded HTTP/1.1 clients.
    Http1,
    /// This HTTP/2 connection, ready for a new stream.
    Http2(Connection, SendRequest<Bytes>),
}

impl Http2 {
    pub(crate) fn new(tls: OutboundTls, connect_timeout: Duration) -> Self {
        Self {
            tls,
            tcp: ConnectorService::default(),
            connect_timeout,
            memo: RefCell::new(Memo::new()),
        }
    }

    /// Where a request to `authority` goes: finds out what it speaks when
    /// that is not known, and connects when its HTTP/2 connection is gone.
    ///
    /// # Errors
    /// The origin could not be reached (TCP, TLS or the HTTP/2 handshake),
    /// as [`UpstreamError::Unavailable`] or [`UpstreamError::Timeout`].
    pub(crate) async fn route(&self, authority: &str) -> Result<Route, UpstreamError> {
        // A connection that turns out dead when asked for a stream (it
        // broke while idle) is replaced once: nothing was sent on it.
        let mut attempts = 2;
        loop {
            attempts -= 1;
            let conn = match self.speaks(authority).await? {
                Speaks::Http1 => return Ok(Route::Http1),
                Speaks::Http2(conn) => conn,
            };
            match conn.send.clone().ready().await {
                Ok(send) => return Ok(Route::Http2(conn, send)),
                Err(e) => {
                    tracing::debug!(origin = authority, error = %e, "HTTP/2 connection to the API lost");
                    self.forget(authority, &conn);
                    if attempts == 0 {
                        return Err(conn.failed(&e));
                    }
                }
            }
        }
    }

    /// `conn` failed: the next request connects again.
    pub(crate) fn forget(&self, authority: &str, conn: &Connection) {
        self.memo.borrow_mut().forget_connection(authority, conn);
    }

    /// An HTTP/1.1 exchange with `authority` failed: the next request asks
    /// again what it speaks.
    pub(crate) fn forget_http1(&self, authority: &str) {
        self.memo.borrow_mut().forget_http1(authority);
    }

    async fn speaks(&self, authority: &str) -> Result<Speaks<Connection>, UpstreamError> {
        // The borrow ends before any wait: other requests of the worker
        // use the memo meanwhile.
        let probe = {
            let known = self.memo.borrow_mut().look(authority, Instant::now());
            if let Some(Entry::Http2(conn)) = &known {
                conn.life.catch_up();
                if !conn.life.ended.get() {
                    return Ok(Speaks::Http2(conn.clone()));
                }
                self.forget(authority, conn);
            }
            let mut memo = self.memo.borrow_mut();
            match memo.look(authority, Instant::now()) {
                Some(Entry::Http1) => return Ok(Speaks::Http1),
                Some(Entry::Http2(conn)) => return Ok(Speaks::Http2(conn)),
                Some(Entry::Probing(probe)) => probe,
                None => {
                    let probe = open(
                        self.tls.clone(),
                        self.tcp.clone(),
                        authority.to_owned(),
                        self.connect_timeout,
                    )
                    .boxed_local()
                    .shared();
                    memo.probing(authority, probe.clone());
                    probe
                }
            }
        };
        let found = probe.clone().await;
        let settled = self
            .memo
            .borrow_mut()
            .settle(authority, &probe, found.as_ref().ok().cloned());
        if settled {
            match &found {
                Ok(Speaks::Http1) => tracing::debug!(origin = authority, "the API speaks HTTP/1.1"),
                Ok(Speaks::Http2(_)) => tracing::debug!(origin = authority, "the API speaks HTTP/2"),
                Err(_) => {}
            }
        }
        found
    }
}

/// Opens a TLS connection to `authority` offering `h2`; on HTTP/2, the
/// HTTP/2 handshake too, with the connection's driver spawned on the
/// worker.
async fn open(
    tls: OutboundTls,
    tcp: ConnectorService,
    authority: String,
    connect_timeout: Duration,
) -> Result<Speaks<Connection>, UpstreamError> {
    let uri: Uri = format!("https://{authority}/")
        .parse()
        .map_err(|_| UpstreamError::Unavailable("the API's address is not a valid URI".into()))?;
    let host = uri.host().unwrap_or_default().to_owned();
    // As awc's connect timeout does, this covers the TLS handshake too.
    let connecting = async {
        let (tcp, _) = tcp
            .call(ConnectInfo::new(uri))
            .await
            .map_err(|e| UpstreamError::Unavailable(format!("Failed to connect to host: {e}")))?
            .into_parts();
        tls.connect_offering_h2(&host, tcp)
            .await
            .map_err(|e| UpstreamError::Unavailable(format!("Failed to connect to host: {e}")))
    };
    let (stream, h2) = actix_rt::time::timeout(connect_timeout, connecting)
        .await
        .map_err(|_| UpstreamError::Timeout)??;
    if !h2 {
        // Dropped unused: awc opens its own, HTTP/1.1 only, under the guard.
        return Ok(Speaks::Http1);
    }
    let tls_failure = Rc::new(RefCell::new(None));
    let watched = Watched {
        io: stream,
        tls_failure: Rc::clone(&tls_failure),
    };
    let (send, connection) = h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_header_list_size(MAX_HEADER_LIST)
        .enable_push(false)
        .handshake::<_, Bytes>(watched)
        .await
        .map_err(|e| unavailable(&e))?;
    let life = Rc::new(Life {
        opened: Instant::now(),
        ended: Cell::new(false),
        tls_failure,
        driver: RefCell::new(Some(Box::pin(connection))),
        waker: RefCell::new(None),
    });
    let driver = Rc::clone(&life);
    actix_rt::spawn(poll_fn(move |cx| {
        {
            let mut waker = driver.waker.borrow_mut();
            if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *waker = Some(cx.waker().clone());
            }
        }
        driver.drive(cx.waker())
    }));
    Ok(Speaks::Http2(Connection { send, life }))
}

/// The TLS session under an HTTP/2 connection, noting the first TLS error
/// (under TLS 1.3, a server that refuses tokenjar's client certificate
/// says so after the handshake, with the first read): h2 keeps only an
/// I/O error's kind and text, and a stream still queued when the
/// connection broke is told no more than "broken pipe".
struct Watched {
    io: TlsStream<TcpStream>,
    /// [`Life::tls_failure`] (not the `Life` itself, which owns this).
    tls_failure: Rc<RefCell<Option<String>>>,
}

impl Watched {
    fn note<T>(&self, polled: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
        if let Poll::Ready(Err(e)) = &polled {
            if let Some(tls) = outbound::rustls_error(e) {
                let mut failure = self.tls_failure.borrow_mut();
                if failure.is_none() {
                    *failure = Some(format!(
                        "TLS with the API failed: {}",
                        outbound::explain(tls, "the API")
                    ));
                }
            }
        }
        polled
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        this.note(polled)
    }
}

impl AsyncWrite for Watched {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.note(polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.note(polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_flush(cx);
        this.note(polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_shutdown(cx);
        this.note(polled)
    }
}

/// A request body for [`send`].
pub(crate) enum Body {
    /// No body (and no `Content-Length`).
    None,
    /// Read whole already.
    Bytes(Bytes),
    /// Streamed as the client sends it; the length when announced.
    Stream(RequestBody, Option<u64>),
}

/// Why [`send`] got no answer head.
pub(crate) enum Failure {
    /// The client's request body failed (its error's description).
    Body(String),
    /// The request was refused as built (not sent).
    Request(UpstreamError),
    /// The stream or the connection failed.
    Upstream(h2::Error),
}

/// Sends one request on `send` (ready for a new stream) and waits for the
/// answer head. A streamed body keeps going in a task of its own, so that
/// the API may answer before it has read all of it.
pub(crate) async fn send(
    mut send: SendRequest<Bytes>,
    method: &str,
    url: &str,
    headers: Headers,
    body: Body,
) -> Result<http::Response<RecvStream>, Failure> {
    let length = match &body {
        Body::None => None,
        Body::Bytes(bytes) => Some(bytes.len() as u64),
        Body::Stream(_, length) => *length,
    };
    let request = request(method, url, headers, length).map_err(Failure::Request)?;
    // An empty body (a client's `Content-Length: 0`) ends the stream with
    // the headers, its length announced.
    let end = match &body {
        Body::None => true,
        Body::Bytes(bytes) => bytes.is_empty(),
        Body::Stream(..) => false,
    };
    let (response, mut stream) = send.send_request(request, end).map_err(Failure::Upstream)?;
    match body {
        Body::None => answer(response, None).await,
        Body::Bytes(_) if end => answer(response, None).await,
        Body::Bytes(bytes) => {
            // Queued whole; h2 sends it as the API's window allows.
            stream.send_data(bytes, true).map_err(Failure::Upstream)?;
            answer(response, None).await
        }
        Body::Stream(body, _) => {
            let failed = Rc::new(RefCell::new(None));
            let (upload, abort) = abortable(upload(body, stream, Rc::clone(&failed)));
            actix_rt::spawn(upload);
            // Until the head arrives, giving up on the request (its
            // timeout, or the browser gone) stops the upload, which resets
            // the stream; after it, the upload goes on beside the answer.
            let mut abort = AbortOnDrop(Some(abort));
            let head = answer(response, Some(&failed)).await;
            if head.is_ok() {
                abort.0 = None;
            }
            head
        }
    }
}

/// Aborts the upload task when dropped while armed.
struct AbortOnDrop(Option<AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(abort) = self.0.take() {
            abort.abort();
        }
    }
}

/// The answer head; after a failure, the body's own failure if it had one
/// (the upload resets the stream when the client's body fails).
async fn answer(
    response: ResponseFuture,
    body_failed: Option<&RefCell<Option<String>>>,
) -> Result<http::Response<RecvStream>, Failure> {
    response.await.map_err(
        |e| match body_failed.and_then(|failed| failed.borrow_mut().take()) {
            Some(why) => Failure::Body(why),
            None => Failure::Upstream(e),
        },
    )
}

/// Streams the client's body to the API within h2's flow control: no more
/// is read from the client than the API has room for. A client body that
/// fails resets the stream, after noting why in `failed`.
async fn upload(mut body: RequestBody, mut stream: SendStream<Bytes>, failed: Rc<RefCell<Option<String>>>) {
    loop {
        let mut chunk = match poll_fn(|cx| Pin::new(&mut body).poll_next(cx)).await {
            None => {
                // The API may have reset the stream meanwhile: nothing to do.
                let _ = stream.send_data(Bytes::new(), true);
                return;
            }
            Some(Ok(chunk)) => chunk,
            Some(Err(e)) => {
                *failed.borrow_mut() = Some(e.to_string());
                stream.send_reset(Reason::CANCEL);
                return;
            }
        };
        while !chunk.is_empty() {
            stream.reserve_capacity(chunk.len());
            match poll_fn(|cx| stream.poll_capacity(cx)).await {
                Some(Ok(0)) => {}
                Some(Ok(room)) => {
                    let part = chunk.split_to(room.min(chunk.len()));
                    if stream.send_data(part, false).is_err() {
                        return;
                    }
                }
                // The API reset the stream or the connection ended: its
                // answer (or the error) reaches the browser through the
                // response.
                Some(Err(_)) | None => return,
            }
        }
    }
}

/// The `http` request h2 sends: h2 derives `:scheme`, `:authority` and
/// `:path` from the absolute URI.
fn request(
    method: &str,
    url: &str,
    headers: Headers,
    length: Option<u64>,
) -> Result<http::Request<()>, UpstreamError> {
    let mut request = http::Request::new(());
    *request.method_mut() = Method::from_bytes(method.as_bytes())
        .map_err(|_| UpstreamError::RequestBody("the method is not a valid token".into()))?;
    *request.uri_mut() = url
        .parse()
        .map_err(|_| UpstreamError::Unavailable("the API's URL is not a valid URI".into()))?;
    *request.version_mut() = Version::HTTP_2;
    *request.headers_mut() = h2_headers(headers, length);
    Ok(request)
}

/// The request's headers as HTTP/2 takes them: without those that are
/// about an HTTP/1 connection (h2 refuses to send them; the domain drops
/// them already, this holds whatever the domain lets through), with the
/// body's own `Content-Length`, and `Accept-Encoding: identity` when the
/// client named no encoding, as awc adds on HTTP/1.1 (the login reads the
/// body, which must not come compressed).
pub(crate) fn h2_headers(headers: Headers, length: Option<u64>) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in headers::to_actix(headers) {
        if !connection_specific(&name, &value) {
            map.append(name, value);
        }
    }
    if let Some(length) = length {
        map.insert(CONTENT_LENGTH, HeaderValue::from(length));
    }
    if !map.contains_key(ACCEPT_ENCODING) {
        map.insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
    }
    map
}

/// RFC 9113 §8.2.2: connection-specific fields never go into HTTP/2 (`te`
/// only as `trailers`); `host` is `:authority`, and the length is the
/// body's own.
fn connection_specific(name: &HeaderName, value: &HeaderValue) -> bool {
    match name.as_str() {
        "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "upgrade" | "host"
        | "content-length" => true,
        "te" => !value.as_bytes().eq_ignore_ascii_case(b"trailers"),
        _ => false,
    }
}

/// An HTTP/2 failure as the domain names it: a TLS alert after the
/// handshake explained as on HTTP/1.1 (see also [`Connection::failed`]).
fn unavailable(error: &h2::Error) -> UpstreamError {
    if let Some(tls) = error.get_io().and_then(outbound::rustls_error) {
        return UpstreamError::Unavailable(format!(
            "TLS with the API failed: {}",
            outbound::explain(tls, "the API")
        ));
    }
    UpstreamError::Unavailable(format!("HTTP/2: {error}"))
}

/// The body of an answer over HTTP/2, streamed as the browser takes it:
/// the API's window is given back only for what was handed on. A stream
/// the API reset or a connection lost mid-body ends in an error, never a
/// clean end, so that the browser sees a cut body.
pub struct Http2Body {
    recv: RecvStream,
    /// The announced `Content-Length`, for reading the body whole.
    length: Option<u64>,
}

impl std::fmt::Debug for Http2Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http2Body")
            .field("length", &self.length)
            .finish_non_exhaustive()
    }
}

impl Http2Body {
    pub(crate) fn new(recv: RecvStream, length: Option<u64>) -> Self {
        Self { recv, length }
    }

    /// The announced `Content-Length`.
    pub(crate) fn length(&self) -> Option<u64> {
        self.length
    }
}

impl Stream for Http2Body {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            let Some(data) = std::task::ready!(this.recv.poll_data(cx)) else {
                return Poll::Ready(None);
            };
            let data = data.map_err(cut)?;
            if data.is_empty() {
                continue;
            }
            this.recv
                .flow_control()
                .release_capacity(data.len())
                .map_err(cut)?;
            return Poll::Ready(Some(Ok(data)));
        }
    }
}

/// A body that ended in an error: cut short, as on HTTP/1.1.
fn cut(error: h2::Error) -> PayloadError {
    PayloadError::Incomplete(Some(std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        format!("the API's HTTP/2 stream failed: {error}"),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug)]
    struct Fake {
        id: u32,
        usable: bool,
    }

    impl Usable for Fake {
        fn usable(&self, _now: Instant) -> bool {
            self.usable
        }
        fn same(&self, other: &Self) -> bool {
            self.id == other.id
        }
    }

    impl Same for u32 {
        fn same(&self, other: &Self) -> bool {
            self == other
        }
    }

    fn fake(id: u32) -> Fake {
        Fake { id, usable: true }
    }

    #[test]
    fn the_memo_settles_each_probe_once_and_keeps_what_was_found() {
        let now = Instant::now();
        let mut memo: Memo<Fake, u32> = Memo::new();
        assert!(memo.look("api:443", now).is_none());
        memo.probing("api:443", 1);
        assert!(matches!(memo.look("api:443", now), Some(Entry::Probing(1))));
        // A probe that was replaced settles nothing.
        assert!(!memo.settle("api:443", &2, Some(Speaks::Http1)));
        assert!(memo.settle("api:443", &1, Some(Speaks::Http2(fake(7)))));
        // Its other waiters find it settled already (one log line).
        assert!(!memo.settle("api:443", &1, Some(Speaks::Http2(fake(7)))));
        assert!(matches!(
            memo.look("api:443", now),
            Some(Entry::Http2(Fake { id: 7, .. }))
        ));
        // Origins are apart.
        assert!(memo.look("api:8443", now).is_none());

        memo.probing("v1:443", 3);
        assert!(memo.settle("v1:443", &3, Some(Speaks::Http1)));
        assert!(matches!(memo.look("v1:443", now), Some(Entry::Http1)));
    }

    #[test]
    fn a_failed_probe_is_asked_again() {
        let now = Instant::now();
        let mut memo: Memo<Fake, u32> = Memo::new();
        memo.probing("api", 1);
        assert!(memo.settle("api", &1, None));
        assert!(memo.look("api", now).is_none());
    }

    #[test]
    fn a_failed_or_unusable_connection_is_forgotten_and_no_other() {
        let now = Instant::now();
        let mut memo: Memo<Fake, u32> = Memo::new();
        memo.probing("api", 1);
        memo.settle("api", &1, Some(Speaks::Http2(fake(7))));
        // A failure of an older connection leaves the newer one.
        memo.forget_connection("api", &fake(6));
        assert!(matches!(memo.look("api", now), Some(Entry::Http2(_))));
        memo.forget_connection("api", &fake(7));
        assert!(memo.look("api", now).is_none());

        memo.probing("api", 2);
        memo.settle("api", &2, Some(Speaks::Http2(Fake { id: 8, usable: false })));
        assert!(memo.look("api", now).is_none(), "an ended or old connection");
        assert!(memo.look("api", now).is_none());
    }

    #[test]
    fn an_http1_origin_is_asked_again_after_a_failure() {
        let now = Instant::now();
        let mut memo: Memo<Fake, u32> = Memo::new();
        memo.probing("api", 1);
        memo.settle("api", &1, Some(Speaks::Http1));
        memo.forget_http1("api");
        assert!(memo.look("api", now).is_none());
        // Not a probe or a connection, though.
        memo.probing("api", 2);
        memo.forget_http1("api");
        assert!(matches!(memo.look("api", now), Some(Entry::Probing(2))));
    }

    #[test]
    fn nothing_connection_specific_reaches_http2() {
        let headers: Headers = [
            ("connection", "keep-alive"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("te", "gzip"),
            ("host", "api.example"),
            ("content-length", "99"),
            ("auth-token", "secret"),
            ("x-many", "1"),
            ("x-many", "2"),
        ]
        .into_iter()
        .collect();
        let map = h2_headers(headers, Some(5));
        let mut names: Vec<&str> = map.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            ["accept-encoding", "auth-token", "content-length", "x-many"]
        );
        assert_eq!(map.get("content-length").unwrap(), "5");
        assert_eq!(map.get("accept-encoding").unwrap(), "identity");
        assert_eq!(map.get_all("x-many").iter().count(), 2);

        let kept: Headers = [("te", "Trailers"), ("accept-encoding", "gzip")]
            .into_iter()
            .collect();
        let map = h2_headers(kept, None);
        assert_eq!(map.get("te").unwrap(), "Trailers");
        assert_eq!(map.get("accept-encoding").unwrap(), "gzip");
        assert!(map.get("content-length").is_none(), "no body, no length");
    }
}
