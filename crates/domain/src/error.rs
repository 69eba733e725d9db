//! The errors tokenjar itself answers with, and their SPEC §8 shape:
//! `{"error": "<code>", "message": "<human sentence>"}`.

use serde_json::json;

use crate::cookies::CookieError;
use crate::csrf::{CsrfRefusal, OriginRefusal};
use crate::exchange::Reply;
use crate::login::LoginError;
use crate::method::Method;
use crate::ports::{BodyReadError, StoreError, UpstreamError};
use crate::routes::PathError;
use crate::token::TokenError;

/// Everything that ends a request with an error tokenjar made.
///
/// `Display` gives the detail for the log line (never a token or key);
/// [`message`](Self::message) gives the sentence for the client, which
/// names whose fault it was without internals.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlowError {
    /// The request path is malformed or unsafe.
    #[error("refused path: {0}")]
    BadPath(#[from] PathError),
    /// Some other part of the request is malformed.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// Refused as a possible cross-site request forgery.
    #[error("csrf: {0}")]
    Csrf(#[from] CsrfRefusal),
    /// A WebSocket handshake without an allowed `Origin`.
    #[error("websocket origin: {0}")]
    Origin(#[from] OriginRefusal),
    /// Neither an API route nor the frontend's.
    #[error("no route")]
    NotFound,
    /// The route exists but not for this method.
    #[error("method not allowed (allowed: {allow})")]
    MethodNotAllowed {
        /// The `Allow` header value.
        allow: &'static str,
    },
    /// The request body is over the configured limit.
    #[error("request body over the configured limit")]
    PayloadTooLarge,
    /// The exchange with the API failed.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The login response could not be used.
    #[error("bad login response: {0}")]
    BadLogin(#[from] LoginError),
    /// The login response body could not be read.
    #[error("login response body: {0}")]
    LoginBody(#[from] BodyReadError),
    /// The token cannot be stored in the cookie.
    #[error("cannot issue the cookie: {0}")]
    Cookie(#[from] CookieError),
    /// The API refused the session's refresh token (SPEC §14).
    #[error("the refresh token was refused: the session is over")]
    SessionExpired,
    /// The API's 2xx answer to a refresh could not be used.
    #[error("bad refresh response: {0}")]
    BadRefresh(LoginError),
    /// The OpenID Provider could not be reached or answered wrongly.
    #[error("the OpenID provider is unavailable: {0}")]
    ProviderUnavailable(String),
    /// The session store (SPEC §17) could not be asked.
    #[error(transparent)]
    SessionStore(#[from] StoreError),
}

impl FlowError {
    /// `Ok` for GET and HEAD, else 405 allowing those two: the rule of every
    /// read-only route (session, the operator endpoints, the web app's files).
    ///
    /// # Errors
    /// [`FlowError::MethodNotAllowed`] for any other method.
    pub fn read_only(method: &Method) -> Result<(), Self> {
        if method.is_read_only() {
            Ok(())
        } else {
            Err(Self::MethodNotAllowed { allow: "GET, HEAD" })
        }
    }

    /// HTTP status.
    pub fn status(&self) -> u16 {
        match self.kind() {
            ErrorKind::BadRequest => 400,
            ErrorKind::SessionExpired => 401,
            ErrorKind::Csrf | ErrorKind::Origin => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::MethodNotAllowed => 405,
            ErrorKind::RequestTimeout => 408,
            ErrorKind::PayloadTooLarge => 413,
            ErrorKind::UpstreamUnavailable
            | ErrorKind::BadLoginResponse
            | ErrorKind::TokenTooLarge
            | ErrorKind::ProviderUnavailable => 502,
            ErrorKind::SessionStoreUnavailable => 503,
            ErrorKind::UpstreamTimeout => 504,
        }
    }

    /// The SPEC §8 `error` code.
    pub fn code(&self) -> &'static str {
        match self.kind() {
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::SessionExpired => "session_expired",
            ErrorKind::Csrf => "csrf",
            ErrorKind::Origin => "origin",
            ErrorKind::NotFound => "not_found",
            ErrorKind::MethodNotAllowed => "method_not_allowed",
            ErrorKind::RequestTimeout => "request_timeout",
            ErrorKind::PayloadTooLarge => "payload_too_large",
            ErrorKind::UpstreamUnavailable => "upstream_unavailable",
            ErrorKind::BadLoginResponse => "bad_login_response",
            ErrorKind::TokenTooLarge => "token_too_large",
            ErrorKind::ProviderUnavailable => "provider_unavailable",
            ErrorKind::SessionStoreUnavailable => "session_store_unavailable",
            ErrorKind::UpstreamTimeout => "upstream_timeout",
        }
    }

    /// The human sentence sent to the client.
    pub fn message(&self) -> &'static str {
        match self {
            Self::BadPath(_) => "The request path is malformed or could escape the API's base path.",
            Self::SessionExpired => "The session has ended; please log in again.",
            Self::ProviderUnavailable(_) => "The identity provider could not be reached or answered wrongly.",
            Self::SessionStore(_) => "The session store could not be reached; please try again shortly.",
            Self::BadRefresh(_) => "The API's answer to a token refresh could not be used.",
            Self::BadRequest(what) => what,
            Self::Csrf(_) => "The request was refused as a possible cross-site request forgery.",
            Self::Origin(_) => "The WebSocket handshake does not come from an allowed origin.",
            Self::NotFound => "There is nothing at this path.",
            Self::MethodNotAllowed { .. } => "This route does not accept this method.",
            Self::PayloadTooLarge | Self::Upstream(UpstreamError::RequestBodyTooLarge) => {
                "The request body is larger than this server accepts."
            }
            Self::Upstream(UpstreamError::RequestBody(_)) => "The request body could not be read.",
            Self::Upstream(UpstreamError::RequestBodyTimeout) => {
                "The request body stopped arriving before it was complete."
            }
            Self::Upstream(UpstreamError::Unavailable(_)) | Self::LoginBody(BodyReadError::Failed(_)) => {
                "The API could not be reached or closed the connection."
            }
            Self::Upstream(UpstreamError::Timeout) | Self::LoginBody(BodyReadError::Timeout) => {
                "The API did not answer in time."
            }
            Self::Cookie(CookieError::TooLarge { .. } | CookieError::Token(TokenError::TooLong))
            | Self::BadLogin(LoginError::Token(TokenError::TooLong)) => {
                "The token is too large to keep in cookies; raise cookie.max_chunks, \
                 or keep sessions on the server (session.store)."
            }
            Self::BadLogin(_)
            | Self::LoginBody(BodyReadError::TooLarge | BodyReadError::Incomplete)
            | Self::Cookie(_) => "The API's login response could not be used.",
        }
    }

    /// The kind of error, one per SPEC §8 code.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::BadPath(_) | Self::BadRequest(_) | Self::Upstream(UpstreamError::RequestBody(_)) => {
                ErrorKind::BadRequest
            }
            Self::Csrf(_) => ErrorKind::Csrf,
            Self::SessionExpired => ErrorKind::SessionExpired,
            Self::ProviderUnavailable(_) => ErrorKind::ProviderUnavailable,
            Self::SessionStore(_) => ErrorKind::SessionStoreUnavailable,
            Self::BadRefresh(_) => ErrorKind::UpstreamUnavailable,
            Self::Origin(_) => ErrorKind::Origin,
            Self::NotFound => ErrorKind::NotFound,
            Self::MethodNotAllowed { .. } => ErrorKind::MethodNotAllowed,
            Self::Upstream(UpstreamError::RequestBodyTimeout) => ErrorKind::RequestTimeout,
            Self::PayloadTooLarge | Self::Upstream(UpstreamError::RequestBodyTooLarge) => {
                ErrorKind::PayloadTooLarge
            }
            Self::Upstream(UpstreamError::Unavailable(_)) | Self::LoginBody(BodyReadError::Failed(_)) => {
                ErrorKind::UpstreamUnavailable
            }
            Self::Upstream(UpstreamError::Timeout) | Self::LoginBody(BodyReadError::Timeout) => {
                ErrorKind::UpstreamTimeout
            }
            Self::Cookie(CookieError::TooLarge { .. } | CookieError::Token(TokenError::TooLong))
            | Self::BadLogin(LoginError::Token(TokenError::TooLong)) => ErrorKind::TokenTooLarge,
            Self::BadLogin(_)
            | Self::LoginBody(BodyReadError::TooLarge | BodyReadError::Incomplete)
            | Self::Cookie(_) => ErrorKind::BadLoginResponse,
        }
    }

    /// The JSON body of SPEC §8.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            code: self.code(),
            message: self.message(),
        }
    }

    /// The whole reply: status, JSON body, and `Allow` for a 405.
    pub fn reply<B>(&self) -> Reply<B> {
        let mut reply = Reply::json(self.status(), &self.body().to_json());
        if let Self::MethodNotAllowed { allow } = self {
            reply.headers.append("allow", *allow);
        }
        reply
    }
}

