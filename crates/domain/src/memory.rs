//! In-memory adapters: an API that answers from a function and records what
//! it was sent, a demo API with a login, and a clock that moves only when
//! told. With them the whole [`crate::Gateway`] flow runs without a socket.

use std::collections::HashSet;
use std::future::{ready, Future};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::headers::Headers;
use crate::plan::{BodySize, UpstreamRequest, UpstreamResponse};
use crate::ports::{BodyReadError, Clock, Upstream, UpstreamError};

/// What the in-memory API received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    /// Method.
    pub method: String,
    /// Absolute URL.
    pub url: String,
    /// Headers.
    pub headers: Headers,
    /// Body framing.
    pub body_size: BodySize,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl RecordedRequest {
    /// The URL's path and query (what follows the origin).
    pub fn path(&self) -> &str {
        let after_scheme = self.url.split_once("://").map_or(self.url.as_str(), |(_, r)| r);
        after_scheme.find('/').map_or("/", |i| &after_scheme[i..])
    }
}

type Handler = dyn Fn(&RecordedRequest) -> Result<UpstreamResponse<Vec<u8>>, UpstreamError> + Send + Sync;

/// An API made of a function. Bodies are byte vectors.
pub struct InMemoryUpstream {
    handler: Box<Handler>,
    recorded: Mutex<Vec<RecordedRequest>>,
    record: bool,
}

impl InMemoryUpstream {
    /// An API that answers every request with `handler`.
    pub fn new(
        handler: impl Fn(&RecordedRequest) -> Result<UpstreamResponse<Vec<u8>>, UpstreamError>
            + Send
            + Sync
            + 'static,
    ) -> Self {
        Self {
            handler: Box::new(handler),
            recorded: Mutex::new(Vec::new()),
            record: true,
        }
    }

