//! Reading the tokens out of the API's login (and refresh) response, and
//! the body the browser gets instead: the API's JSON minus the tokens, plus
//! `"loggedIn": true`.

use serde_json::Value;

use crate::setting::SettingError;
use crate::text::contains;
use crate::token::{Grant, Token, TokenError};

/// Largest login response body read (1 MiB); a bigger one is refused.
pub const MAX_LOGIN_BODY: usize = 1024 * 1024;

/// Why a 2xx login response cannot be used (502 `bad_login_response`).
/// The messages never hold the token or the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// The body is not JSON.
    #[error("the login response is not JSON")]
    NotJson,
    /// Nothing, or not a string, at the configured pointer.
    #[error("the login response has no token string at the configured field")]
    NoToken,
    /// The body is larger than [`MAX_LOGIN_BODY`].
    #[error("the login response is larger than 1 MiB")]
    TooLarge,
    /// The body is compressed; tokenjar asks for an identity encoding.
    #[error("the login response is content-encoded")]
    Encoded,
    /// The token cannot be carried.
    #[error("the login token is unusable: {0}")]
    Token(#[from] TokenError),
    /// The token appears again elsewhere in the body.
    #[error("the login response repeats the token outside the configured field")]
    TokenRepeated,
    /// A refusal (non-2xx) that carries a token at the configured field:
    /// passing it on would hand the page a token.
    #[error("the API refused the login but its answer carries a token")]
    TokenInRefusal,
}

/// Where the tokens sit in the login response (JSON Pointers, RFC 6901):
/// the access token always, the refresh token and the access token's
/// lifetime when configured (SPEC §14).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginRules {
    token: Pointer,
    refresh: Option<Pointer>,
    expires_in: Option<Pointer>,
}

impl Default for LoginRules {
    fn default() -> Self {
        Self {
            token: Pointer("/authToken".to_owned()),
            refresh: None,
            expires_in: None,
        }
    }
}

/// A login (or refresh) response with its tokens taken out.
#[derive(Debug)]
pub struct Login {
    /// The access token, for the cookie.
    pub token: Token,
    /// The refresh token, when the rules name one and the answer has it.
    pub refresh: Option<Token>,
    /// The access token's lifetime in seconds, when the rules name a field
    /// for it and the answer has a usable number there.
    pub expires_in_s: Option<u64>,
    /// The JSON body for the browser.
    pub body: Vec<u8>,
}

impl Login {
    /// What the session keeps of this answer, received at `now`: the access
    /// token's expiry is `expires_in_s` after `now`, else its JWT `exp`.
    pub fn grant(self, now: i64) -> Grant {
        let access_expires_at = match self.expires_in_s {
            Some(secs) => i64::try_from(secs).ok().and_then(|s| now.checked_add(s)),
            None => self.token.jwt_exp(),
        };
        Grant {
            access: self.token,
            refresh: self.refresh,
            access_expires_at,
            profile: None,
        }
    }
}

/// Longest access-token lifetime believed (ten years): a larger
/// `expires_in` is read as none, not as an overflow.
const MAX_EXPIRES_IN_S: u64 = 10 * 365 * 24 * 3600;

impl LoginRules {
    /// Rules for a token at `pointer`, e.g. `/authToken` or `/data/token`.
    ///
    /// # Errors
    /// The `response_field` problem when `pointer` is not a JSON Pointer to
    /// a member.
    pub fn new(pointer: &str) -> Result<Self, Vec<SettingError>> {
        Ok(Self {
            token: Pointer::new("response_field", pointer)?,
            refresh: None,
            expires_in: None,
        })
    }

    /// The same rules, reading a refresh token at `pointer` too (`""`:
    /// none). The refresh token is taken out of what the browser gets,
    /// like the access token.
    ///
    /// # Errors
    /// The `refresh_field` problem when `pointer` is not a JSON Pointer.
    pub fn with_refresh(mut self, pointer: &str) -> Result<Self, Vec<SettingError>> {
        self.refresh = Pointer::optional("refresh_field", pointer)?;
        Ok(self)
    }

    /// The same rules, reading the access token's lifetime in seconds at
    /// `pointer` too (`""`: none, the JWT `exp` is used).
    ///
    /// # Errors
    /// The `expires_in_field` problem when `pointer` is not a JSON Pointer.
    pub fn with_expires_in(mut self, pointer: &str) -> Result<Self, Vec<SettingError>> {
        self.expires_in = Pointer::optional("expires_in_field", pointer)?;
        Ok(self)
    }

