//! [`AwcUpstream`]: the domain's `Upstream` port over awc, and over h2 for
//! an https API that offers HTTP/2 ([`crate::http2`]). One per server
//! worker (awc is not `Send`), with its own keep-alive pools: one for
//! requests whose body is in hand, one for streamed uploads. No
//! redirects are followed, no cookies stored, nothing decompressed: the
//! API's answer goes back as it came. Every HTTP/1 connection holds the API
//! to one complete answer per request (see [`crate::guard`]), as HTTP/2's
//! framing does by itself: interim answers are dropped and a body the API
//! cut short ends in an error.

use std::borrow::Cow;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_http::error::ParseError;
use actix_rt::time::Instant;
use actix_web::body::SizedStream;
use actix_web::http::Method;
use awc::error::{ConnectError, PayloadError, SendRequestError};
use bytes::Bytes;
use futures_core::Stream;
use tokenjar_domain::{
    BodyReadError, BodySize, Headers, Upstream, UpstreamError, UpstreamRequest, UpstreamResponse,
};

use crate::body::{BodyFlags, RequestBody};
use crate::guard::GuardedConnector;
use crate::headers;
use crate::http2::{self, Failure, Http2, Http2Body, Route};
use crate::outbound::{self, OutboundTls};

/// The body of the API's response, streamed back to the browser: awc's
/// response itself on HTTP/1.1 (not boxed: the plain-http path costs what
/// it did before HTTP/2 existed), h2's stream on HTTP/2. A body the API cut
/// short ends in an error (from [`crate::guard`], or h2's for a reset
/// stream), never in a clean end, so that the browser sees a cut stream.
#[derive(Debug)]
pub enum ResponseBody {
    /// Over HTTP/1.1 (plain http, or https without HTTP/2).
    Http1(awc::ClientResponse),
    /// Over HTTP/2.
    Http2(Http2Body),
}

impl ResponseBody {
    /// The `Content-Length` the API announced.
    fn announced_length(&self) -> Option<u64> {
        match self {
            Self::Http1(response) => response
                .headers()
                .get(actix_web::http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok()),
            Self::Http2(body) => body.length(),
        }
    }
}

impl Stream for ResponseBody {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.get_mut() {
            Self::Http1(response) => Pin::new(response).poll_next(cx),
            Self::Http2(body) => Pin::new(body).poll_next(cx),
        }
    }
}

/// Timeouts and pool size of the upstream client.
#[derive(Clone, Debug)]
pub struct UpstreamSettings {
    /// Time to open a TCP connection to the API.
    pub connect_timeout: Duration,
    /// Time from sending a request to having the API's response head.
    pub timeout: Duration,
    /// Connections per worker to the API; 0 = awc's default (100). The
    /// streamed uploads have a pool of the same size of their own.
    pub pool_size: usize,
    /// Request bodies up to this size are read whole before a connection
    /// is taken (`server.client_body_buffer_bytes`).
    pub buffer_bytes: u64,
    /// TLS for `https://` URLs (`[tls]`); without it they are refused.
    pub tls: Option<OutboundTls>,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
            pool_size: 0,
            buffer_bytes: 64 * 1024,
            tls: None,
        }
    }
}

/// The API, reached with awc.
pub struct AwcUpstream {
    plain: Clients,
    /// The same over TLS, for `https://` URLs (see [`crate::outbound`]),
    /// to origins that speak HTTP/1.1 only.
    tls: Option<Clients>,
    /// HTTP/2 to the `https://` origins that offer it (see
    /// [`crate::http2`]); set with `tls`.
    http2: Option<Http2>,
    timeout: Duration,
    buffer_bytes: u64,
}

/// A pair of awc clients over one kind of connection.
struct Clients {
    /// Every request whose body is in hand (none, or read whole).
    buffered: awc::Client,
    /// Requests whose body streams as the client sends it: a pool of their
    /// own, so that slow uploaders can only hold connections of other
    /// large uploads, never those of everyone's ordinary requests.
    uploads: awc::Client,
    /// WebSockets: a pool of their own without a limit, since each open
    /// socket holds its connection (and a pool permit) for as long as it
    /// lives, and must not starve ordinary requests.
    websockets: awc::Client,
}