/// The fixed `{error, message}` pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorBody {
    /// Machine-readable code.
    pub code: &'static str,
    /// Human sentence.
    pub message: &'static str,
}

impl ErrorBody {
    /// As JSON.
    pub fn to_json(self) -> serde_json::Value {
        json!({ "error": self.code, "message": self.message })
    }
}

/// The kinds of error, one per SPEC §8 code: what metrics and logs group
/// errors by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// 400 `bad_request`
    BadRequest,
    /// 401 `session_expired`
    SessionExpired,
    /// 403 `csrf`
    Csrf,
    /// 403 `origin`
    Origin,
    /// 404 `not_found`
    NotFound,
    /// 405 `method_not_allowed`
    MethodNotAllowed,
    /// 408 `request_timeout`
    RequestTimeout,
    /// 413 `payload_too_large`
    PayloadTooLarge,
    /// 502 `upstream_unavailable`
    UpstreamUnavailable,
    /// 502 `bad_login_response`
    BadLoginResponse,
    /// 502 `token_too_large`
    TokenTooLarge,
    /// 502 `provider_unavailable`
    ProviderUnavailable,
    /// 503 `session_store_unavailable`
    SessionStoreUnavailable,
    /// 504 `upstream_timeout`
    UpstreamTimeout,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::ReplyBody;

    #[test]
    fn statuses_and_codes_follow_the_spec() {
        let cases: Vec<(FlowError, u16, &str)> = vec![
            (PathError::DotSegment.into(), 400, "bad_request"),
            (
                FlowError::BadRequest("A header is malformed."),
                400,
                "bad_request",
            ),
            (
                UpstreamError::RequestBody("reset".into()).into(),
                400,
                "bad_request",
            ),
            (CsrfRefusal::MissingHeader.into(), 403, "csrf"),
            (OriginRefusal::Foreign.into(), 403, "origin"),
            (OriginRefusal::Missing.into(), 403, "origin"),
            (FlowError::NotFound, 404, "not_found"),
            (
                FlowError::MethodNotAllowed { allow: "POST" },
                405,
                "method_not_allowed",
            ),
            (FlowError::PayloadTooLarge, 413, "payload_too_large"),
            (UpstreamError::RequestBodyTimeout.into(), 408, "request_timeout"),
            (
                UpstreamError::RequestBodyTooLarge.into(),
                413,
                "payload_too_large",
            ),
            (
                UpstreamError::Unavailable("refused".into()).into(),
                502,
                "upstream_unavailable",
            ),
            (
                BodyReadError::Failed("reset".into()).into(),
                502,
                "upstream_unavailable",
            ),
            (LoginError::NotJson.into(), 502, "bad_login_response"),
            (
                StoreError::Unavailable("refused".into()).into(),
                503,
                "session_store_unavailable",
            ),
            (BodyReadError::TooLarge.into(), 502, "bad_login_response"),
            (BodyReadError::Incomplete.into(), 502, "bad_login_response"),
            (CookieError::NoKey.into(), 502, "bad_login_response"),
            (
                LoginError::Token(TokenError::TooLong).into(),
                502,
                "token_too_large",
            ),
            (
                CookieError::TooLarge { max_chunks: 4 }.into(),
                502,
                "token_too_large",
            ),
            (UpstreamError::Timeout.into(), 504, "upstream_timeout"),
            (FlowError::SessionExpired, 401, "session_expired"),
            (
                FlowError::BadRefresh(LoginError::NoToken),
                502,
                "upstream_unavailable",
            ),
            (BodyReadError::Timeout.into(), 504, "upstream_timeout"),
        ];
        for (error, status, code) in cases {
            assert_eq!((error.status(), error.code()), (status, code), "{error:?}");
            let reply: Reply<()> = error.reply();
            assert_eq!(reply.status, status);
            let ReplyBody::Full(body) = reply.body else {
                panic!("error replies are full bodies");
            };
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(json["error"], code);
            assert!(json["message"].as_str().is_some_and(|m| m.ends_with('.')));
        }
    }

    #[test]
    fn method_not_allowed_names_the_allowed_methods() {
        let reply: Reply<()> = FlowError::MethodNotAllowed { allow: "POST" }.reply();
        assert_eq!(reply.headers.get("allow"), Some(&b"POST"[..]));
    }
}
