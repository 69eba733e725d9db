//! The API token: a secret string that may travel only in an upstream request
//! header, how it is written into that header, what its JWT `exp` says, and
//! the grant of a login or refresh that holds it.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;

use crate::headers::{is_valid_name, Headers};
use crate::setting::SettingError;

/// Longest token accepted: 64 KiB, a bound on what is read and sent at
/// all. Whether a token fits in the cookies is decided when they are issued
/// (a long session is split into `cookie.max_chunks` cookies at most,
/// SPEC §15), so this is above what the most chunks can hold.
pub const MAX_TOKEN_LEN: usize = 64 * 1024;

/// The API's auth token. Its `Debug` and `Display` never show the value, so
/// it cannot reach a log line by accident; [`Token::expose`] is the only way
/// to read it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

/// Why a string cannot be a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The string is empty.
    #[error("the token is empty")]
    Empty,
    /// The string holds a byte that cannot go in an HTTP header value.
    #[error("the token holds characters that cannot go in a header")]
    NotHeaderSafe,
    /// The string is too long to be carried at all.
    #[error("the token is longer than {MAX_TOKEN_LEN} bytes")]
    TooLong,
}

impl Token {
    /// Checks that `value` can be carried in a header: printable ASCII, with
    /// inner spaces allowed but no leading or trailing whitespace (which a
    /// receiver would trim, changing the token).
    ///
    /// # Errors
    /// [`TokenError`] says which rule the value breaks.
    pub fn new(value: String) -> Result<Self, TokenError> {
        let bytes = value.as_bytes();
        if bytes.is_empty() {
            return Err(TokenError::Empty);
        }
        if bytes.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLong);
        }
        let printable = bytes.iter().all(|b| (0x20..=0x7e).contains(b));
        let trimmed = bytes[0] != b' ' && bytes[bytes.len() - 1] != b' ';
        if !(printable && trimmed) {
            return Err(TokenError::NotHeaderSafe);
        }
        Ok(Self(value))
    }

    /// The secret value. Call only where the value must go on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The `exp` claim if the token is a JWT (read, not verified: the API
    /// verifies its own tokens). `None` for anything that is not a JWT with a
    /// numeric `exp`.
    pub fn jwt_exp(&self) -> Option<i64> {
        jwt_exp(&self.0)
    }
}

impl FromStr for Token {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s.to_owned())
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// What the API granted at a login or a refresh (SPEC §14): the access
/// token, the refresh token when there is one, and when the access token
/// expires, when known. Its `Debug` shows no token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The token that goes upstream.
    pub access: Token,
    /// The token that buys the next access token.
    pub refresh: Option<Token>,
    /// Unix seconds when the access token expires, when known.
    pub access_expires_at: Option<i64>,
    /// What the session keeps of the user besides the tokens (OIDC mode:
    /// the provider's session id and the user's claims), as JSON text.
    pub profile: Option<String>,
}

impl Grant {
    /// A grant of `access` alone, expiring at its JWT `exp` if it has one:
    /// what a login without refresh settings gives.
    pub fn access_only(access: Token) -> Self {
        let access_expires_at = access.jwt_exp();
        Self {
            access,
            refresh: None,
            access_expires_at,
            profile: None,
        }
    }
}

/// base64url as JWTs use it; padding tolerated because some issuers add it.
const JWT_B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A JWT payload larger than this is not worth decoding just to read `exp`.
const MAX_JWT_PAYLOAD: usize = 16 * 1024;

fn jwt_exp(token: &str) -> Option<i64> {
    let mut parts = token.split('.');
    let (_header, payload, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || payload.len() > MAX_JWT_PAYLOAD {
        return None;
    }
    let json = JWT_B64.decode(payload).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&json).ok()?;
    let exp = claims.get("exp")?;
    if let Some(n) = exp.as_i64() {
        return Some(n);
    }
    // A float `exp` is legal (NumericDate allows fractions); whole seconds do.
    exp.as_f64()
        .filter(|f| f.is_finite() && f.abs() < 1e15)
        .map(|f| f.floor() as i64)
}

/// How the token is handed to the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRules {
    header: String,
    scheme: Option<String>,
    /// Client headers never forwarded: the token's own header and
    /// `token.drop_client_headers`, each as [`fold_name`] spells it.
    dropped: Vec<String>,
}

/// `token.drop_client_headers` by default: a client's own `Authorization`
/// could carry a raw token of its own.
const DEFAULT_DROPPED: [&str; 1] = ["authorization"];

/// The folded names of the client headers removed: the token's own
/// header's and `names`.
fn dropped_names<S: AsRef<str>>(header: &str, names: &[S]) -> Vec<String> {
    let mut dropped = vec![fold_name(header)];
    for name in names.iter().map(|n| fold_name(n.as_ref().trim())) {
        if !dropped.contains(&name) {
            dropped.push(name);
        }
    }
    dropped
}