impl Clients {
    fn new(settings: &UpstreamSettings, guarded: &GuardedConnector) -> Self {
        let client = |guarded: GuardedConnector, unlimited: bool| {
            let mut connector = awc::Connector::new()
                .connector(guarded)
                .timeout(settings.connect_timeout);
            if unlimited {
                // awc's "no limit".
                connector = connector.limit(0);
            } else if settings.pool_size > 0 {
                connector = connector.limit(settings.pool_size);
            }
            awc::Client::builder()
                .connector(connector)
                .disable_redirects()
                .no_default_headers()
                // awc's own timeout would also run over the body and cut long
                // downloads; the response-head timeout is applied around send.
                .disable_timeout()
                .finish()
        };
        Self {
            buffered: client(guarded.clone(), false),
            uploads: client(guarded.clone(), false),
            websockets: client(guarded.for_websockets(), true),
        }
    }
}

/// A request's way over HTTP/2: the connection, ready for a new stream,
/// and the time left for the answer head.
struct OverHttp2<'a> {
    http2: &'a Http2,
    authority: &'a str,
    conn: http2::Connection,
    ready: h2::client::SendRequest<Bytes>,
    timeout: Duration,
}

impl OverHttp2<'_> {
    /// Sends the request and waits for the answer head. `flags` tell,
    /// after a failure, whether the request body was at fault.
    async fn send(
        self,
        method: &str,
        url: &str,
        headers: Headers,
        body: http2::Body,
        flags: &BodyFlags,
    ) -> Result<http::Response<h2::RecvStream>, UpstreamError> {
        let sent = http2::send(self.ready, method, url, headers, body);
        match actix_rt::time::timeout(self.timeout, sent).await {
            Err(_) => Err(UpstreamError::Timeout),
            Ok(Ok(response)) => Ok(response),
            Ok(Err(Failure::Body(why))) => Err(body_error(&why, flags)),
            Ok(Err(Failure::Request(e))) => Err(naming(e, url)),
            Ok(Err(Failure::Upstream(e))) => {
                // A reset of this one stream leaves the connection good;
                // anything else ends it.
                if !e.is_reset() {
                    self.http2.forget(self.authority, &self.conn);
                }
                Err(naming(self.conn.failed(&e), url))
            }
        }
    }
}

/// Where awc is sent for one URL: the client pair, the URL as awc gets it,
/// and the `Host` to name when it differs from that URL's.
struct Target<'a> {
    clients: &'a Clients,
    url: Cow<'a, str>,
    host: Option<&'a str>,
}

impl AwcUpstream {
    /// A client for this worker.
    pub fn new(settings: &UpstreamSettings) -> Self {
        Self {
            plain: Clients::new(settings, &GuardedConnector::default()),
            tls: settings
                .tls
                .clone()
                .map(|tls| Clients::new(settings, &GuardedConnector::tls(tls))),
            http2: settings
                .tls
                .clone()
                .map(|tls| Http2::new(tls, settings.connect_timeout)),
            timeout: settings.timeout,
            buffer_bytes: settings.buffer_bytes,
        }
    }

    /// The API side of a WebSocket handshake to `url` (`ws://`, or
    /// `wss://` over the TLS clients), on the WebSockets' own pool; the
    /// relay (`crate::websocket`) adds the planned headers.
    ///
    /// # Errors
    /// A `wss://` URL without TLS settings.
    pub fn websocket(&self, url: &str) -> Result<awc::ws::WebsocketsRequest, UpstreamError> {
        let target = self.target(url)?;
        let mut request = target.clients.websockets.ws(target.url.as_ref());
        if let Some(host) = target.host {
            request = request.set_header(actix_web::http::header::HOST, host);
        }
        Ok(request)
    }

