//! The auth cookie: its attributes, sealing the token into it (AEAD, keyed,
//! bound to the cookie's name), opening it from a `Cookie` header with key
//! rotation, and deleting it.

use std::fmt;

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use base64::Engine as _;
use cookie::{Cookie, Key};

use crate::error::SettingError;
use crate::token::{Token, TokenError};

/// Browsers keep at most this many bytes of one cookie's name and value.
pub const MAX_COOKIE_BYTES: usize = 4096;

/// How many cookies of the auth name one request may make tokenjar try to
/// open. Browsers send at most a few (one per matching path/domain); a header
/// stuffed with hundreds must not cost hundreds of decryptions.
const MAX_CANDIDATES: usize = 4;

/// The decoded length of one cookie key: 32 bytes for encryption, 32 more
/// that the `cookie` crate reserves for signing.
pub const KEY_LEN: usize = 64;

/// The `SameSite` attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SameSite {
    /// Sent only on same-site requests.
    Strict,
    /// Also sent on top-level cross-site navigations (the default).
    Lax,
    /// Sent on every request; requires `Secure`.
    None,
}

impl SameSite {
    /// Parses `strict`, `lax` or `none` (any case).
    ///
    /// # Errors
    /// The `same_site` problem, listing the accepted values.
    pub fn parse(value: &str) -> Result<Self, Vec<SettingError>> {
        match value.to_ascii_lowercase().as_str() {
            "strict" => Ok(Self::Strict),
            "lax" => Ok(Self::Lax),
            "none" => Ok(Self::None),
            _ => Err(vec![SettingError::new(
                "same_site",
                format!("{value:?} is not one of strict, lax, none"),
            )]),
        }
    }

    fn to_cookie(self) -> cookie::SameSite {
        match self {
            Self::Strict => cookie::SameSite::Strict,
            Self::Lax => cookie::SameSite::Lax,
            Self::None => cookie::SameSite::None,
        }
    }
}

/// The auth cookie's name and attributes, as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CookiePolicy {
    /// Cookie name.
    pub name: String,
    /// The `Secure` attribute.
    pub secure: bool,
    /// The `SameSite` attribute.
    pub same_site: SameSite,
    /// The `Path` attribute.
    pub path: String,
    /// The `Domain` attribute, only for deliberate cross-subdomain use.
    pub domain: Option<String>,
    /// Fixed lifetime in seconds; 0 lets the token's JWT `exp` decide.
    pub max_age_s: u64,
    /// Seal the token (AEAD) rather than store it in clear.
    pub encrypt: bool,
}

impl Default for CookiePolicy {
    fn default() -> Self {
        Self {
            name: "auth-token".to_owned(),
            secure: true,
            same_site: SameSite::Lax,
            path: "/".to_owned(),
            domain: None,
            max_age_s: 0,
            encrypt: true,
        }
    }
}

impl CookiePolicy {
    /// Every problem with the policy, as `(key, message)` pairs naming the
    /// `cookie.*` setting at fault. Empty when the policy is usable.
    pub fn problems(&self) -> Vec<SettingError> {
        let mut problems = Vec::new();
        if !crate::headers::is_valid_name(&self.name) {
            problems.push(SettingError::new(
                "name",
                format!("{:?} is not a valid cookie name", self.name),
            ));
        }
        if self.same_site == SameSite::None && !self.secure {
            problems.push(SettingError::new(
                "same_site",
                "\"none\" requires cookie.secure = true (browsers reject it otherwise)".to_owned(),
            ));
        }
        let host_prefix = self.name.starts_with("__Host-");
        if (host_prefix || self.name.starts_with("__Secure-")) && !self.secure {
            problems.push(SettingError::new(
                "secure",
                "a __Host- or __Secure- cookie name requires cookie.secure = true".to_owned(),
            ));
        }
        if host_prefix && self.path != "/" {
            problems.push(SettingError::new(
                "path",
                "a __Host- cookie must have path \"/\"".to_owned(),
            ));
        }
        if host_prefix && self.domain.is_some() {
            problems.push(SettingError::new(
                "domain",
                "a __Host- cookie cannot have a domain".to_owned(),
            ));
        }
        if !self.path.starts_with('/') || !is_attribute_value(&self.path) {
            problems.push(SettingError::new(
                "path",
                format!(
                    "{:?} must start with / and hold no ; or control characters",
                    self.path
                ),
            ));
        }
        if let Some(domain) = &self.domain {
            let ok = !domain.is_empty()
                && domain
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if !ok {
                problems.push(SettingError::new(
                    "domain",
                    format!("{domain:?} is not a domain name"),
                ));
            }
        }
        problems
    }