    /// The access token's pointer.
    pub fn pointer(&self) -> &str {
        &self.token.0
    }

    /// Whether the rules read a refresh token.
    pub fn reads_refresh(&self) -> bool {
        self.refresh.is_some()
    }

    /// Whether the rules read the access token's lifetime.
    pub fn reads_expires_in(&self) -> bool {
        self.expires_in.is_some()
    }

    /// Takes the tokens out of a 2xx login (or refresh) response body.
    ///
    /// # Errors
    /// [`LoginError`] when the body is too large, not JSON, has no token
    /// string at the pointer, a token cannot go in a header, or a token
    /// appears again elsewhere in what the browser would get.
    pub fn extract(&self, body: &[u8]) -> Result<Login, LoginError> {
        if body.len() > MAX_LOGIN_BODY {
            return Err(LoginError::TooLarge);
        }
        let mut doc: Value = serde_json::from_slice(body).map_err(|_| LoginError::NotJson)?;
        let expires_in_s = self.expires_in.as_ref().and_then(|p| seconds(p.get(&doc)));
        // Both tokens are read before either is removed: removing one from
        // an array would shift the other's index.
        let refresh = match self.refresh.as_ref().and_then(|p| p.get(&doc)) {
            Some(Value::String(s)) if !s.is_empty() => Some(Token::new(s.clone())?),
            _ => None,
        };
        let token = self.token.take(&mut doc).ok_or(LoginError::NoToken)?;
        let token = Token::new(token)?;
        if let (Some(pointer), Some(_)) = (&self.refresh, &refresh) {
            pointer.take(&mut doc);
        }
        let mut doc = match doc {
            Value::Object(map) => map,
            // Not an object at the top: nothing of it can carry `loggedIn`,
            // so the browser gets just the flag.
            _ => serde_json::Map::new(),
        };
        doc.insert("loggedIn".to_owned(), Value::Bool(true));
        let doc = Value::Object(doc);
        let body = doc.to_string().into_bytes();
        // Both the decoded values (where escapes hide it) and the bytes sent
        // (where JSON syntax or another member's escapes can spell it).
        let repeated =
            |secret: &Token| mentions(&doc, secret.expose()) || contains(&body, secret.expose().as_bytes());
        if repeated(&token) || refresh.as_ref().is_some_and(repeated) {
            return Err(LoginError::TokenRepeated);
        }
        Ok(Login {
            token,
            refresh,
            expires_in_s,
            body,
        })
    }

    /// Whether a body holds a non-empty string at the token's pointer, or
    /// at the refresh token's (any answer's, not only a 2xx one's). A body
    /// that is not JSON holds none.
    pub fn holds_token(&self, body: &[u8]) -> bool {
        let Ok(doc) = serde_json::from_slice::<Value>(body) else {
            return false;
        };
        is_token(self.token.get(&doc)) || self.refresh.as_ref().is_some_and(|p| is_token(p.get(&doc)))
    }
}

/// A JSON Pointer to a member (RFC 6901), checked when configured.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Pointer(String);

impl Pointer {
    /// The pointer `text`, whose problems are reported under `key`.
    fn new(key: &'static str, text: &str) -> Result<Self, Vec<SettingError>> {
        let refuse = |message: String| Err(vec![SettingError::new(key, message)]);
        if !text.starts_with('/') {
            return refuse(format!("{text:?} is not a JSON Pointer (it must start with /)"));
        }
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
                return refuse(format!("{text:?} has a ~ not followed by 0 or 1"));
            }
        }
        Ok(Self(text.to_owned()))
    }

    /// As [`new`](Self::new), with `""` meaning none.
    fn optional(key: &'static str, text: &str) -> Result<Option<Self>, Vec<SettingError>> {
        if text.is_empty() {
            return Ok(None);
        }
        Self::new(key, text).map(Some)
    }

    /// The pointer to the member's parent, and the member's key within it
    /// (`~1` and `~0` unescaped).
    fn parent_and_key(&self) -> (&str, String) {
        // `new` made sure the pointer starts with `/`.
        let (parent, last) = self.0.rsplit_once('/').unwrap_or_default();
        (parent, last.replace("~1", "/").replace("~0", "~"))
    }

    /// The value at the pointer.
    fn get<'v>(&self, doc: &'v Value) -> Option<&'v Value> {
        let (parent, key) = self.parent_and_key();
        doc.pointer(parent).and_then(|parent| member(parent, &key))
    }

    /// Removes and returns the non-empty string at the pointer; leaves
    /// anything else where it is.
    fn take(&self, doc: &mut Value) -> Option<String> {
        let (parent, key) = self.parent_and_key();
        let parent = doc.pointer_mut(parent)?;
        if !is_token(member(parent, &key)) {
            return None;
        }
        let taken = match (parent, key.parse::<usize>().ok()) {
            (Value::Object(map), _) => map.shift_remove(&key),
            (Value::Array(items), Some(i)) => Some(items.remove(i)),
            _ => None,
        };
        match taken {
            Some(Value::String(s)) => Some(s),
            _ => None,
        }
    }
}