    /// The HTTP/2 side and the authority (`host[:port]` as the URL spells
    /// it) of an `https://` URL; `None` for any other URL, or without TLS
    /// settings (then [`target`](Self::target) refuses it).
    fn http2_origin<'a>(&'a self, url: &'a str) -> Option<(&'a Http2, &'a str)> {
        let rest = url.strip_prefix("https://")?;
        let http2 = self.http2.as_ref()?;
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        Some((http2, &rest[..end]))
    }

    /// Whether `url` goes over HTTP/2 (an `https://` origin that speaks
    /// it, found out first when not known), and the time left for the
    /// answer head: one deadline, whichever way the answer comes.
    ///
    /// # Errors
    /// The origin could not be reached or did not answer the handshakes
    /// in time.
    async fn route<'a>(&'a self, url: &'a str) -> Result<(Duration, Option<OverHttp2<'a>>), UpstreamError> {
        let Some((http2, authority)) = self.http2_origin(url) else {
            return Ok((self.timeout, None));
        };
        // Boxed: only https requests pay for the size of this state (the
        // first connection, the wait for a stream); a plain request's
        // future stays as small as before HTTP/2.
        Box::pin(async move {
            let started = Instant::now();
            let route = actix_rt::time::timeout(self.timeout, http2.route(authority))
                .await
                .map_err(|_| UpstreamError::Timeout)?
                .map_err(|e| naming(e, url))?;
            let left = self.timeout.saturating_sub(started.elapsed());
            Ok(match route {
                Route::Http1 => (left, None),
                Route::Http2(conn, ready) => (
                    left,
                    Some(OverHttp2 {
                        http2,
                        authority,
                        conn,
                        ready,
                        timeout: left,
                    }),
                ),
            })
        })
        .await
    }

    /// After an HTTP/1.1 exchange with an https origin: one the API could
    /// not be reached for has the origin asked again what it speaks.
    fn after_http1<T>(&self, url: &str, response: &Result<T, UpstreamError>) {
        if let (Err(UpstreamError::Unavailable(_)), Some((http2, authority))) =
            (response, self.http2_origin(url))
        {
            http2.forget_http1(authority);
        }
    }

    /// The clients for `url`. An `https://` (`wss://`) URL goes to the TLS
    /// clients as `http://host:port` (`ws://`), with the port spelt out
    /// (443 by default) and its own `Host`: their connector does the
    /// handshake itself.
    fn target<'a>(&'a self, url: &'a str) -> Result<Target<'a>, UpstreamError> {
        let (plain_scheme, rest) = match (url.strip_prefix("https://"), url.strip_prefix("wss://")) {
            (Some(rest), _) => ("http", rest),
            (None, Some(rest)) => ("ws", rest),
            (None, None) => {
                return Ok(Target {
                    clients: &self.plain,
                    url: Cow::Borrowed(url),
                    host: None,
                })
            }
        };
        let Some(clients) = &self.tls else {
            return Err(UpstreamError::Unavailable(format!(
                "{}: https without TLS settings",
                origin_of(url)
            )));
        };
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        // A port follows the last colon, unless that colon is inside an
        // IPv6 literal's brackets.
        let has_port = authority
            .rfind(':')
            .is_some_and(|colon| !authority[colon..].contains(']'));
        let port = if has_port { "" } else { ":443" };
        Ok(Target {
            clients,
            url: Cow::Owned(format!("{plain_scheme}://{authority}{port}{path}")),
            host: Some(authority),
        })
    }
}

impl Upstream for AwcUpstream {
    type RequestBody = RequestBody;
    type ResponseBody = ResponseBody;