    /// The policy if it is usable.
    ///
    /// # Errors
    /// Every problem [`problems`](Self::problems) finds.
    pub fn checked(self) -> Result<Self, Vec<SettingError>> {
        let problems = self.problems();
        if problems.is_empty() {
            Ok(self)
        } else {
            Err(problems)
        }
    }
}

fn is_attribute_value(v: &str) -> bool {
    v.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b';')
}

/// Why the configured keys cannot be used. Never holds the key itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key at this index is not standard base64.
    #[error("key #{index} is not valid base64")]
    NotBase64 {
        /// Position in `cookie.keys`.
        index: usize,
    },
    /// The key at this index does not decode to [`KEY_LEN`] bytes.
    #[error("key #{index} decodes to {len} bytes, expected {KEY_LEN} (use `tokenjar keygen`)")]
    WrongLength {
        /// Position in `cookie.keys`.
        index: usize,
        /// Decoded length.
        len: usize,
    },
}

/// The cookie keys: the first seals, every one opens (rotation).
///
/// Sealing goes through the `cookie` crate's private jar. Opening, which
/// happens on every request, uses the same AES-256-GCM from RustCrypto
/// directly with each key's schedule computed once here, instead of the
/// jar's per-call key setup; the format is the jar's own —
/// `base64(nonce ‖ ciphertext ‖ tag)`, the cookie name as associated data.
#[derive(Clone)]
pub struct CookieKeys {
    keys: Vec<Key>,
    openers: Vec<Aes256Gcm>,
}

/// Bytes of the AES-GCM nonce at the front of a sealed value.
const NONCE_LEN: usize = 12;
/// Bytes of the AES-GCM tag at the end.
const TAG_LEN: usize = 16;

impl fmt::Debug for CookieKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CookieKeys({} keys, <redacted>)", self.keys.len())
    }
}

impl CookieKeys {
    /// Decodes base64 (standard alphabet) keys of [`KEY_LEN`] bytes each.
    /// An empty list is allowed here; the caller decides whether to
    /// [`generate`](Self::generate) one.
    ///
    /// # Errors
    /// The first key that is not base64 or has the wrong length.
    pub fn from_base64<S: AsRef<str>>(encoded: &[S]) -> Result<Self, KeyError> {
        let mut keys = Vec::with_capacity(encoded.len());
        for (index, text) in encoded.iter().enumerate() {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text.as_ref().trim())
                .map_err(|_| KeyError::NotBase64 { index })?;
            if bytes.len() != KEY_LEN {
                return Err(KeyError::WrongLength {
                    index,
                    len: bytes.len(),
                });
            }
            let key = Key::try_from(bytes.as_slice()).map_err(|_| KeyError::WrongLength {
                index,
                len: bytes.len(),
            })?;
            keys.push(key);
        }
        Ok(Self::from_keys(keys))
    }

    fn from_keys(keys: Vec<Key>) -> Self {
        let openers = keys
            .iter()
            .filter_map(|key| Aes256Gcm::new_from_slice(key.encryption()).ok())
            .collect();
        Self { keys, openers }
    }

    /// Opens a sealed value for cookie `name` with each key in turn.
    fn open(&self, name: &str, value: &str) -> Option<String> {
        let data = base64::engine::general_purpose::STANDARD.decode(value).ok()?;
        if data.len() < NONCE_LEN + TAG_LEN {
            return None;
        }
        let (nonce, sealed) = data.split_at(NONCE_LEN);
        let nonce = Nonce::from_slice(nonce);
        self.openers.iter().find_map(|cipher| {
            let mut buffer = sealed.to_vec();
            cipher
                .decrypt_in_place(nonce, name.as_bytes(), &mut buffer)
                .ok()?;
            String::from_utf8(buffer).ok()
        })
    }

    /// One fresh random key (from the operating system's generator).
    pub fn generate() -> Self {
        Self::from_keys(vec![Key::generate()])
    }

    /// A fresh random key, base64 (standard alphabet), as `tokenjar keygen`
    /// prints it.
    pub fn generate_base64() -> String {
        base64::engine::general_purpose::STANDARD.encode(Key::generate().master())
    }

    /// Whether there is no key at all.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }
}