/// A lifetime in seconds: a non-negative number (a fraction is cut) or a
/// string of digits, up to [`MAX_EXPIRES_IN_S`].
fn seconds(value: Option<&Value>) -> Option<u64> {
    let secs = match value? {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0 && *f <= MAX_EXPIRES_IN_S as f64)
                .map(|f| f as u64)
        }),
        Value::String(s) if !s.is_empty() && s.len() <= 12 && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse().ok()
        }
        _ => None,
    }?;
    (secs <= MAX_EXPIRES_IN_S).then_some(secs)
}

/// The member `key` of `parent`: an object's by name, an array's by index.
fn member<'v>(parent: &'v Value, key: &str) -> Option<&'v Value> {
    match parent {
        Value::Object(map) => map.get(key),
        Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    }
}

/// Whether a slot holds a token: a non-empty string.
fn is_token(slot: Option<&Value>) -> bool {
    matches!(slot, Some(Value::String(s)) if !s.is_empty())
}

/// Whether `needle` occurs in any string or key of `doc`.
fn mentions(doc: &Value, needle: &str) -> bool {
    match doc {
        Value::String(s) => s.contains(needle),
        Value::Array(items) => items.iter().any(|v| mentions(v, needle)),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains(needle) || mentions(v, needle)),
        Value::Number(n) => n.to_string().contains(needle),
        Value::Bool(_) | Value::Null => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(pointer: &str) -> LoginRules {
        LoginRules::new(pointer).unwrap()
    }

    fn check(pointer: &str, body: &str, expected: Result<(&str, Value), LoginError>) {
        let got = rules(pointer).extract(body.as_bytes()).map(|login| {
            let body: Value = serde_json::from_slice(&login.body).unwrap();
            (login.token.expose().to_owned(), body)
        });
        let expected = expected.map(|(t, v)| (t.to_owned(), v));
        assert_eq!(got, expected, "{pointer} {body}");
    }

    #[test]
    fn token_is_taken_out_and_logged_in_added() {
        check(
            "/authToken",
            r#"{"authToken":"abc.def.ghi","user":{"name":"demo"}}"#,
            Ok((
                "abc.def.ghi",
                serde_json::json!({"user":{"name":"demo"},"loggedIn":true}),
            )),
        );
        check(
            "/data/token",
            r#"{"data":{"token":"t-1","kind":"x"}}"#,
            Ok(("t-1", serde_json::json!({"data":{"kind":"x"},"loggedIn":true}))),
        );
        check(
            "/a~1b/c~0d",
            r#"{"a/b":{"c~d":"t-2"}}"#,
            Ok(("t-2", serde_json::json!({"a/b":{},"loggedIn":true}))),
        );
        check(
            "/tokens/1",
            r#"{"tokens":["first","second"]}"#,
            Ok(("second", serde_json::json!({"tokens":["first"],"loggedIn":true}))),
        );
        check(
            "/0",
            r#"["top-level-array"]"#,
            Ok(("top-level-array", serde_json::json!({"loggedIn":true}))),
        );
        check(
            "/authToken",
            r#"{"authToken":"x","loggedIn":false}"#,
            Ok(("x", serde_json::json!({"loggedIn":true}))),
        );
    }

    #[test]
    fn member_order_is_kept() {
        let login = rules("/authToken")
            .extract(br#"{"z":1,"authToken":"tok","a":2}"#)
            .unwrap();
        assert_eq!(login.body, br#"{"z":1,"a":2,"loggedIn":true}"#);
    }

    #[test]
    fn unusable_bodies_are_refused() {
        let cases: &[(&str, LoginError)] = &[
            ("", LoginError::NotJson),
            ("<html>", LoginError::NotJson),
            ("{\"authToken\":", LoginError::NotJson),
            ("{}", LoginError::NoToken),
            ("null", LoginError::NoToken),
            ("\"just-a-string\"", LoginError::NoToken),
            (r#"{"authToken":42}"#, LoginError::NoToken),
            (r#"{"authToken":{"v":"x"}}"#, LoginError::NoToken),
            (r#"{"authToken":null}"#, LoginError::NoToken),
            (r#"{"authToken":""}"#, LoginError::NoToken),
            (r#"{"authtoken":"x"}"#, LoginError::NoToken),
            (
                r#"{"authToken":"a\r\nSet-Cookie: x=1"}"#,
                LoginError::Token(TokenError::NotHeaderSafe),
            ),
            (
                r#"{"authToken":"a\u0000b"}"#,
                LoginError::Token(TokenError::NotHeaderSafe),
            ),
            (
                r#"{"authToken":"tok-123","copy":"tok-123"}"#,
                LoginError::TokenRepeated,
            ),
            (
                r#"{"authToken":"tok-123","u":{"tok-123":1}}"#,
                LoginError::TokenRepeated,
            ),
            (
                r#"{"authToken":"tok-123","u":["x tok-123 y"]}"#,
                LoginError::TokenRepeated,
            ),
            (r#"{"authToken":"12345","n":123456}"#, LoginError::TokenRepeated),
            (r#"{"authToken":"true"}"#, LoginError::TokenRepeated),
            (r#"{"authToken":"\"abc","k":"abc"}"#, LoginError::TokenRepeated),
            (r#"{"authToken":"nabc","x":"\nabc"}"#, LoginError::TokenRepeated),
        ];
        for (body, expected) in cases {
            assert_eq!(
                rules("/authToken").extract(body.as_bytes()).map(|_| ()),
                Err(*expected),
                "{body}"
            );
        }
        assert_eq!(
            rules("/t/5").extract(br#"{"t":["a"]}"#).map(|_| ()),
            Err(LoginError::NoToken)
        );
        assert_eq!(
            rules("/t/x").extract(br#"{"t":["a"]}"#).map(|_| ()),
            Err(LoginError::NoToken)
        );
    }

    #[test]
    fn a_token_is_found_in_any_answer() {
        let found = |pointer: &str, body: &str| rules(pointer).holds_token(body.as_bytes());
        assert!(found("/authToken", r#"{"authToken":"x","error":"locked"}"#));
        assert!(found("/data/token", r#"{"data":{"token":"t"}}"#));
        assert!(found("/tokens/1", r#"{"tokens":["a","b"]}"#));
        assert!(!found("/authToken", r#"{"authToken":""}"#));
        assert!(!found("/authToken", r#"{"authToken":42}"#));
        assert!(!found("/authToken", r#"{"error":"bad credentials"}"#));
        assert!(!found("/authToken", "<html>authToken</html>"));
        assert!(!found("/authToken", ""));
        assert!(!found("/tokens/9", r#"{"tokens":["a"]}"#));
    }

    #[test]
    fn size_and_nesting_limits() {
        let mut big = br#"{"authToken":"t","pad":""#.to_vec();
        big.resize(MAX_LOGIN_BODY + 1, b'x');
        assert_eq!(
            rules("/authToken").extract(&big).map(|_| ()),
            Err(LoginError::TooLarge)
        );
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(
            rules("/authToken").extract(deep.as_bytes()).map(|_| ()),
            Err(LoginError::NotJson)
        );
        assert_eq!(
            rules("/authToken").extract(b"\xff\xfe{}").map(|_| ()),
            Err(LoginError::NotJson)
        );
    }

    fn refreshing(refresh: &str, expires_in: &str) -> LoginRules {
        rules("/authToken")
            .with_refresh(refresh)
            .unwrap()
            .with_expires_in(expires_in)
            .unwrap()
    }

    #[test]
    fn the_refresh_token_is_taken_out_and_the_lifetime_read() {
        let login = refreshing("/refreshToken", "/expiresIn")
            .extract(br#"{"authToken":"a-1","refreshToken":"r-1","expiresIn":300,"user":"u"}"#)
            .unwrap();
        assert_eq!(login.token.expose(), "a-1");
        assert_eq!(login.refresh.as_ref().map(Token::expose), Some("r-1"));
        assert_eq!(login.expires_in_s, Some(300));
        // The lifetime stays for the page; the refresh token does not.
        assert_eq!(login.body, br#"{"expiresIn":300,"user":"u","loggedIn":true}"#);
        let grant = login.grant(1_000);
        assert_eq!(grant.access_expires_at, Some(1_300));
        assert_eq!(grant.refresh.as_ref().map(Token::expose), Some("r-1"));
    }

    #[test]
    fn a_missing_refresh_token_or_lifetime_is_none() {
        let rules = refreshing("/data/refresh", "/expiresIn");
        let login = rules.extract(br#"{"authToken":"a-1"}"#).unwrap();
        assert_eq!((login.refresh, login.expires_in_s), (None, None));
        // Not a string: not a refresh token, and left where it is.
        let login = rules
            .extract(br#"{"authToken":"a-1","data":{"refresh":7}}"#)
            .unwrap();
        assert_eq!(login.refresh, None);
        assert_eq!(login.body, br#"{"data":{"refresh":7},"loggedIn":true}"#);
        // Without a lifetime field, the JWT `exp` gives the expiry.
        assert_eq!(
            rules
                .extract(br#"{"authToken":"opaque"}"#)
                .unwrap()
                .grant(5)
                .access_expires_at,
            None
        );
    }

    #[test]
    fn lifetimes_are_read_leniently_and_bounded() {
        let rules = refreshing("", "/e");
        let read = |value: &str| {
            rules
                .extract(format!(r#"{{"authToken":"a","e":{value}}}"#).as_bytes())
                .unwrap()
                .expires_in_s
        };
        assert_eq!(read("0"), Some(0));
        assert_eq!(read("3600"), Some(3600));
        assert_eq!(read("59.9"), Some(59));
        assert_eq!(read(r#""120""#), Some(120));
        for bad in [
            "-1",
            "-0.5",
            "1e300",
            r#""12s""#,
            r#""""#,
            "null",
            "true",
            "[1]",
            "315360001",
        ] {
            assert_eq!(read(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_refresh_token_repeated_elsewhere_is_refused() {
        let rules = refreshing("/refreshToken", "");
        for body in [
            r#"{"authToken":"a-1","refreshToken":"r-123","copy":"r-123"}"#,
            // Two pointers into one array: the refresh token must not be
            // left behind when taking the access token shifts it.
            r#"{"authToken":"a-1","refreshToken":"r-123","k":["r-123"]}"#,
        ] {
            assert_eq!(
                rules.extract(body.as_bytes()).map(|_| ()),
                Err(LoginError::TokenRepeated),
                "{body}"
            );
        }
        let shifted = LoginRules::new("/t/0").unwrap().with_refresh("/t/1").unwrap();
        assert_eq!(
            shifted.extract(br#"{"t":["a-1","r-123"]}"#).map(|_| ()),
            Err(LoginError::TokenRepeated)
        );
        assert_eq!(
            rules
                .extract(br#"{"authToken":"a-1","refreshToken":"bad\u0000"}"#)
                .map(|_| ()),
            Err(LoginError::Token(TokenError::NotHeaderSafe))
        );
    }

    #[test]
    fn a_refusal_holding_a_refresh_token_is_caught() {
        let rules = refreshing("/refreshToken", "");
        assert!(rules.holds_token(br#"{"refreshToken":"r","error":"x"}"#));
        assert!(!rules.holds_token(br#"{"error":"x"}"#));
    }

    #[test]
    fn refresh_and_lifetime_pointers_are_validated_under_their_keys() {
        let key = |r: Result<LoginRules, Vec<SettingError>>| r.err().unwrap()[0].key;
        assert_eq!(key(rules("/a").with_refresh("refresh")), "refresh_field");
        assert_eq!(key(rules("/a").with_expires_in("/x~2")), "expires_in_field");
        assert!(!rules("/a").with_refresh("").unwrap().reads_refresh());
        assert!(rules("/a").with_expires_in("/e").unwrap().reads_expires_in());
    }

    #[test]
    fn pointers_are_validated() {
        assert!(LoginRules::new("/authToken").is_ok());
        assert!(LoginRules::new("/a~0~1").is_ok());
        assert!(LoginRules::new("authToken").is_err());
        assert!(LoginRules::new("").is_err());
        assert!(LoginRules::new("/a~2").is_err());
        assert!(LoginRules::new("/a~").is_err());
    }
}