    /// The same API, but forgetting what it was sent (for benchmarks, where
    /// the record would grow without bound).
    pub fn without_recording(mut self) -> Self {
        self.record = false;
        self
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.recorded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Upstream for InMemoryUpstream {
    type RequestBody = Vec<u8>;
    type ResponseBody = Vec<u8>;

    fn send(
        &self,
        request: UpstreamRequest<Vec<u8>>,
    ) -> impl Future<Output = Result<UpstreamResponse<Vec<u8>>, UpstreamError>> {
        let recorded = RecordedRequest {
            method: request.method,
            url: request.url,
            headers: request.headers,
            body_size: request.body_size,
            body: request.body,
        };
        let answer = (self.handler)(&recorded);
        if self.record {
            self.recorded
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(recorded);
        }
        ready(answer)
    }

    fn read_body(&self, body: Vec<u8>, limit: usize) -> impl Future<Output = Result<Vec<u8>, BodyReadError>> {
        ready(if body.len() > limit {
            Err(BodyReadError::TooLarge)
        } else {
            Ok(body)
        })
    }
}

/// A response with a JSON body.
pub fn json_response(status: u16, body: &Value) -> UpstreamResponse<Vec<u8>> {
    bytes_response(status, "application/json", body.to_string().into_bytes())
}

/// A response with any body.
pub fn bytes_response(status: u16, content_type: &str, body: Vec<u8>) -> UpstreamResponse<Vec<u8>> {
    let mut headers = Headers::new();
    headers.append("content-type", content_type);
    UpstreamResponse {
        status,
        headers,
        body_size: BodySize::Sized(body.len() as u64),
        body,
    }
}

/// A clock that shows a set time and moves only when told.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock showing `now` (Unix seconds).
    pub fn new(now: i64) -> Self {
        Self(AtomicI64::new(now))
    }

    /// Moves the clock forward by `seconds`.
    pub fn advance(&self, seconds: i64) {
        self.0.fetch_add(seconds, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl<C: Clock> Clock for Arc<C> {
    fn now(&self) -> i64 {
        (**self).now()
    }
}

/// The demo API of `tokenjar demo`: `POST /login` with `demo`/`demo`
/// issues a JWT-shaped token with an `exp`; `GET /me` answers only to a
/// token it issued, read from the `auth-token` header. Shared by the
/// in-memory tests and the demo server.
#[derive(Debug)]
pub struct DemoApi {
    issued: Mutex<HashSet<String>>,
    counter: AtomicU64,
    salt: String,
    lifetime_s: i64,
}

/// A demo API answer: status and JSON body.
pub type DemoAnswer = (u16, Value);

impl DemoApi {
    /// Where the demo API's login answer holds the token (`token.response_field`).
    pub const TOKEN_POINTER: &'static str = "/authToken";
    /// The header the demo API reads the token from (`token.upstream_header`).
    pub const TOKEN_HEADER: &'static str = "auth-token";

    /// A demo API whose tokens live `lifetime_s` seconds.
    pub fn new(lifetime_s: i64) -> Self {
        let salt = URL_SAFE_NO_PAD.encode(&cookie::Key::generate().master()[..12]);
        Self {
            issued: Mutex::new(HashSet::new()),
            counter: AtomicU64::new(0),
            salt,
            lifetime_s,
        }
    }

    /// Answers one request at time `now`. `path` excludes any base path;
    /// `token` is the `auth-token` header's value.
    pub fn answer(&self, method: &str, path: &str, token: Option<&str>, body: &[u8], now: i64) -> DemoAnswer {
        let path = path.split('?').next().unwrap_or_default();
        match (method, path) {
            ("POST", "/login") => self.login(body, now),
            ("GET", "/me") => {
                let known = token.is_some_and(|t| {
                    self.issued
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .contains(t)
                });
                if known {
                    (200, json!({ "name": "demo" }))
                } else {
                    (401, json!({ "error": "unauthorized" }))
                }
            }
            _ => (404, json!({ "error": "not found" })),
        }
    }

    fn login(&self, body: &[u8], now: i64) -> DemoAnswer {
        let creds: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        if creds["username"] != "demo" || creds["password"] != "demo" {
            return (401, json!({ "error": "bad credentials" }));
        }
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let claims = URL_SAFE_NO_PAD
            .encode(json!({ "sub": "demo", "iat": now, "exp": now + self.lifetime_s, "n": n }).to_string());
        let token = format!("{header}.{claims}.{}{n}", self.salt);
        self.issued
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(token.clone());
        // The member that `TOKEN_POINTER` points at.
        let field = Self::TOKEN_POINTER.trim_start_matches('/');
        (200, json!({ field: token, "user": { "name": "demo" } }))
    }

    /// This demo API as an in-memory upstream. Paths are matched as they
    /// arrive, so the upstream URL must have no base path.
    pub fn into_upstream(self, clock: Arc<dyn Clock + Send + Sync>) -> InMemoryUpstream {
        InMemoryUpstream::new(move |request| {
            let token = request.headers.get_str(DemoApi::TOKEN_HEADER);
            let (status, body) =
                self.answer(&request.method, request.path(), token, &request.body, clock.now());
            Ok(json_response(status, &body))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_api_issues_and_checks_tokens() {
        let api = DemoApi::new(3600);
        assert_eq!(
            api.answer(
                "POST",
                "/login",
                None,
                br#"{"username":"demo","password":"x"}"#,
                0
            )
            .0,
            401
        );
        assert_eq!(api.answer("POST", "/login", None, b"not json", 0).0, 401);
        let (status, body) = api.answer(
            "POST",
            "/login",
            None,
            br#"{"username":"demo","password":"demo"}"#,
            100,
        );
        assert_eq!(status, 200);
        let token = body["authToken"].as_str().unwrap().to_owned();
        let parsed: crate::Token = token.parse().unwrap();
        assert_eq!(parsed.jwt_exp(), Some(3700));
        assert_eq!(api.answer("GET", "/me", Some(&token), b"", 0).0, 200);
        assert_eq!(api.answer("GET", "/me", Some("forged"), b"", 0).0, 401);
        assert_eq!(api.answer("GET", "/me", None, b"", 0).0, 401);
        assert_eq!(api.answer("GET", "/nope", None, b"", 0).0, 404);
    }

    #[test]
    fn recorded_path_is_what_follows_the_origin() {
        let r = |url: &str| RecordedRequest {
            method: "GET".into(),
            url: url.into(),
            headers: Headers::new(),
            body_size: BodySize::None,
            body: Vec::new(),
        };
        assert_eq!(r("http://api:9/v1/x?y=1").path(), "/v1/x?y=1");
        assert_eq!(r("http://api:9").path(), "/");
    }
}
