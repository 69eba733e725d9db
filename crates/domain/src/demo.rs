//! The demo API of `tokenjar demo` (feature `demo`): a login that issues
//! JWT-shaped tokens and one endpoint that wants them, answered in memory,
//! so that the demo server and the in-memory flow tests share one API.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::ports::{Random, RandomError};

/// The demo API of `tokenjar demo`: `POST /login` with `demo`/`demo`
/// issues a JWT-shaped token with an `exp`; `GET /me` answers only to a
/// token it issued, read from the `auth-token` header. A second account,
/// `roles`/`roles`, gets a token of about 10 KB (a user with many roles, as
/// real identity providers issue them): its session outgrows one cookie
/// (SPEC §15). Shared by the in-memory tests and the demo server.
#[derive(Debug)]
pub struct DemoApi {
    /// Each token issued, and its user.
    issued: Mutex<HashMap<String, &'static str>>,
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

    /// A demo API whose tokens live `lifetime_s` seconds, salted from
    /// `random` so that tokens of two demo runs differ.
    ///
    /// # Errors
    /// [`RandomError`] when `random` fails.
    pub fn new(lifetime_s: i64, random: &dyn Random) -> Result<Self, RandomError> {
        let mut salt = [0; 12];
        random.fill(&mut salt)?;
        Ok(Self {
            issued: Mutex::new(HashMap::new()),
            counter: AtomicU64::new(0),
            salt: URL_SAFE_NO_PAD.encode(salt),
            lifetime_s,
        })
    }

    /// Answers one request at time `now`. `path` excludes any base path;
    /// `token` is the `auth-token` header's value.
    pub fn answer(&self, method: &str, path: &str, token: Option<&str>, body: &[u8], now: i64) -> DemoAnswer {
        let path = path.split('?').next().unwrap_or_default();
        match (method, path) {
            ("POST", "/login") => self.login(body, now),
            ("GET", "/me") => match self.user(token) {
                Some(name) => (200, json!({ "name": name })),
                None => (401, json!({ "error": "unauthorized" })),
            },
            _ => (404, json!({ "error": "not found" })),
        }
    }

    /// The user a token was issued to, if this API issued it: what `/me`
    /// answers, and whom the demo's WebSocket (`/hello`) greets.
    pub fn user(&self, token: Option<&str>) -> Option<&'static str> {
        let issued = self.issued.lock().unwrap_or_else(PoisonError::into_inner);
        token.and_then(|t| issued.get(t).copied())
    }

    fn login(&self, body: &[u8], now: i64) -> DemoAnswer {
        let creds: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let (user, roles) = match (creds["username"].as_str(), creds["password"].as_str()) {
            (Some("demo"), Some("demo")) => ("demo", 0),
            // About 10 KB of claims: three or so cookies once sealed.
            (Some("roles"), Some("roles")) => ("roles", 600),
            _ => return (401, json!({ "error": "bad credentials" })),
        };
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let mut claims = json!({ "sub": user, "iat": now, "exp": now + self.lifetime_s, "n": n });
        if roles > 0 {
            claims["roles"] = (0..roles).map(|i| format!("role-{i:04}")).collect();
        }
        let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
        let token = format!("{header}.{claims}.{}{n}", self.salt);
        self.issued
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(token.clone(), user);
        // The member that `TOKEN_POINTER` points at.
        let field = Self::TOKEN_POINTER.trim_start_matches('/');
        (200, json!({ field: token, "user": { "name": user } }))
    }

    /// This demo API as an in-memory upstream (feature `test-util`). Paths are matched as they
    /// arrive, so the upstream URL must have no base path.
    #[cfg(feature = "test-util")]
    pub fn into_upstream(
        self,
        clock: std::sync::Arc<dyn crate::Clock + Send + Sync>,
    ) -> crate::memory::InMemoryUpstream {
        crate::memory::InMemoryUpstream::new(move |request| {
            let token = request.headers.get_str(DemoApi::TOKEN_HEADER);
            let (status, body) =
                self.answer(&request.method, request.path(), token, &request.body, clock.now());
            Ok(crate::memory::json_response(status, &body))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::SeededRandom;

    #[test]
    fn demo_api_issues_and_checks_tokens() {
        let api = DemoApi::new(3600, &SeededRandom::new(1)).unwrap();
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
        assert_eq!(api.user(Some(&token)), Some("demo"));
        assert_eq!(api.user(Some("forged")), None);
        // The account with many roles: a token of about 10 KB, its own user.
        let (status, body) = api.answer(
            "POST",
            "/login",
            None,
            br#"{"username":"roles","password":"roles"}"#,
            100,
        );
        assert_eq!(status, 200);
        let big = body["authToken"].as_str().unwrap().to_owned();
        assert!((9_000..12_000).contains(&big.len()), "{}", big.len());
        assert_eq!(
            api.answer("GET", "/me", Some(&big), b"", 0).1,
            json!({ "name": "roles" })
        );
        assert_eq!(api.answer("GET", "/me", Some("forged"), b"", 0).0, 401);
        assert_eq!(api.answer("GET", "/me", None, b"", 0).0, 401);
        assert_eq!(api.answer("GET", "/nope", None, b"", 0).0, 404);
    }
}
