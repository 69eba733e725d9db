//! The errors tokenjar itself answers with, and their SPEC §8 shape:
//! `{"error": "<code>", "message": "<human sentence>"}`.

use serde_json::json;

use crate::cookies::CookieError;
use crate::csrf::CsrfRefusal;
use crate::login::LoginError;
use crate::path::PathError;
use crate::plan::Reply;
use crate::ports::{BodyReadError, UpstreamError};

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
}

impl FlowError {
    /// `Ok` for GET and HEAD, else 405 allowing those two: the rule of every
    /// read-only route (session, the operator endpoints, the web app's files).
    ///
    /// # Errors
    /// [`FlowError::MethodNotAllowed`] for any other method.
    pub fn read_only(method: &str) -> Result<(), Self> {
        if matches!(method, "GET" | "HEAD") {
            Ok(())
        } else {
            Err(Self::MethodNotAllowed { allow: "GET, HEAD" })
        }
    }

    /// HTTP status.
    pub fn status(&self) -> u16 {
        match self.kind() {
            Kind::BadRequest => 400,
            Kind::Csrf => 403,
            Kind::NotFound => 404,
            Kind::MethodNotAllowed => 405,
            Kind::RequestTimeout => 408,
            Kind::PayloadTooLarge => 413,
            Kind::UpstreamUnavailable | Kind::BadLoginResponse => 502,
            Kind::UpstreamTimeout => 504,
        }
    }

    /// The SPEC §8 `error` code.
    pub fn code(&self) -> &'static str {
        match self.kind() {
            Kind::BadRequest => "bad_request",
            Kind::Csrf => "csrf",
            Kind::NotFound => "not_found",
            Kind::MethodNotAllowed => "method_not_allowed",
            Kind::RequestTimeout => "request_timeout",
            Kind::PayloadTooLarge => "payload_too_large",
            Kind::UpstreamUnavailable => "upstream_unavailable",
            Kind::BadLoginResponse => "bad_login_response",
            Kind::UpstreamTimeout => "upstream_timeout",
        }
    }

    /// The human sentence sent to the client.
    pub fn message(&self) -> &'static str {
        match self {
            Self::BadPath(_) => "The request path is malformed or could escape the API's base path.",
            Self::BadRequest(what) => what,
            Self::Csrf(_) => "The request was refused as a possible cross-site request forgery.",
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
            Self::BadLogin(_)
            | Self::LoginBody(BodyReadError::TooLarge | BodyReadError::Incomplete)
            | Self::Cookie(_) => "The API's login response could not be used.",
        }
    }

    fn kind(&self) -> Kind {
        match self {
            Self::BadPath(_) | Self::BadRequest(_) | Self::Upstream(UpstreamError::RequestBody(_)) => {
                Kind::BadRequest
            }
            Self::Csrf(_) => Kind::Csrf,
            Self::NotFound => Kind::NotFound,
            Self::MethodNotAllowed { .. } => Kind::MethodNotAllowed,
            Self::Upstream(UpstreamError::RequestBodyTimeout) => Kind::RequestTimeout,
            Self::PayloadTooLarge | Self::Upstream(UpstreamError::RequestBodyTooLarge) => {
                Kind::PayloadTooLarge
            }
            Self::Upstream(UpstreamError::Unavailable(_)) | Self::LoginBody(BodyReadError::Failed(_)) => {
                Kind::UpstreamUnavailable
            }
            Self::Upstream(UpstreamError::Timeout) | Self::LoginBody(BodyReadError::Timeout) => {
                Kind::UpstreamTimeout
            }
            Self::BadLogin(_)
            | Self::LoginBody(BodyReadError::TooLarge | BodyReadError::Incomplete)
            | Self::Cookie(_) => Kind::BadLoginResponse,
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

/// One problem with a setting, naming the key within its section (e.g.
/// `same_site` for `cookie.same_site`) so that a caller can report it
/// beside every other problem at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct SettingError {
    /// The key at fault, within its section.
    pub key: &'static str,
    /// What is wrong.
    pub message: String,
}

impl SettingError {
    /// A problem with `key`.
    pub fn new(key: &'static str, message: impl Into<String>) -> Self {
        Self {
            key,
            message: message.into(),
        }
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

#[derive(Clone, Copy)]
enum Kind {
    BadRequest,
    Csrf,
    NotFound,
    MethodNotAllowed,
    RequestTimeout,
    PayloadTooLarge,
    UpstreamUnavailable,
    BadLoginResponse,
    UpstreamTimeout,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::ReplyBody;

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
            (BodyReadError::TooLarge.into(), 502, "bad_login_response"),
            (BodyReadError::Incomplete.into(), 502, "bad_login_response"),
            (CookieError::TooLarge.into(), 502, "bad_login_response"),
            (UpstreamError::Timeout.into(), 504, "upstream_timeout"),
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