    async fn send(
        &self,
        request: UpstreamRequest<RequestBody>,
    ) -> Result<UpstreamResponse<ResponseBody>, UpstreamError> {
        let UpstreamRequest {
            method,
            url,
            headers,
            body_size,
            mut body,
        } = request;
        let flags = body.flags();
        // A body that fits the buffer is read before any connection is
        // taken: however slowly it comes, it holds none.
        let in_hand = match body_size {
            BodySize::None => Some(None),
            BodySize::Sized(n) if n > self.buffer_bytes => None,
            BodySize::Sized(_) | BodySize::Stream => body
                .read_up_to(self.buffer_bytes)
                .await
                .map_err(|e| body_error(&e, &flags))?
                .map(Some),
        };
        let target = self.target(&url)?;
        let (head_timeout, h2) = self.route(&url).await?;
        if let Some(h2) = h2 {
            let body = match (in_hand, body_size) {
                (Some(None), _) => http2::Body::None,
                (Some(Some(bytes)), _) => http2::Body::Bytes(bytes),
                (None, BodySize::Sized(n)) => http2::Body::Stream(body, Some(n)),
                (None, _) => http2::Body::Stream(body, None),
            };
            // Boxed, as `route` is: an https request's HTTP/2 state stays
            // out of every plain request's future.
            let response = Box::pin(h2.send(method.as_str(), &url, headers, body, &flags)).await?;
            return Ok(convert_h2(response, &method));
        }
        let client = if in_hand.is_some() {
            &target.clients.buffered
        } else {
            &target.clients.uploads
        };
        let outgoing = build(client, &method, &target, headers)?;
        let send = match (in_hand, body_size) {
            // No body at all: no `Content-Length: 0` either.
            (Some(None), _) => outgoing.send_body(actix_web::body::None::new()),
            (Some(Some(bytes)), _) => outgoing.send_body(bytes),
            (None, BodySize::Sized(n)) => outgoing.send_body(SizedStream::new(n, body)),
            (None, _) => outgoing.send_stream(body),
        };
        let response = response_head(head_timeout, send, &flags).await;
        self.after_http1(&url, &response);
        Ok(convert(response.map_err(|e| naming(e, &url))?, &method))
    }

    /// The body in hand becomes a payload of its own, so the request takes
    /// the one path every request takes (read into the buffer when it fits).
    async fn send_bytes(
        &self,
        request: UpstreamRequest<Vec<u8>>,
    ) -> Result<UpstreamResponse<ResponseBody>, UpstreamError> {
        let UpstreamRequest {
            method,
            url,
            headers,
            body_size,
            body,
        } = request;
        // All there already: the pause limit can never come into play.
        let body = RequestBody::new(actix_web::dev::Payload::from(body), None, Duration::from_secs(1));
        self.send(UpstreamRequest {
            method,
            url,
            headers,
            body_size,
            body,
        })
        .await
    }

    /// A cheap reachability check: any HTTP answer from the API counts.
    async fn probe(&self, url: &str) -> Result<u16, UpstreamError> {
        let target = self.target(url)?;
        let (head_timeout, h2) = self.route(url).await?;
        if let Some(h2) = h2 {
            let response = h2
                .send(
                    "GET",
                    url,
                    Headers::new(),
                    http2::Body::None,
                    &BodyFlags::default(),
                )
                .await?;
            return Ok(response.status().as_u16());
        }
        // No body and so no `Content-Length: 0` (awc's `send()` would add
        // one), as for every bodiless request.
        let mut request = target.clients.buffered.get(target.url.as_ref());
        if let Some(host) = target.host {
            request = request.insert_header((actix_web::http::header::HOST, host));
        }
        let request = request.send_body(actix_web::body::None::new());
        let response = response_head(head_timeout, request, &BodyFlags::default()).await;
        self.after_http1(url, &response);
        Ok(response.map_err(|e| naming(e, url))?.status().as_u16())
    }

    fn read_body(
        &self,
        body: ResponseBody,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<u8>, BodyReadError>> {
        let timeout = self.timeout;
        async move {
            match actix_rt::time::timeout(timeout, collect(body, limit)).await {
                Ok(Ok(bytes)) => Ok(bytes),
                Ok(Err(PayloadError::Overflow)) => Err(BodyReadError::TooLarge),
                Ok(Err(PayloadError::Incomplete(Some(e)))) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    Err(BodyReadError::Incomplete)
                }
                Ok(Err(e)) => Err(BodyReadError::Failed(e.to_string())),
                Err(_) => Err(BodyReadError::Timeout),
            }
        }
    }
}

