//! The messages that cross the ports: the browser's request as the server
//! adapter hands it over, the request sent through the [`crate::Upstream`]
//! port, the API's response, and the reply that goes back. Plain data; the
//! rules that fill them live in the gateway and its rule modules.

use std::net::IpAddr;

use crate::headers::Headers;
use crate::method::Method;

/// How a message body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodySize {
    /// No body at all.
    None,
    /// A body of exactly this many bytes (`Content-Length`).
    Sized(u64),
    /// A body of unknown length, streamed (chunked).
    Stream,
}

impl BodySize {
    /// The body shape a message's headers announce. `Transfer-Encoding`
    /// wins over `Content-Length` (RFC 9112 §6.3); the HTTP server already
    /// refused messages where they conflict.
    pub fn from_headers(headers: &Headers) -> Self {
        if headers.contains("transfer-encoding") {
            return Self::Stream;
        }
        match headers
            .get_str("content-length")
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            Some(n) => Self::Sized(n),
            None => Self::None,
        }
    }

    /// The body shape of the API's response to `method` with `status`
    /// (RFC 9112 §6.3). A 1xx, 204 or 304 answer has no body, whatever its
    /// head announces: `None`, since a length taken from it would have the
    /// client wait for bytes that never come. An answer to HEAD keeps the
    /// length it announces (the client is told it) and has no body either;
    /// any other answer with neither length nor chunking runs until the
    /// API closes, so it streams.
    pub fn of_response(method: &Method, status: u16, headers: &Headers) -> Self {
        if (100..200).contains(&status) || status == 204 || status == 304 {
            return Self::None;
        }
        match Self::from_headers(headers) {
            Self::None if *method != Method::Head => Self::Stream,
            size => size,
        }
    }
}

/// A request from the browser, as the server adapter hands it over.
#[derive(Debug)]
pub struct ClientRequest<B> {
    /// Method, as sent (`GET`, `POST`, ...).
    pub method: Method,
    /// Path, percent-encoded as received.
    pub path: String,
    /// Query string without the `?`, as received.
    pub query: Option<String>,
    /// Headers as received.
    pub headers: Headers,
    /// The client's address, when known.
    pub peer: Option<IpAddr>,
    /// Scheme of the connection tokenjar accepted (`http` unless TLS).
    pub scheme: &'static str,
    /// The body stream.
    pub body: B,
}

impl<B> ClientRequest<B> {
    /// The same request with `body` in place of its own: an adapter reads
    /// the head first (a WebSocket handshake is decided on it) and gives
    /// the body only to a request that goes on as an ordinary call.
    pub fn with_body<T>(self, body: T) -> ClientRequest<T> {
        ClientRequest {
            method: self.method,
            path: self.path,
            query: self.query,
            headers: self.headers,
            peer: self.peer,
            scheme: self.scheme,
            body,
        }
    }
}

/// A request to the API, ready to send.
#[derive(Debug)]
pub struct UpstreamRequest<B> {
    /// Method, as the client sent it.
    pub method: Method,
    /// Absolute URL.
    pub url: String,
    /// Headers to send (hop-by-hop and `Cookie` already gone, token added).
    /// `Content-Length` is not among them: [`body_size`](Self::body_size)
    /// says how the body is delimited.
    pub headers: Headers,
    /// How the body is delimited.
    pub body_size: BodySize,
    /// The body stream.
    pub body: B,
}

/// The API's answer, as the upstream adapter hands it over.
#[derive(Debug)]
pub struct UpstreamResponse<B> {
    /// Status code.
    pub status: u16,
    /// Headers as received.
    pub headers: Headers,
    /// How the body is delimited.
    pub body_size: BodySize,
    /// The body stream.
    pub body: B,
}

/// What goes back to the browser.
#[derive(Debug)]
pub struct Reply<B> {
    /// Status code.
    pub status: u16,
    /// Headers (no hop-by-hop, no `Content-Length`: the body decides).
    pub headers: Headers,
    /// The body.
    pub body: ReplyBody<B>,
}

/// A reply body: one tokenjar made, or the API's, streamed through.
#[derive(Debug)]
pub enum ReplyBody<B> {
    /// A body tokenjar made (JSON, usually).
    Full(Vec<u8>),
    /// The API's body, passed through as it arrives.
    Stream {
        /// The stream.
        body: B,
        /// How it is delimited.
        size: BodySize,
    },
}

impl<B> Reply<B> {
    /// A JSON reply.
    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        let mut headers = Headers::with_capacity(2);
        headers.append("content-type", "application/json");
        Self {
            status,
            headers,
            body: ReplyBody::Full(value.to_string().into_bytes()),
        }
    }
}

/// Why `upstream.url` cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UrlError(String);

/// The API's base URL, split into what every request shares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamBase {
    origin: String,
    base_path: String,
}

impl UpstreamBase {
    /// Parses `upstream.url`: `http://host[:port][/base/path]`, no query,
    /// fragment or credentials.
    ///
    /// # Errors
    /// [`UrlError`] saying what is wrong.
    pub fn parse(text: &str) -> Result<Self, UrlError> {
        let url = url::Url::parse(text).map_err(|e| UrlError(format!("{text:?} is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(UrlError(format!("{text:?} must be an http:// or https:// URL")));
        }
        let host = url
            .host_str()
            .ok_or_else(|| UrlError(format!("{text:?} has no host")))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlError("credentials do not belong in upstream.url".into()));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(UrlError(format!("{text:?} must not have a query or fragment")));
        }
        let origin = match url.port() {
            Some(port) => format!("{}://{host}:{port}", url.scheme()),
            None => format!("{}://{host}", url.scheme()),
        };
        Ok(Self {
            origin,
            base_path: url.path().trim_end_matches('/').to_owned(),
        })
    }