/// An auth cookie that opened: the token and when it stops being valid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// The API token.
    pub token: Token,
    /// Unix seconds after which the session is over, when known.
    pub expires_at: Option<i64>,
}

/// Why a present auth cookie was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// It did not open with any key: tampered, foreign, or garbage.
    Unopenable,
    /// It opened but its lifetime is over.
    Expired,
}

/// What the request's auth cookie amounts to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CookieState {
    /// No auth cookie was sent.
    Absent,
    /// An auth cookie opened and is current.
    Valid(Session),
    /// An auth cookie was sent but cannot be used; it counts as absent and
    /// the response deletes it.
    Rejected(Rejection),
}

impl CookieState {
    /// The session's token, if any.
    pub fn token(&self) -> Option<&Token> {
        match self {
            Self::Valid(session) => Some(&session.token),
            _ => None,
        }
    }
}

/// A cookie to set: the `Set-Cookie` value and the session expiry it carries.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedCookie {
    /// The whole `Set-Cookie` header value.
    pub set_cookie: String,
    /// Unix seconds when the session ends, when known.
    pub expires_at: Option<i64>,
}

impl fmt::Debug for IssuedCookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCookie")
            .field("set_cookie", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Why a cookie could not be issued for a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CookieError {
    /// The token cannot be carried at all.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The cookie would exceed what browsers store.
    #[error("the cookie would exceed the {MAX_COOKIE_BYTES} bytes browsers keep")]
    TooLarge,
    /// Sealing was asked for but no key is configured.
    #[error("no cookie key to seal with")]
    NoKey,
}

/// Seals, opens, issues and deletes the auth cookie under one policy and key
/// set. Cheap to share: build once at start-up.
#[derive(Clone, Debug)]
pub struct CookieJar {
    policy: CookiePolicy,
    keys: CookieKeys,
}

impl CookieJar {
    /// A jar for `policy`. With `policy.encrypt`, `keys` must not be empty
    /// for [`issue`](Self::issue) to succeed.
    pub fn new(policy: CookiePolicy, keys: CookieKeys) -> Self {
        Self { policy, keys }
    }

    /// The policy in force.
    pub fn policy(&self) -> &CookiePolicy {
        &self.policy
    }

    /// The cookie name.
    pub fn name(&self) -> &str {
        &self.policy.name
    }

    /// The `Set-Cookie` value that stores `token`, at time `now` (Unix
    /// seconds). Lifetime: `max_age_s` if set, else the JWT `exp`, else a
    /// session cookie.
    ///
    /// # Errors
    /// [`CookieError`] when the token cannot be stored in a cookie.
    pub fn issue(&self, token: &Token, now: i64) -> Result<IssuedCookie, CookieError> {
        let expires_at = if self.policy.max_age_s > 0 {
            i64::try_from(self.policy.max_age_s)
                .ok()
                .and_then(|age| now.checked_add(age))
        } else {
            token.jwt_exp()
        };
        let value = if self.policy.encrypt {
            self.seal(token, expires_at)?
        } else {
            // Percent-encoded so that a token with `;`, `,` or a space cannot
            // break out of the cookie value.
            Cookie::new(self.policy.name.as_str(), token.expose())
                .encoded()
                .to_string()
                .split_once('=')
                .map(|(_, v)| v.to_owned())
                .unwrap_or_default()
        };
        if self.policy.name.len() + value.len() + 1 > MAX_COOKIE_BYTES {
            return Err(CookieError::TooLarge);
        }
        let max_age = expires_at.map(|exp| exp.saturating_sub(now).max(0));
        Ok(IssuedCookie {
            set_cookie: self.render(value, max_age),
            expires_at,
        })
    }

    /// The `Set-Cookie` value that deletes the cookie (same name, path and
    /// domain, `Max-Age=0`).
    pub fn removal(&self) -> String {
        self.render(String::new(), Some(0))
    }

    /// Opens the auth cookie from the request's `Cookie` header values at
    /// time `now` (Unix seconds).
    ///
    /// Every cookie of the auth name is tried (browsers may send several,
    /// one per matching path); the first that opens wins. Values that are
    /// not UTF-8 are read lossily: the auth cookie is ASCII, and a stray
    /// byte in another cookie must not hide it.
    pub fn open<'a>(&self, headers: impl IntoIterator<Item = &'a [u8]>, now: i64) -> CookieState {
        let mut rejection = None;
        let mut tried = 0;
        for header in headers {
            let text = crate::text::lossy_utf8(header);
            for cookie in Cookie::split_parse(text.as_ref()).flatten() {
                if cookie.name() != self.policy.name {
                    continue;
                }
                if tried == MAX_CANDIDATES {
                    return CookieState::Rejected(rejection.unwrap_or(Rejection::Unopenable));
                }
                tried += 1;
                match self.open_value(cookie.value_trimmed(), now) {
                    Ok(session) => return CookieState::Valid(session),
                    Err(why) => rejection = Some(why),
                }
            }
        }
        match rejection {
            Some(why) => CookieState::Rejected(why),
            None => CookieState::Absent,
        }
    }

    fn open_value(&self, value: &str, now: i64) -> Result<Session, Rejection> {
        let (token, expires_at) = if self.policy.encrypt {
            self.unseal(value).ok_or(Rejection::Unopenable)?
        } else {
            let decoded = percent_encoding::percent_decode_str(value)
                .decode_utf8()
                .map_err(|_| Rejection::Unopenable)?;
            let token = Token::new(decoded.into_owned()).map_err(|_| Rejection::Unopenable)?;
            let exp = token.jwt_exp();
            (token, exp)
        };
        if expires_at.is_some_and(|exp| now >= exp) {
            return Err(Rejection::Expired);
        }
        Ok(Session { token, expires_at })
    }

    /// The sealed plaintext is `<expires_at or empty>:<token>`: the expiry
    /// travels inside the AEAD so a copied cookie cannot outlive it.
    fn seal(&self, token: &Token, expires_at: Option<i64>) -> Result<String, CookieError> {
        let key = self.keys.keys.first().ok_or(CookieError::NoKey)?;
        let exp = expires_at.map(|e| e.to_string()).unwrap_or_default();
        let plaintext = format!("{exp}:{}", token.expose());
        let mut jar = cookie::CookieJar::new();
        jar.private_mut(key)
            .add(Cookie::new(self.policy.name.clone(), plaintext));
        jar.get(&self.policy.name)
            .map(|c| c.value().to_owned())
            .ok_or(CookieError::NoKey)
    }

    fn unseal(&self, value: &str) -> Option<(Token, Option<i64>)> {
        let plaintext = self.keys.open(&self.policy.name, value)?;
        let (exp, token) = plaintext.split_once(':')?;
        let exp = if exp.is_empty() {
            None
        } else {
            Some(exp.parse::<i64>().ok()?)
        };
        Some((Token::new(token.to_owned()).ok()?, exp))
    }

    fn render(&self, value: String, max_age: Option<i64>) -> String {
        let p = &self.policy;
        let mut builder = Cookie::build((p.name.clone(), value))
            .http_only(true)
            .secure(p.secure)
            .same_site(p.same_site.to_cookie())
            .path(p.path.clone());
        if let Some(domain) = &p.domain {
            builder = builder.domain(domain.clone());
        }
        if let Some(age) = max_age {
            builder = builder.max_age(cookie::time::Duration::seconds(age));
        }
        builder.build().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000;

    fn jar_with(policy: CookiePolicy, keys: CookieKeys) -> CookieJar {
        CookieJar::new(policy, keys)
    }

    fn jar() -> CookieJar {
        jar_with(CookiePolicy::default(), CookieKeys::generate())
    }

    fn tok(s: &str) -> Token {
        s.parse().unwrap()
    }

    /// The `name=value` pair a browser would send back for a `Set-Cookie`.
    fn pair(set_cookie: &str) -> String {
        set_cookie.split(';').next().unwrap().to_owned()
    }

    fn value(set_cookie: &str) -> String {
        pair(set_cookie).split_once('=').unwrap().1.to_owned()
    }

    fn jwt_with_exp(exp: i64) -> Token {
        let enc = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        tok(&format!(
            "{}.{}.sig",
            enc.encode("{}"),
            enc.encode(format!(r#"{{"exp":{exp}}}"#))
        ))
    }

    #[test]
    fn seal_then_open_gives_the_token_back() {
        let jar = jar();
        for t in [
            "a",
            "eyJ.abc.def",
            "with spaces; and, commas=\"quotes\"",
            &"x".repeat(2000),
        ] {
            let issued = jar.issue(&tok(t), NOW).unwrap();
            let state = jar.open([pair(&issued.set_cookie).as_bytes()], NOW);
            assert_eq!(state.token().map(Token::expose), Some(t));
        }
    }

    #[test]
    fn opening_matches_the_cookie_crates_private_jar() {
        let jar = jar();
        let key = &jar.keys.keys[0];
        // Sealed by the `cookie` crate itself: tokenjar's opener reads it.
        let mut sealed = cookie::CookieJar::new();
        sealed
            .private_mut(key)
            .add(Cookie::new("auth-token", format!("{}:tok-1", NOW + 60)));
        let by_crate = sealed.get("auth-token").unwrap().value().to_owned();
        let header = format!("auth-token={by_crate}");
        let state = jar.open([header.as_bytes()], NOW);
        assert_eq!(
            state,
            CookieState::Valid(Session {
                token: tok("tok-1"),
                expires_at: Some(NOW + 60)
            })
        );
        // And what tokenjar seals, the `cookie` crate opens.
        let issued = jar.issue(&tok("tok-2"), NOW).unwrap();
        let opened = cookie::CookieJar::new()
            .private(key)
            .decrypt(Cookie::new("auth-token", value(&issued.set_cookie)))
            .unwrap();
        assert_eq!(opened.value(), ":tok-2");
        // Too short to hold a nonce and a tag.
        let short = base64::engine::general_purpose::STANDARD.encode([0u8; NONCE_LEN + TAG_LEN - 1]);
        assert_eq!(
            jar.open([format!("auth-token={short}").as_bytes()], NOW),
            CookieState::Rejected(Rejection::Unopenable)
        );
    }

    #[test]
    fn sealed_value_never_contains_the_token() {
        let jar = jar();
        let token = tok("super-secret-token-value");
        let issued = jar.issue(&token, NOW).unwrap();
        assert!(!issued.set_cookie.contains("super-secret"));
        // Sealing twice gives different values (fresh nonce).
        let again = jar.issue(&token, NOW).unwrap();
        assert_ne!(value(&issued.set_cookie), value(&again.set_cookie));
    }

    #[test]
    fn attributes_follow_the_policy() {
        let issued = jar().issue(&tok("t"), NOW).unwrap().set_cookie;
        for attr in ["HttpOnly", "SameSite=Lax", "Secure", "Path=/"] {
            assert!(issued.contains(attr), "{attr} missing in {issued}");
        }
        assert!(!issued.contains("Max-Age"), "opaque token: session cookie");
        assert!(!issued.contains("Domain"));

        let policy = CookiePolicy {
            name: "sid".into(),
            secure: false,
            same_site: SameSite::Strict,
            path: "/app".into(),
            domain: Some("example.com".into()),
            max_age_s: 600,
            encrypt: true,
        };
        let issued = jar_with(policy, CookieKeys::generate())
            .issue(&tok("t"), NOW)
            .unwrap();
        assert_eq!(issued.expires_at, Some(NOW + 600));
        let s = issued.set_cookie;
        assert!(s.starts_with("sid="));
        for attr in [
            "HttpOnly",
            "SameSite=Strict",
            "Path=/app",
            "Domain=example.com",
            "Max-Age=600",
        ] {
            assert!(s.contains(attr), "{attr} missing in {s}");
        }
        assert!(!s.contains("Secure"));
    }

    #[test]
    fn expiry_follows_the_jwt_exp_unless_max_age_is_set() {
        let jar = jar();
        let issued = jar.issue(&jwt_with_exp(NOW + 3600), NOW).unwrap();
        assert_eq!(issued.expires_at, Some(NOW + 3600));
        assert!(issued.set_cookie.contains("Max-Age=3600"));
        // Already-expired token: the browser is told to drop it at once.
        let stale = jar.issue(&jwt_with_exp(NOW - 5), NOW).unwrap();
        assert!(stale.set_cookie.contains("Max-Age=0"));

        let fixed = jar_with(
            CookiePolicy {
                max_age_s: 60,
                ..CookiePolicy::default()
            },
            CookieKeys::generate(),
        );
        let issued = fixed.issue(&jwt_with_exp(NOW + 3600), NOW).unwrap();
        assert_eq!(issued.expires_at, Some(NOW + 60));
        assert!(issued.set_cookie.contains("Max-Age=60"));
    }

    #[test]
    fn an_expired_session_is_rejected_when_opened() {
        let jar = jar();
        let issued = jar.issue(&jwt_with_exp(NOW + 10), NOW).unwrap();
        let header = pair(&issued.set_cookie);
        assert!(matches!(
            jar.open([header.as_bytes()], NOW + 9),
            CookieState::Valid(_)
        ));
        assert_eq!(
            jar.open([header.as_bytes()], NOW + 10),
            CookieState::Rejected(Rejection::Expired)
        );
    }

    #[test]
    fn absent_when_no_auth_cookie_is_sent() {
        let jar = jar();
        let cases: &[&[u8]] = &[
            b"",
            b"other=1",
            b"auth-tokenx=1; xauth-token=2",
            b";;;",
            b"=",
            b"\xff\xfe",
        ];
        for case in cases {
            assert_eq!(jar.open([*case], NOW), CookieState::Absent, "{case:?}");
        }
        assert_eq!(jar.open(std::iter::empty::<&[u8]>(), NOW), CookieState::Absent);
    }

    #[test]
    fn tampered_or_foreign_cookies_are_rejected() {
        let jar = jar();
        let issued = jar.issue(&tok("tok"), NOW).unwrap();
        let good = value(&issued.set_cookie);
        let mut flipped = good.clone().into_bytes();
        flipped[5] = if flipped[5] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        let other_key = jar_with(CookiePolicy::default(), CookieKeys::generate())
            .issue(&tok("tok"), NOW)
            .unwrap();
        let cases = vec![
            format!("auth-token={flipped}"),
            format!("auth-token={}", &good[..good.len() - 4]),
            "auth-token=garbage".to_owned(),
            "auth-token=".to_owned(),
            "auth-token=tok".to_owned(),
            format!("auth-token={}", "A".repeat(64 * 1024)),
            pair(&other_key.set_cookie),
        ];
        for case in cases {
            assert_eq!(
                jar.open([case.as_bytes()], NOW),
                CookieState::Rejected(Rejection::Unopenable),
                "{case}"
            );
        }
    }

    #[test]
    fn a_cookie_sealed_under_another_name_does_not_open() {
        let keys = CookieKeys::from_base64(&[CookieKeys::generate_base64()]).unwrap();
        let other = jar_with(
            CookiePolicy {
                name: "other".into(),
                ..CookiePolicy::default()
            },
            keys.clone(),
        );
        let issued = other.issue(&tok("tok"), NOW).unwrap();
        let jar = jar_with(CookiePolicy::default(), keys);
        let header = format!("auth-token={}", value(&issued.set_cookie));
        assert_eq!(
            jar.open([header.as_bytes()], NOW),
            CookieState::Rejected(Rejection::Unopenable)
        );
    }

    #[test]
    fn duplicated_and_quoted_cookies() {
        let jar = jar();
        let good = pair(&jar.issue(&tok("tok"), NOW).unwrap().set_cookie);
        let quoted = format!("auth-token=\"{}\"", value(&good));
        let cases = vec![
            format!("auth-token=junk; {good}"),
            format!("{good}; auth-token=junk"),
            format!("a=1; {good}; b=2"),
            quoted,
            format!("bad=%zz; {good}"),
        ];
        for case in cases {
            assert_eq!(
                jar.open([case.as_bytes()], NOW).token().map(Token::expose),
                Some("tok"),
                "{case}"
            );
        }
        // Spread over several Cookie headers (HTTP/2 style).
        let state = jar.open([&b"a=1"[..], b"auth-token=junk", good.as_bytes()], NOW);
        assert_eq!(state.token().map(Token::expose), Some("tok"));
        // A stray non-UTF-8 byte elsewhere in the header does not hide it.
        let mut bytes = b"x=\xff\xfe; ".to_vec();
        bytes.extend_from_slice(good.as_bytes());
        assert_eq!(
            jar.open([bytes.as_slice()], NOW).token().map(Token::expose),
            Some("tok")
        );
    }

    #[test]
    fn stuffed_headers_stop_after_a_few_candidates() {
        let jar = jar();
        let good = pair(&jar.issue(&tok("tok"), NOW).unwrap().set_cookie);
        let stuffed = format!("{}{good}", "auth-token=junk; ".repeat(100));
        assert_eq!(
            jar.open([stuffed.as_bytes()], NOW),
            CookieState::Rejected(Rejection::Unopenable)
        );
    }

    #[test]
    fn rotation_first_key_seals_all_keys_open() {
        let k1 = CookieKeys::generate_base64();
        let k2 = CookieKeys::generate_base64();
        let old = jar_with(CookiePolicy::default(), CookieKeys::from_base64(&[&k1]).unwrap());
        let rotated = jar_with(
            CookiePolicy::default(),
            CookieKeys::from_base64(&[&k2, &k1]).unwrap(),
        );
        let retired = jar_with(CookiePolicy::default(), CookieKeys::from_base64(&[&k2]).unwrap());

        let old_cookie = pair(&old.issue(&tok("tok"), NOW).unwrap().set_cookie);
        assert!(rotated.open([old_cookie.as_bytes()], NOW).token().is_some());
        assert!(retired.open([old_cookie.as_bytes()], NOW).token().is_none());

        let new_cookie = pair(&rotated.issue(&tok("tok"), NOW).unwrap().set_cookie);
        assert!(retired.open([new_cookie.as_bytes()], NOW).token().is_some());
        assert!(old.open([new_cookie.as_bytes()], NOW).token().is_none());
    }

    #[test]
    fn clear_mode_stores_the_token_and_reads_it_back() {
        let jar = jar_with(
            CookiePolicy {
                encrypt: false,
                ..CookiePolicy::default()
            },
            CookieKeys::from_base64::<&str>(&[]).unwrap(),
        );
        let issued = jar.issue(&tok("plain-tok"), NOW).unwrap();
        assert_eq!(pair(&issued.set_cookie), "auth-token=plain-tok");
        let odd = jar.issue(&tok("a; b=c"), NOW).unwrap();
        assert!(!pair(&odd.set_cookie).contains(';'));
        let state = jar.open([pair(&odd.set_cookie).as_bytes()], NOW);
        assert_eq!(state.token().map(Token::expose), Some("a; b=c"));
        assert_eq!(
            jar.open([&b"auth-token=%0d%0a"[..]], NOW),
            CookieState::Rejected(Rejection::Unopenable)
        );
    }

    #[test]
    fn sealing_without_a_key_fails_cleanly() {
        let jar = jar_with(
            CookiePolicy::default(),
            CookieKeys::from_base64::<&str>(&[]).unwrap(),
        );
        assert_eq!(jar.issue(&tok("t"), NOW), Err(CookieError::NoKey));
        assert_eq!(
            jar.open([&b"auth-token=abc"[..]], NOW),
            CookieState::Rejected(Rejection::Unopenable)
        );
    }

    #[test]
    fn removal_deletes_with_the_same_scope() {
        let policy = CookiePolicy {
            path: "/app".into(),
            domain: Some("example.com".into()),
            ..CookiePolicy::default()
        };
        let removal = jar_with(policy, CookieKeys::generate()).removal();
        assert!(removal.starts_with("auth-token=;"), "{removal}");
        for attr in ["Max-Age=0", "Path=/app", "Domain=example.com", "HttpOnly"] {
            assert!(removal.contains(attr), "{attr} missing in {removal}");
        }
    }

    #[test]
    fn keys_must_be_64_bytes_of_base64_and_are_never_printed() {
        assert_eq!(
            CookieKeys::from_base64(&["not base64!"]).map(|_| ()),
            Err(KeyError::NotBase64 { index: 0 })
        );
        let short = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let good = CookieKeys::generate_base64();
        assert_eq!(
            CookieKeys::from_base64(&[good.as_str(), short.as_str()]).map(|_| ()),
            Err(KeyError::WrongLength { index: 1, len: 32 })
        );
        let keys = CookieKeys::from_base64(&[good.as_str()]).unwrap();
        assert_eq!(keys.len(), 1);
        assert!(!format!("{keys:?}").contains(&good[..10]));
        let decoded = base64::engine::general_purpose::STANDARD.decode(&good).unwrap();
        assert_eq!(decoded.len(), KEY_LEN);
        assert_ne!(good, CookieKeys::generate_base64());
    }

    #[test]
    fn policy_problems_name_the_key() {
        let check = |policy: CookiePolicy, expected: &[&str]| {
            let keys: Vec<&str> = policy.problems().into_iter().map(|p| p.key).collect();
            assert_eq!(keys, expected, "{policy:?}");
        };
        check(CookiePolicy::default(), &[]);
        check(
            CookiePolicy {
                same_site: SameSite::None,
                secure: false,
                ..CookiePolicy::default()
            },
            &["same_site"],
        );
        check(
            CookiePolicy {
                name: "__Host-sid".into(),
                secure: false,
                path: "/x".into(),
                domain: Some("a.com".into()),
                ..CookiePolicy::default()
            },
            &["secure", "path", "domain"],
        );
        check(
            CookiePolicy {
                name: "bad name".into(),
                path: "nope;".into(),
                domain: Some("a b".into()),
                ..CookiePolicy::default()
            },
            &["name", "path", "domain"],
        );
        assert_eq!(SameSite::parse("LAX"), Ok(SameSite::Lax));
        assert!(SameSite::parse("sometimes").is_err());
    }
}