/// A header name as servers that map headers to variables see it (CGI,
/// WSGI, Rack, PHP: `auth_token` and `auth-token` are one name): lowercase,
/// `_` read as `-`.
fn fold_name(name: &str) -> String {
    name.bytes()
        .map(|b| {
            if b == b'_' {
                '-'
            } else {
                char::from(b.to_ascii_lowercase())
            }
        })
        .collect()
}

/// Whether header `name` (lowercase, as [`Headers`] keeps names) folds to
/// `folded`, without allocating: this runs for every header of every
/// request.
fn folds_to(name: &str, folded: &str) -> bool {
    name.len() == folded.len()
        && name
            .bytes()
            .zip(folded.bytes())
            .all(|(a, b)| a == b || (a == b'_' && b == b'-'))
}

impl TokenRules {
    /// `header` is the request header that carries the token upstream;
    /// `scheme`, if non-empty (e.g. `Bearer`), goes before the token.
    ///
    /// # Errors
    /// Every problem, each naming its key (`upstream_header`, `upstream_scheme`).
    pub fn new(header: &str, scheme: &str) -> Result<Self, Vec<SettingError>> {
        let mut problems = Vec::new();
        let lower = header.to_ascii_lowercase();
        if !is_valid_name(header) {
            problems.push(SettingError::new(
                "upstream_header",
                format!("{header:?} is not a valid header name"),
            ));
        } else if matches!(lower.as_str(), "cookie" | "host" | "content-length")
            || crate::headers::is_hop_by_hop(&lower)
        {
            problems.push(SettingError::new(
                "upstream_header",
                format!("{lower:?} cannot carry the token"),
            ));
        }
        let scheme = scheme.trim();
        if !scheme.bytes().all(crate::headers::is_tchar) {
            problems.push(SettingError::new(
                "upstream_scheme",
                format!("{scheme:?} is not a valid auth scheme"),
            ));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Self {
            dropped: dropped_names(&lower, &DEFAULT_DROPPED),
            header: lower,
            scheme: (!scheme.is_empty()).then(|| scheme.to_owned()),
        })
    }

    /// The same rules, with `names` (`token.drop_client_headers`) as the
    /// client headers removed besides the token's own: without a
    /// `Authorization` among them, a client's own `Authorization` reaches
    /// the API.
    ///
    /// # Errors
    /// The `drop_client_headers` problem for a name that is not a header
    /// name.
    pub fn dropping<S: AsRef<str>>(mut self, names: &[S]) -> Result<Self, Vec<SettingError>> {
        let problems: Vec<SettingError> = names
            .iter()
            .map(|name| name.as_ref().trim())
            .filter(|name| !is_valid_name(name))
            .map(|name| {
                SettingError::new(
                    "drop_client_headers",
                    format!("{name:?} is not a valid header name"),
                )
            })
            .collect();
        if !problems.is_empty() {
            return Err(problems);
        }
        self.dropped = dropped_names(&self.header, names);
        Ok(self)
    }

    /// The upstream header name, lowercase.
    pub fn header(&self) -> &str {
        &self.header
    }

    /// The header value for `token`: `token`, or `scheme token`.
    pub fn header_value(&self, token: &Token) -> String {
        match &self.scheme {
            Some(scheme) => format!("{scheme} {}", token.expose()),
            None => token.expose().to_owned(),
        }
    }

    /// Removes every client-sent header of the token's name (`_` and `-`
    /// alike) and the dropped ones, then adds the token's, so that the only
    /// token the API sees came from the cookie.
    pub fn apply(&self, headers: &mut Headers, token: Option<&Token>) {
        headers.retain(|name, _| !self.dropped.iter().any(|folded| folds_to(name, folded)));
        if let Some(token) = token {
            headers.append(self.header.clone(), self.header_value(token));
        }
    }
}