    /// `scheme://host[:port]`.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &str {
        self.origin.split_once("://").map_or("", |(scheme, _)| scheme)
    }

    /// The URL of a WebSocket handshake for a path below the prefix: the
    /// same as [`url`](Self::url)'s, with `ws://` for `http://` and
    /// `wss://` for `https://`.
    pub fn websocket_url(&self, rest: &str, query: Option<&str>) -> String {
        let url = self.url(rest, query);
        match url.split_once("://") {
            Some(("https", after)) => format!("wss://{after}"),
            Some(("http", after)) => format!("ws://{after}"),
            _ => url,
        }
    }

    /// The URL for a path below the prefix (`""` or starting with `/`).
    pub fn url(&self, rest: &str, query: Option<&str>) -> String {
        let mut url = String::with_capacity(
            self.origin.len() + self.base_path.len() + rest.len() + query.map_or(0, |q| q.len() + 1) + 1,
        );
        url.push_str(&self.origin);
        url.push_str(&self.base_path);
        url.push_str(rest);
        if self.base_path.is_empty() && rest.is_empty() {
            url.push('/');
        }
        if let Some(q) = query {
            url.push('?');
            url.push_str(q);
        }
        url
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Headers {
        pairs.iter().map(|(n, v)| (*n, *v)).collect()
    }

    #[test]
    fn a_response_without_length_streams_unless_it_has_no_body() {
        let length = h(&[("content-length", "5")]);
        let neither = h(&[]);
        assert_eq!(
            BodySize::of_response(&Method::Get, 200, &length),
            BodySize::Sized(5)
        );
        assert_eq!(
            BodySize::of_response(&Method::Get, 200, &neither),
            BodySize::Stream
        );
        for (method, status) in [("HEAD", 200), ("GET", 101), ("GET", 204), ("GET", 304)] {
            assert_eq!(
                BodySize::of_response(&method.into(), status, &neither),
                BodySize::None
            );
        }
        assert_eq!(
            BodySize::of_response(&Method::Head, 200, &length),
            BodySize::Sized(5)
        );
        // A length announced with a status that has no body is not one.
        for status in [101, 204, 304] {
            assert_eq!(
                BodySize::of_response(&Method::Get, status, &length),
                BodySize::None
            );
        }
    }

    #[test]
    fn upstream_url_joins_base_path_rest_and_query() {
        let cases = [
            (
                "http://api:9000/v1",
                "/users/7",
                Some("x=1"),
                "http://api:9000/v1/users/7?x=1",
            ),
            (
                "http://api:9000/v1/",
                "/users/7",
                None,
                "http://api:9000/v1/users/7",
            ),
            ("http://api:9000/v1", "", None, "http://api:9000/v1"),
            ("http://api:9000/v1", "/", None, "http://api:9000/v1/"),
            ("http://api:9000", "", None, "http://api:9000/"),
            ("http://api:9000/", "", Some("a=b&c"), "http://api:9000/?a=b&c"),
            ("http://api", "/x", Some(""), "http://api/x?"),
            ("http://127.0.0.1:80/a/b", "/c", None, "http://127.0.0.1/a/b/c"),
        ];
        for (base, rest, query, expected) in cases {
            let base = UpstreamBase::parse(base).unwrap();
            assert_eq!(base.url(rest, query), expected);
        }
    }

    #[test]
    fn websocket_urls_follow_the_apis_scheme() {
        let cases = [
            (
                "http://api:9000/v1",
                "/chat",
                Some("room=1"),
                "ws://api:9000/v1/chat?room=1",
            ),
            (
                "https://api.example/v1",
                "/chat",
                None,
                "wss://api.example/v1/chat",
            ),
            ("http://api", "", None, "ws://api/"),
        ];
        for (base, rest, query, expected) in cases {
            let base = UpstreamBase::parse(base).unwrap();
            assert_eq!(base.websocket_url(rest, query), expected);
        }
    }

    #[test]
    fn bad_upstream_urls_are_refused() {
        for bad in [
            "api:9000",
            "ftp://api/x",
            "http://user:pw@api/",
            "http://api/?q=1",
            "http://api/#f",
            "",
            "http://",
        ] {
            assert!(UpstreamBase::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn body_size_from_headers() {
        assert_eq!(BodySize::from_headers(&h(&[])), BodySize::None);
        assert_eq!(
            BodySize::from_headers(&h(&[("content-length", "0")])),
            BodySize::Sized(0)
        );
        assert_eq!(
            BodySize::from_headers(&h(&[("content-length", " 42 ")])),
            BodySize::Sized(42)
        );
        assert_eq!(
            BodySize::from_headers(&h(&[("transfer-encoding", "chunked"), ("content-length", "3")])),
            BodySize::Stream
        );
        assert_eq!(
            BodySize::from_headers(&h(&[("content-length", "x")])),
            BodySize::None
        );
    }
}