/// The whole body, refused past `limit` bytes (before reading when the
/// API announces a larger `Content-Length`).
async fn collect(mut body: ResponseBody, limit: usize) -> Result<Vec<u8>, PayloadError> {
    if body
        .announced_length()
        .is_some_and(|length| length > limit as u64)
    {
        return Err(PayloadError::Overflow);
    }
    let mut collected = Vec::new();
    while let Some(chunk) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_next(cx)).await {
        let chunk = chunk?;
        if collected.len() + chunk.len() > limit {
            return Err(PayloadError::Overflow);
        }
        collected.extend_from_slice(&chunk);
    }
    Ok(collected)
}

/// Waits at most `timeout` for the API's response head. `body` tells,
/// after a failure, whether the request body was at fault.
async fn response_head(
    timeout: Duration,
    send: awc::SendClientRequest,
    body: &BodyFlags,
) -> Result<awc::ClientResponse, UpstreamError> {
    match actix_rt::time::timeout(timeout, send).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(SendRequestError::Body(e))) => Err(body_error(&e, body)),
        Ok(Err(e)) => Err(map_send_error(e)),
        Err(_) => Err(UpstreamError::Timeout),
    }
}

/// Why the client's request body failed: over the limit, stalled, or
/// broken (the client went away or sent a malformed body).
fn body_error(error: &dyn std::fmt::Display, body: &BodyFlags) -> UpstreamError {
    if body.exceeded() {
        UpstreamError::RequestBodyTooLarge
    } else if body.timed_out() {
        UpstreamError::RequestBodyTimeout
    } else {
        UpstreamError::RequestBody(error.to_string())
    }
}

/// An unreachable API's error names where it was looked for (the origin
/// only: a path or query may carry what the client sent), so that the log
/// line of a 502 says which address failed.
fn naming(error: UpstreamError, url: &str) -> UpstreamError {
    match error {
        UpstreamError::Unavailable(detail) => {
            UpstreamError::Unavailable(format!("{}: {detail}", origin_of(url)))
        }
        other => other,
    }
}

/// `scheme://host[:port]` of an absolute URL.
fn origin_of(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    url[after_scheme..]
        .find('/')
        .map_or(url, |end| &url[..after_scheme + end])
}

fn build(
    client: &awc::Client,
    method: &tokenjar_domain::Method,
    target: &Target<'_>,
    headers: Headers,
) -> Result<awc::ClientRequest, UpstreamError> {
    let method = Method::from_bytes(method.as_str().as_bytes())
        .map_err(|_| UpstreamError::RequestBody("the method is not a valid token".into()))?;
    // awc decompresses nothing (built without its compression features), so
    // bodies pass through as the API encoded them; when the request has no
    // `Accept-Encoding`, awc adds `identity`, which the login relies on.
    let mut outgoing = client.request(method, target.url.as_ref());
    let map = outgoing.headers_mut();
    if let Some(host) = target.host {
        let host = actix_web::http::header::HeaderValue::from_str(host)
            .map_err(|_| UpstreamError::Unavailable("the API's host name is not a valid header".into()))?;
        map.insert(actix_web::http::header::HOST, host);
    }
    for (name, value) in headers::to_actix(headers) {
        map.append(name, value);
    }
    Ok(outgoing)
}

fn convert(
    response: awc::ClientResponse,
    method: &tokenjar_domain::Method,
) -> UpstreamResponse<ResponseBody> {
    let status = response.status().as_u16();
    let headers = headers::to_domain(response.headers());
    let body_size = BodySize::of_response(method, status, &headers);
    UpstreamResponse {
        status,
        headers,
        body_size,
        body: ResponseBody::Http1(response),
    }
}