impl Default for TokenRules {
    fn default() -> Self {
        Self {
            header: "auth-token".to_owned(),
            scheme: None,
            dropped: dropped_names("auth-token", &DEFAULT_DROPPED),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: &str) -> String {
        let enc = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!("{}.{}.sig", enc.encode(r#"{"alg":"HS256"}"#), enc.encode(payload))
    }

    #[test]
    fn header_safety() {
        let cases: &[(&str, Result<(), TokenError>)] = &[
            ("abc.def-ghi_~+/=", Ok(())),
            ("Bearer-ish value with spaces", Ok(())),
            ("", Err(TokenError::Empty)),
            ("a\r\nb", Err(TokenError::NotHeaderSafe)),
            ("a\nb", Err(TokenError::NotHeaderSafe)),
            ("a\0b", Err(TokenError::NotHeaderSafe)),
            ("tab\there", Err(TokenError::NotHeaderSafe)),
            (" leading", Err(TokenError::NotHeaderSafe)),
            ("trailing ", Err(TokenError::NotHeaderSafe)),
            ("caf\u{e9}", Err(TokenError::NotHeaderSafe)),
            ("del\u{7f}", Err(TokenError::NotHeaderSafe)),
        ];
        for (input, expected) in cases {
            assert_eq!(
                Token::new((*input).to_owned()).map(|_| ()),
                *expected,
                "{input:?}"
            );
        }
        assert_eq!(Token::new("x".repeat(MAX_TOKEN_LEN)).map(|_| ()), Ok(()));
        assert_eq!(
            Token::new("x".repeat(MAX_TOKEN_LEN + 1)).map(|_| ()),
            Err(TokenError::TooLong)
        );
    }

    #[test]
    fn debug_and_display_never_show_the_value() {
        let token: Token = "s3cret-value".parse().unwrap();
        assert!(!format!("{token:?}").contains("s3cret"));
        assert!(!format!("{token}").contains("s3cret"));
        assert_eq!(token.expose(), "s3cret-value");
    }

    #[test]
    fn jwt_exp_is_read_when_present() {
        let cases: Vec<(String, Option<i64>)> = vec![
            (jwt(r#"{"exp":1700000000}"#), Some(1_700_000_000)),
            (jwt(r#"{"exp":1700000000.9}"#), Some(1_700_000_000)),
            (jwt(r#"{"sub":"x"}"#), None),
            (jwt(r#"{"exp":"1700000000"}"#), None),
            (jwt(r#"{"exp":1e300}"#), None),
            (jwt("not json"), None),
            (jwt(r#"[1,2]"#), None),
            ("opaque-token".into(), None),
            ("a.b".into(), None),
            ("a.b.c.d".into(), None),
            ("a.!!!.c".into(), None),
            ("..".into(), None),
            (format!("{}=", jwt(r#"{"exp":5}"#)), Some(5)),
        ];
        for (token, expected) in cases {
            assert_eq!(jwt_exp(&token), expected, "{token}");
        }
        // Padded payload segments are tolerated.
        let padded = format!(
            "h.{}.s",
            base64::engine::general_purpose::URL_SAFE.encode(r#"{"exp":42}"#)
        );
        assert_eq!(jwt_exp(&padded), Some(42));
    }

    #[test]
    fn upstream_header_value_and_replacement() {
        let token: Token = "t0k".parse().unwrap();
        let plain = TokenRules::default();
        assert_eq!(plain.header_value(&token), "t0k");
        let bearer = TokenRules::new("Authorization", "Bearer").unwrap();
        assert_eq!(bearer.header(), "authorization");
        assert_eq!(bearer.header_value(&token), "Bearer t0k");

        let mut headers: Headers = [("Authorization", "Bearer forged"), ("accept", "x")]
            .into_iter()
            .collect();
        bearer.apply(&mut headers, None);
        assert!(!headers.contains("authorization"), "forged header kept");
        bearer.apply(&mut headers, Some(&token));
        assert_eq!(headers.get("authorization"), Some(&b"Bearer t0k"[..]));
        assert_eq!(headers.get_all("authorization").count(), 1);
    }

    #[test]
    fn client_headers_that_could_carry_a_token_are_removed() {
        let token: Token = "t0k".parse().unwrap();
        let forged = || -> Headers {
            [
                ("auth-token", "forged-1"),
                ("Auth_Token", "forged-2"),
                ("AUTH_TOKEN", "forged-3"),
                ("authorization", "Bearer forged-4"),
                ("x-api-key", "forged-5"),
                ("x_api_key", "forged-6"),
                ("auth-tokens", "kept"),
                ("accept", "x"),
            ]
            .into_iter()
            .collect()
        };
        let rules = TokenRules::default();
        let mut headers = forged();
        rules.apply(&mut headers, Some(&token));
        let names: Vec<&str> = headers.iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            ["x-api-key", "x_api_key", "auth-tokens", "accept", "auth-token"]
        );
        assert_eq!(headers.get("auth-token"), Some(&b"t0k"[..]));

        let more = TokenRules::default()
            .dropping(&["Authorization", "X-API-Key"])
            .unwrap();
        let mut headers = forged();
        more.apply(&mut headers, None);
        let names: Vec<&str> = headers.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["auth-tokens", "accept"]);

        // An empty list forwards the client's Authorization (deliberately).
        let none = TokenRules::default().dropping::<&str>(&[]).unwrap();
        let mut headers = forged();
        none.apply(&mut headers, None);
        assert!(headers.contains("authorization"));
        assert!(!headers.contains("auth_token"));

        assert!(TokenRules::default().dropping(&["bad name"]).is_err());
    }

    #[test]
    fn bad_rules_are_refused() {
        assert!(TokenRules::new("", "").is_err());
        assert!(TokenRules::new("bad header", "").is_err());
        assert!(TokenRules::new("cookie", "").is_err());
        assert!(TokenRules::new("Connection", "").is_err());
        assert!(TokenRules::new("x-auth", "Bad Scheme").is_err());
        assert!(TokenRules::new("x-auth", " Bearer ").is_ok());
    }
}