fn convert_h2(
    response: http::Response<h2::RecvStream>,
    method: &tokenjar_domain::Method,
) -> UpstreamResponse<ResponseBody> {
    let (head, recv) = response.into_parts();
    let status = head.status.as_u16();
    let headers = headers::pairs_to_domain(head.headers.len(), head.headers.iter());
    let body_size = BodySize::of_response(method, status, &headers);
    let length = match body_size {
        BodySize::Sized(n) => Some(n),
        BodySize::None | BodySize::Stream => None,
    };
    UpstreamResponse {
        status,
        headers,
        body_size,
        body: ResponseBody::Http2(Http2Body::new(recv, length)),
    }
}

fn map_send_error(error: SendRequestError) -> UpstreamError {
    // A TLS alert after the handshake (under TLS 1.3, the server refusing
    // tokenjar's client certificate, or missing one) comes with the first
    // read or write of the request.
    let after_handshake = match &error {
        SendRequestError::Send(io) | SendRequestError::Response(ParseError::Io(io)) => {
            outbound::rustls_error(io)
        }
        _ => None,
    };
    if let Some(tls) = after_handshake {
        return UpstreamError::Unavailable(format!(
            "TLS with the API failed: {}",
            outbound::explain(tls, "the API")
        ));
    }
    match error {
        SendRequestError::Timeout | SendRequestError::Connect(ConnectError::Timeout) => {
            UpstreamError::Timeout
        }
        other => UpstreamError::Unavailable(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_errors_name_the_origin_only() {
        let cases = [
            ("http://127.0.0.1:9/v1/users?token=x", "http://127.0.0.1:9"),
            ("http://api.internal", "http://api.internal"),
            ("http://[::1]:8080/", "http://[::1]:8080"),
        ];
        for (url, origin) in cases {
            assert_eq!(origin_of(url), origin);
            assert_eq!(
                naming(UpstreamError::Unavailable("refused".into()), url),
                UpstreamError::Unavailable(format!("{origin}: refused"))
            );
        }
        assert_eq!(
            naming(UpstreamError::Timeout, "http://a/b"),
            UpstreamError::Timeout
        );
    }

    #[test]
    fn https_urls_go_to_the_tls_clients_as_http_with_the_port_spelt_out() {
        let tls = OutboundTls::load(&crate::OutboundTlsFiles::default()).unwrap();
        let upstream = AwcUpstream::new(&UpstreamSettings {
            tls: Some(tls),
            ..UpstreamSettings::default()
        });
        let cases = [
            (
                "https://api.example/v1/x?q=1",
                "http://api.example:443/v1/x?q=1",
                "api.example",
            ),
            (
                "https://api.example:8443/",
                "http://api.example:8443/",
                "api.example:8443",
            ),
            ("https://[::1]/x", "http://[::1]:443/x", "[::1]"),
            ("https://[::1]:9443?q", "http://[::1]:9443?q", "[::1]:9443"),
            ("wss://api.example/ws", "ws://api.example:443/ws", "api.example"),
        ];
        for (url, awc_url, host) in cases {
            let target = upstream.target(url).unwrap();
            assert!(
                std::ptr::eq(target.clients, upstream.tls.as_ref().unwrap()),
                "{url}"
            );
            assert_eq!(target.url, awc_url);
            assert_eq!(target.host, Some(host), "{url}");
        }
        let plain = upstream.target("http://api.example/v1").unwrap();
        assert!(std::ptr::eq(plain.clients, &upstream.plain));
        assert_eq!(plain.url, "http://api.example/v1");
        assert_eq!(plain.host, None);
    }

    #[test]
    fn https_without_tls_settings_is_unavailable_naming_the_origin() {
        let upstream = AwcUpstream::new(&UpstreamSettings::default());
        let Err(UpstreamError::Unavailable(why)) = upstream.target("https://api.example/v1") else {
            panic!("https without TLS settings must be refused");
        };
        assert!(why.starts_with("https://api.example:"), "{why}");
    }
}
