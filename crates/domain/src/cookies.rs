//! The auth cookie: its attributes, sealing the token into it (AEAD, keyed,
//! bound to the cookie's name), opening it from a `Cookie` header with key
//! rotation (every auth cookie sent is tried, and two sessions at once count
//! as none), splitting a session too long for one cookie into numbered
//! chunks and joining them again (SPEC §15), and deleting it.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use base64::Engine as _;
use cookie::{Cookie, Key};
use subtle::ConstantTimeEq as _;

use crate::ports::{Random, RandomError};
use crate::setting::SettingError;
use crate::token::{Grant, Token, TokenError};

/// Browsers keep at most this many bytes of one cookie's name and value.
pub const MAX_COOKIE_BYTES: usize = 4096;

/// Bytes of name and value one cookie tokenjar writes may hold (SPEC §15):
/// a session longer than this is split into chunks. Below
/// [`MAX_COOKIE_BYTES`] so that `=` and a browser's own accounting never
/// tip a cookie over the edge.
pub const CHUNK_BYTES: usize = 4000;

/// The default of `cookie.max_chunks`.
pub const DEFAULT_MAX_CHUNKS: usize = 4;

/// The most chunks `cookie.max_chunks` may allow, and so the highest chunk
/// index (minus one) tokenjar ever reads or deletes: a request header
/// cannot make it join more than this many values.
pub const MAX_CHUNKS_LIMIT: usize = 16;

/// How many combinations of duplicated chunk values are tried before a
/// request's chunks count as ambiguous ([`CookieState::Conflicting`]).
const MAX_CHUNK_COMBINATIONS: usize = 16;

/// The default cookie name. The `__Host-` prefix makes browsers refuse the
/// cookie unless it is `Secure`, host-only and `Path=/`, set over https: no
/// sibling subdomain and no one on plain http can plant (toss) one beside it.
pub const DEFAULT_NAME: &str = "__Host-auth-token";

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
            name: DEFAULT_NAME.to_owned(),
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

#[cfg(test)]
thread_local! {
    /// AES-GCM openings tried on this thread: lets a test count what a header
    /// costs without timing it.
    static DECRYPTIONS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
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
            #[cfg(test)]
            DECRYPTIONS.with(|count| count.set(count.get() + 1));
            let mut buffer = sealed.to_vec();
            cipher
                .decrypt_in_place(nonce, name.as_bytes(), &mut buffer)
                .ok()?;
            String::from_utf8(buffer).ok()
        })
    }

    /// One fresh key from `random`.
    ///
    /// # Errors
    /// [`RandomError`] when `random` fails.
    pub fn generate(random: &dyn Random) -> Result<Self, RandomError> {
        Ok(Self::from_keys(vec![random_key(random)?]))
    }

    /// A fresh key from `random`, base64 (standard alphabet), as `tokenjar
    /// keygen` prints it.
    ///
    /// # Errors
    /// [`RandomError`] when `random` fails.
    pub fn generate_base64(random: &dyn Random) -> Result<String, RandomError> {
        Ok(base64::engine::general_purpose::STANDARD.encode(random_key(random)?.master()))
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

/// An auth cookie that opened: the tokens and when they stop being valid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// The API (access) token.
    pub token: Token,
    /// Unix seconds after which the session is over, when known.
    pub expires_at: Option<i64>,
    /// Unix seconds when the access token expires, when known (SPEC §14);
    /// the session itself may live on, to refresh it.
    pub access_expires_at: Option<i64>,
    /// The refresh token, when the login gave one.
    pub refresh: Option<Token>,
    /// What the session keeps of the user (OIDC mode), as JSON text.
    pub profile: Option<String>,
}

impl Session {
    /// A session of `token` alone whose access token and session both end
    /// at `expires_at`: what a cookie of the first format (no refresh
    /// token) holds.
    pub fn of_token(token: Token, expires_at: Option<i64>) -> Self {
        Self {
            token,
            expires_at,
            access_expires_at: expires_at,
            refresh: None,
            profile: None,
        }
    }
}

/// Why a present auth cookie was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// It did not open with any key: tampered, foreign, or garbage.
    Unopenable,
    /// It opened but its lifetime is over.
    Expired,
}

/// What the request's auth cookies amount to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CookieState {
    /// No auth cookie was sent.
    Absent,
    /// One session opened and is current (from one cookie, or from several
    /// that hold the same token), whatever else was sent beside it.
    Valid(Session),
    /// Auth cookies were sent but none opens to a current session; they
    /// count as absent and the response deletes the cookie.
    Rejected(Rejection),
    /// Cookies opened to two different sessions. Usually one was tossed by
    /// someone else (a sibling subdomain, or anyone on plain http, can set a
    /// cookie of this name with a longer path, which the browser sends
    /// first); or an old one lives on under a former `Path` or `Domain`.
    /// Neither is used, and nothing is deleted: a deletion would remove
    /// whichever cookie matches tokenjar's own path and domain, quite
    /// possibly the victim's. Holds no token, so its `Debug` shows none.
    Conflicting,
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

/// A session to set: its `Set-Cookie` values and the expiry it carries.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedCookie {
    /// The `Set-Cookie` header values, one per header: the session's own
    /// cookies (`<name>` alone, or `<name>.0`, `<name>.1`, … in order), then
    /// the deletions of every cookie of the old session they do not
    /// overwrite.
    pub set_cookies: Vec<String>,
    /// Unix seconds when the session ends, when known.
    pub expires_at: Option<i64>,
}

impl fmt::Debug for IssuedCookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCookie")
            .field(
                "set_cookies",
                &format_args!("<{} redacted>", self.set_cookies.len()),
            )
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
    /// The session would need more cookies than `cookie.max_chunks`.
    #[error("the session would need more than cookie.max_chunks ({max_chunks}) cookies")]
    TooLarge {
        /// The `cookie.max_chunks` in force.
        max_chunks: usize,
    },
    /// Sealing was asked for but no key is configured.
    #[error("no cookie key to seal with")]
    NoKey,
    /// No nonce could be had to seal with.
    #[error(transparent)]
    Random(#[from] RandomError),
}

/// Seals, opens, issues and deletes the auth cookie under one policy and key
/// set. Cheap to share: build once at start-up.
#[derive(Clone, Debug)]
pub struct CookieJar {
    policy: CookiePolicy,
    keys: CookieKeys,
    max_chunks: usize,
}

/// Which cookie of the auth family a cookie name is: `<name>` itself, or
/// chunk `<name>.<index>` (SPEC §15).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// `<name>`: a session that fits in one cookie.
    Whole,
    /// `<name>.<index>`, the index below [`MAX_CHUNKS_LIMIT`] and written
    /// the one way tokenjar writes it (no sign, no leading zero), so that a
    /// name stands for one chunk only.
    Chunk(usize),
}

impl Part {
    /// Which part of the family named `base` the cookie `name` is, if any.
    pub fn of(base: &str, name: &str) -> Option<Self> {
        let rest = name.strip_prefix(base)?;
        if rest.is_empty() {
            return Some(Self::Whole);
        }
        let digits = rest.strip_prefix('.')?;
        let canonical = !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
            && (digits == "0" || !digits.starts_with('0'));
        if !canonical || digits.len() > 2 {
            return None;
        }
        let index: usize = digits.parse().ok()?;
        (index < MAX_CHUNKS_LIMIT).then_some(Self::Chunk(index))
    }
}

/// The cookies of the auth family a request carried, by name only: what
/// must be deleted when the session is replaced or ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Carried {
    /// `<name>` was sent.
    whole: bool,
    /// Bit `i` set: `<name>.i` was sent.
    chunks: u32,
}

impl Carried {
    /// Whether no cookie of the family was sent.
    pub fn is_empty(&self) -> bool {
        !self.whole && self.chunks == 0
    }

    fn add(&mut self, part: Part) {
        match part {
            Part::Whole => self.whole = true,
            Part::Chunk(index) => self.chunks |= 1 << index,
        }
    }

    fn chunk_indices(self) -> impl Iterator<Item = usize> {
        (0..MAX_CHUNKS_LIMIT).filter(move |i| self.chunks & (1 << i) != 0)
    }
}

impl CookieJar {
    /// A jar for `policy`, splitting a session into at most
    /// [`DEFAULT_MAX_CHUNKS`] cookies. With `policy.encrypt`, `keys` must
    /// not be empty for [`issue`](Self::issue) to succeed.
    pub fn new(policy: CookiePolicy, keys: CookieKeys) -> Self {
        Self {
            policy,
            keys,
            max_chunks: DEFAULT_MAX_CHUNKS,
        }
    }

    /// The same jar allowing a session `max_chunks` cookies
    /// (`cookie.max_chunks`), held to 1 ..= [`MAX_CHUNKS_LIMIT`]: the
    /// settings refuse any other value, and the jar must not read more
    /// chunks than it could ever have written.
    #[must_use]
    pub fn with_max_chunks(mut self, max_chunks: usize) -> Self {
        self.max_chunks = max_chunks.clamp(1, MAX_CHUNKS_LIMIT);
        self
    }

    /// The most cookies one session may be split into.
    pub fn max_chunks(&self) -> usize {
        self.max_chunks
    }

    /// The policy in force.
    pub fn policy(&self) -> &CookiePolicy {
        &self.policy
    }

    /// The cookie name.
    pub fn name(&self) -> &str {
        &self.policy.name
    }

    /// The `Set-Cookie` values that store `token` for a request that carried
    /// no auth cookie: [`issue_replacing`](Self::issue_replacing) with a
    /// grant of `token` alone and nothing to replace.
    ///
    /// # Errors
    /// As [`issue_replacing`](Self::issue_replacing).
    pub fn issue(&self, token: &Token, now: i64, random: &dyn Random) -> Result<IssuedCookie, CookieError> {
        self.issue_replacing(
            &Grant::access_only(token.clone()),
            now,
            random,
            Carried::default(),
        )
    }

    /// The `Set-Cookie` values that store `grant`, at time `now` (Unix
    /// seconds), sealed with a nonce from `random`, replacing the auth
    /// cookies the request `carried`. Lifetime (SPEC §6, §14):
    /// `max_age_s` if set; else, with a refresh token, that token's JWT
    /// `exp` (a session cookie when it has none), since the session lives
    /// on past each access token; else the access token's expiry.
    ///
    /// A value that fits (name and value within [`CHUNK_BYTES`]) is set as
    /// `<name>` alone; a longer one is cut into `<name>.0`, `<name>.1`, …,
    /// each within [`CHUNK_BYTES`] and with the same attributes. Every
    /// carried cookie the new ones do not overwrite is deleted, so no stale
    /// chunk (nor a stale whole cookie) can later be joined to the new
    /// session.
    ///
    /// In clear mode (`encrypt = false`) only the access token is stored:
    /// a refresh token is never kept in clear (the settings refuse refresh
    /// without sealing).
    ///
    /// # Errors
    /// [`CookieError::TooLarge`] when the session needs more than
    /// `max_chunks` cookies; [`CookieError`] when the token cannot be
    /// stored in a cookie, or no nonce could be had.
    pub fn issue_replacing(
        &self,
        grant: &Grant,
        now: i64,
        random: &dyn Random,
        carried: Carried,
    ) -> Result<IssuedCookie, CookieError> {
        let expires_at = self.expires_at(grant, now);
        let value = if self.policy.encrypt {
            self.seal(grant, expires_at, random)?
        } else {
            // Percent-encoded so that a token with `;`, `,` or a space cannot
            // break out of the cookie value.
            Cookie::new(self.policy.name.as_str(), grant.access.expose())
                .encoded()
                .to_string()
                .split_once('=')
                .map(|(_, v)| v.to_owned())
                .unwrap_or_default()
        };
        let max_age = expires_at.map(|exp| exp.saturating_sub(now).max(0));
        let name = &self.policy.name;
        let mut written = Carried::default();
        let mut set_cookies = Vec::new();
        if name.len() + value.len() <= CHUNK_BYTES {
            written.add(Part::Whole);
            set_cookies.push(self.render(name, value, max_age));
        } else {
            // The value is ASCII (base64, or percent-encoded in clear mode),
            // so any byte is a place to cut; the whole is checked after the
            // join, not each piece.
            let mut rest = value.as_str();
            let mut index = 0;
            while !rest.is_empty() {
                let chunk_name = format!("{name}.{index}");
                let room = CHUNK_BYTES.saturating_sub(chunk_name.len());
                if index >= self.max_chunks || room == 0 {
                    return Err(CookieError::TooLarge {
                        max_chunks: self.max_chunks,
                    });
                }
                let cut = room.min(rest.len());
                let (piece, after) = rest.split_at_checked(cut).ok_or(CookieError::TooLarge {
                    max_chunks: self.max_chunks,
                })?;
                written.add(Part::Chunk(index));
                set_cookies.push(self.render(&chunk_name, piece.to_owned(), max_age));
                rest = after;
                index += 1;
            }
        }
        set_cookies.extend(self.removals_beyond(carried, written));
        Ok(IssuedCookie {
            set_cookies,
            expires_at,
        })
    }

    /// When a session of `grant` issued at `now` ends: `cookie.max_age_s`
    /// from now when set, else with its refresh token's JWT `exp` when it
    /// has one, else with its access token; `None` when unknown.
    pub fn expires_at(&self, grant: &Grant, now: i64) -> Option<i64> {
        if self.policy.max_age_s > 0 {
            i64::try_from(self.policy.max_age_s)
                .ok()
                .and_then(|age| now.checked_add(age))
        } else if let Some(refresh) = &grant.refresh {
            refresh.jwt_exp()
        } else {
            grant.access_expires_at
        }
    }

    /// A session of `grant` ending at `expires_at`, sealed for a session
    /// store (SPEC §17): the cookie's plaintext format under the same keys,
    /// bound to another name (`<name>-stored`), so a stored value never
    /// opens as a cookie nor a cookie as a stored value.
    ///
    /// # Errors
    /// [`CookieError::NoKey`] without a key, or no nonce could be had.
    pub fn seal_stored(
        &self,
        grant: &Grant,
        expires_at: Option<i64>,
        random: &dyn Random,
    ) -> Result<String, CookieError> {
        self.seal_text(&self.stored_name(), session_text(grant, expires_at), random)
    }

    /// The session a value sealed by [`seal_stored`](Self::seal_stored)
    /// holds, if it opens and has not ended at `now`.
    ///
    /// # Errors
    /// [`Rejection`]: it does not open (foreign, truncated, garbage), or
    /// the session ended.
    pub fn open_stored(&self, value: &[u8], now: i64) -> Result<Session, Rejection> {
        let value = std::str::from_utf8(value).map_err(|_| Rejection::Unopenable)?;
        let plaintext = self
            .keys
            .open(&self.stored_name(), value)
            .ok_or(Rejection::Unopenable)?;
        let session = parse_session(&plaintext).ok_or(Rejection::Unopenable)?;
        if session.expires_at.is_some_and(|exp| now >= exp) {
            return Err(Rejection::Expired);
        }
        Ok(session)
    }

    fn stored_name(&self) -> String {
        format!("{}-stored", self.policy.name)
    }

    /// The `Set-Cookie` value that deletes the `<name>` cookie (same name,
    /// path and domain, `Max-Age=0`).
    pub fn removal(&self) -> String {
        self.render(&self.policy.name, String::new(), Some(0))
    }

    /// The `Set-Cookie` values that end a session whose request `carried`
    /// these auth cookies: `<name>` always (a logout deletes it even when
    /// it was not sent, as before chunks), and each chunk that was sent.
    pub fn removals(&self, carried: Carried) -> Vec<String> {
        let mut all = vec![self.removal()];
        all.extend(self.removals_beyond(
            Carried {
                whole: false,
                ..carried
            },
            Carried::default(),
        ));
        all
    }

    /// Deletions of the `carried` cookies that `written` does not overwrite.
    fn removals_beyond(&self, carried: Carried, written: Carried) -> Vec<String> {
        let mut all = Vec::new();
        if carried.whole && !written.whole {
            all.push(self.removal());
        }
        let name = &self.policy.name;
        for index in carried.chunk_indices() {
            if written.chunks & (1 << index) == 0 {
                all.push(self.render(&format!("{name}.{index}"), String::new(), Some(0)));
            }
        }
        all
    }

    /// The auth cookies (`<name>` and its chunks) the request's `Cookie`
    /// header values carry, by name: what a new session or a logout must
    /// delete.
    pub fn carried<'a>(&self, headers: impl IntoIterator<Item = &'a [u8]>) -> Carried {
        let mut carried = Carried::default();
        for header in headers {
            let text = crate::text::lossy_utf8(header);
            for cookie in Cookie::split_parse(text.as_ref()).flatten() {
                if let Some(part) = Part::of(&self.policy.name, cookie.name()) {
                    carried.add(part);
                }
            }
        }
        carried
    }

    /// Whether a cookie called `name` belongs to the auth family:
    /// `<name>` or one of its chunks.
    pub fn is_own(&self, name: &str) -> bool {
        Part::of(&self.policy.name, name).is_some()
    }

    /// Opens the auth cookie from the request's `Cookie` header values at
    /// time `now` (Unix seconds).
    ///
    /// Every cookie of the auth name is tried, since a browser sends one per
    /// matching path and domain, in an order an attacker can choose (a
    /// tossed cookie with a longer path goes first). So no position wins:
    /// the sessions that open must all hold one token, else the request has
    /// [`CookieState::Conflicting`] and no session; cookies that do not open
    /// (junk, expired) beside a session are ignored, and only when nothing
    /// opens is the cookie [`CookieState::Rejected`] (and deleted).
    ///
    /// Cost: a value already tried is skipped, so a header repeating one
    /// value costs one opening. Each distinct value costs a base64 decoding
    /// and, when that succeeds with at least a nonce and a tag, one AES-GCM
    /// tag check per key; the HTTP server's limit on the request head bounds
    /// how many there can be. Values that are not UTF-8 are read lossily:
    /// the auth cookie is ASCII, and a stray byte in another cookie must not
    /// hide it.
    ///
    /// Chunks (`<name>.0`, `<name>.1`, …) are joined in numeric order and
    /// the joined value is one more candidate, tried like a `<name>` value.
    /// A gap, more chunks than `max_chunks`, or a stale or foreign chunk
    /// leaves a value that does not open, since the AEAD covers the whole
    /// joined value: no chunk carries a MAC of its own. When one chunk index
    /// carries several values (cookies under several paths), each
    /// combination is tried, up to a few; beyond that the chunks are
    /// ambiguous and count as [`CookieState::Conflicting`].
    pub fn open<'a>(&self, headers: impl IntoIterator<Item = &'a [u8]>, now: i64) -> CookieState {
        let mut search = Search::default();
        for header in headers {
            // A UTF-8 header (nearly every one) lends its values to the
            // search for the whole request; a value of any other is copied.
            let text = crate::text::lossy_utf8(header);
            let conflict = match text {
                Cow::Borrowed(text) => self.try_header(text, Cow::Borrowed, &mut search, now),
                Cow::Owned(text) => self.try_header(&text, |v| Cow::Owned(v.to_owned()), &mut search, now),
            };
            if conflict {
                return CookieState::Conflicting;
            }
        }
        if self.open_chunks(&mut search, now) {
            return CookieState::Conflicting;
        }
        match (search.opened, search.rejection) {
            (Some(session), _) => CookieState::Valid(session),
            (None, Some(why)) => CookieState::Rejected(why),
            (None, None) => CookieState::Absent,
        }
    }

    /// Tries each auth cookie in one header's `text` whose value was not
    /// tried before; `keep` makes a value last as long as the search. True
    /// once two sessions have opened: the rest cannot change the answer.
    fn try_header<'t, 'a>(
        &self,
        text: &'t str,
        keep: impl Fn(&'t str) -> Cow<'a, str>,
        search: &mut Search<'a>,
        now: i64,
    ) -> bool {
        for cookie in Cookie::split_parse(text).flatten() {
            let Some(part) = Part::of(&self.policy.name, cookie.name()) else {
                continue;
            };
            // Parsed from a borrowed string, the raw value is always there;
            // the copy is only a fallback.
            let value = match cookie.value_raw() {
                Some(raw) => keep(unquote(raw)),
                None => Cow::Owned(cookie.value_trimmed().to_owned()),
            };
            let Part::Whole = part else {
                if let Part::Chunk(index) = part {
                    search.add_chunk(index, value);
                }
                continue;
            };
            // A clone of a borrowed value is a pointer copy.
            if !search.first_time(value.clone()) {
                continue;
            }
            if search.record(self.open_value(&value, now)) {
                return true;
            }
        }
        false
    }

    /// Joins the chunks found in numeric order and tries each joined value
    /// (one per combination of duplicated chunks) as a candidate session.
    /// True when the request is to count as
    /// [`CookieState::Conflicting`]: two sessions opened, or too many
    /// combinations to try.
    fn open_chunks(&self, search: &mut Search<'_>, now: i64) -> bool {
        let Some(last) = search.chunks.iter().rposition(|values| !values.is_empty()) else {
            return false;
        };
        let chunks = &search.chunks[..=last];
        // A gap or more chunks than a session may have: no join can open,
        // and nothing is worth a decryption.
        if last >= self.max_chunks || chunks.iter().any(Vec::is_empty) {
            search.rejection = Some(worse(search.rejection, Rejection::Unopenable));
            return false;
        }
        if search.chunk_overflow {
            return true;
        }
        let combinations = chunks
            .iter()
            .try_fold(1_usize, |n, values| n.checked_mul(values.len()))
            .filter(|&n| n <= MAX_CHUNK_COMBINATIONS);
        let Some(combinations) = combinations else {
            return true;
        };
        let mut results = Vec::with_capacity(combinations);
        for mut pick in 0..combinations {
            let mut joined = String::new();
            for values in chunks {
                let choice = pick % values.len();
                pick /= values.len();
                joined.push_str(values.get(choice).map_or("", |v| v.as_ref()));
            }
            results.push(self.open_value(&joined, now));
        }
        results.into_iter().any(|result| search.record(result))
    }

    fn open_value(&self, value: &str, now: i64) -> Result<Session, Rejection> {
        let session = if self.policy.encrypt {
            self.unseal(value).ok_or(Rejection::Unopenable)?
        } else {
            let decoded = percent_encoding::percent_decode_str(value)
                .decode_utf8()
                .map_err(|_| Rejection::Unopenable)?;
            let token = Token::new(decoded.into_owned()).map_err(|_| Rejection::Unopenable)?;
            let exp = token.jwt_exp();
            Session::of_token(token, exp)
        };
        if session.expires_at.is_some_and(|exp| now >= exp) {
            return Err(Rejection::Expired);
        }
        Ok(session)
    }

    /// The sealed plaintext is [`session_text`]'s. The expiries travel inside the AEAD so a
    /// copied cookie cannot outlive them. The value is what the `cookie`
    /// crate's private jar writes (and [`CookieKeys::open`] reads):
    /// `base64(nonce ‖ ciphertext ‖ tag)`, the cookie name as associated
    /// data, AES-256-GCM under the first key; only the nonce comes from the
    /// [`Random`] port instead of the OS.
    fn seal(
        &self,
        grant: &Grant,
        expires_at: Option<i64>,
        random: &dyn Random,
    ) -> Result<String, CookieError> {
        self.seal_text(&self.policy.name, session_text(grant, expires_at), random)
    }

    /// `text` sealed for a cookie called `name` under the first key, in the
    /// private jar's format (see [`seal`](Self::seal)).
    fn seal_text(&self, name: &str, mut text: Vec<u8>, random: &dyn Random) -> Result<String, CookieError> {
        let cipher = self.keys.openers.first().ok_or(CookieError::NoKey)?;
        let mut sealed = vec![0; NONCE_LEN];
        random.fill(&mut sealed)?;
        let nonce = *Nonce::from_slice(&sealed);
        // Fails only for a plaintext beyond AES-GCM's limit (64 GiB).
        let tag = cipher
            .encrypt_in_place_detached(&nonce, name.as_bytes(), &mut text)
            .map_err(|_| CookieError::TooLarge {
                max_chunks: self.max_chunks,
            })?;
        sealed.extend_from_slice(&text);
        sealed.extend_from_slice(&tag);
        Ok(base64::engine::general_purpose::STANDARD.encode(sealed))
    }

    /// Seals `text` as the value of another cookie of tokenjar's, called
    /// `name` (the pending OpenID logins' `<name>-login`), under the same
    /// keys: bound to that name, so it never opens as the session.
    ///
    /// # Errors
    /// [`CookieError::NoKey`] without a key, or no nonce could be had.
    pub fn seal_other(&self, name: &str, text: &str, random: &dyn Random) -> Result<String, CookieError> {
        self.seal_text(name, text.as_bytes().to_vec(), random)
    }

    /// Opens a value sealed by [`seal_other`](Self::seal_other) for `name`.
    pub fn open_other(&self, name: &str, value: &str) -> Option<String> {
        self.keys.open(name, value)
    }

    /// The first cookie called `name` in the request's `Cookie` header
    /// values that opens, opened; and whether one by that name was sent.
    pub fn read_other<'a>(
        &self,
        name: &str,
        headers: impl IntoIterator<Item = &'a [u8]>,
    ) -> (Option<String>, bool) {
        let mut sent = false;
        for header in headers {
            let text = crate::text::lossy_utf8(header);
            for cookie in Cookie::split_parse(text.as_ref()).flatten() {
                if cookie.name() != name {
                    continue;
                }
                sent = true;
                if let Some(opened) = self.open_other(name, unquote(cookie.value_trimmed())) {
                    return (Some(opened), true);
                }
            }
        }
        (None, sent)
    }

    /// A `Set-Cookie` value for another cookie of tokenjar's, with the auth
    /// cookie's `Secure`, `Path` and `Domain`, `HttpOnly`, and `same_site`
    /// and `max_age` (0 deletes it) of its own.
    pub fn render_other(&self, name: &str, value: String, same_site: SameSite, max_age: i64) -> String {
        let p = &self.policy;
        let mut builder = Cookie::build((name.to_owned(), value))
            .http_only(true)
            .secure(p.secure)
            .same_site(same_site.to_cookie())
            .path(p.path.clone())
            .max_age(cookie::time::Duration::seconds(max_age));
        if let Some(domain) = &p.domain {
            builder = builder.domain(domain.clone());
        }
        builder.build().to_string()
    }

    /// The session a sealed value holds, in either format of
    /// [`seal`](Self::seal); `None` for anything else.
    fn unseal(&self, value: &str) -> Option<Session> {
        parse_session(&self.keys.open(&self.policy.name, value)?)
    }
    fn render(&self, name: &str, value: String, max_age: Option<i64>) -> String {
        let p = &self.policy;
        let mut builder = Cookie::build((name.to_owned(), value))
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

/// Where the auth cookies of one request have got to.
#[derive(Default)]
struct Search<'a> {
    /// The first value tried. Most requests carry one auth cookie, which
    /// then costs no set.
    first: Option<Cow<'a, str>>,
    /// Every later value tried.
    others: HashSet<Cow<'a, str>>,
    /// The session opened so far.
    opened: Option<Session>,
    /// Why the cookies that did not open failed.
    rejection: Option<Rejection>,
    /// The distinct values sent for each chunk index, at most
    /// [`MAX_CHUNK_COMBINATIONS`] each (more could never be tried).
    chunks: Vec<Vec<Cow<'a, str>>>,
    /// Some chunk index had more distinct values than are kept.
    chunk_overflow: bool,
}

impl<'a> Search<'a> {
    /// Notes one opening's result. True once two different sessions have
    /// opened: the rest cannot change the answer.
    fn record(&mut self, result: Result<Session, Rejection>) -> bool {
        match result {
            Ok(session) => match &mut self.opened {
                None => self.opened = Some(session),
                Some(first) if same_token(&first.token, &session.token) => {
                    first.expires_at = earliest(first.expires_at, session.expires_at);
                    first.access_expires_at = earliest(first.access_expires_at, session.access_expires_at);
                }
                Some(_) => return true,
            },
            Err(why) => self.rejection = Some(worse(self.rejection, why)),
        }
        false
    }

    /// Keeps `value` as a candidate for chunk `index`, once.
    fn add_chunk(&mut self, index: usize, value: Cow<'a, str>) {
        if self.chunks.len() <= index {
            self.chunks.resize_with(index + 1, Vec::new);
        }
        let Some(values) = self.chunks.get_mut(index) else {
            return;
        };
        if values.contains(&value) {
            return;
        }
        if values.len() >= MAX_CHUNK_COMBINATIONS {
            self.chunk_overflow = true;
            return;
        }
        values.push(value);
    }

    /// Whether `value` is tried for the first time (it is now remembered).
    fn first_time(&mut self, value: Cow<'a, str>) -> bool {
        match &self.first {
            None => {
                self.first = Some(value);
                true
            }
            Some(first) => *first != value && self.others.insert(value),
        }
    }
}

/// The session a sealed value's plaintext holds, in either format of
/// [`session_text`] (the cookie's and the session store's); `None` for
/// anything else.
fn parse_session(plaintext: &str) -> Option<Session> {
    // Plain byte loops: this runs on every request, the separators are
    // within the first few bytes, and both `str`'s char searcher and
    // `memchr` cost about a hundred instructions more per call there.
    let colon = plaintext.bytes().position(|b| b == b':')?;
    let (meta, rest) = (plaintext.get(..colon)?, plaintext.get(colon + 1..)?);
    let stamp = |t: &str| -> Option<Option<i64>> {
        if t.is_empty() {
            Some(None)
        } else {
            t.parse::<i64>().ok().map(Some)
        }
    };
    let Some(comma) = meta.bytes().position(|b| b == b',') else {
        return Some(Session::of_token(Token::new(rest.to_owned()).ok()?, stamp(meta)?));
    };
    let (exp, more) = (meta.get(..comma)?, meta.get(comma + 1..)?);
    let (access_exp, lengths) = more.split_once(',')?;
    let (refresh_len, profile_len) = match lengths.split_once(',') {
        Some((r, p)) => (r.parse::<usize>().ok()?, Some(p.parse::<usize>().ok()?)),
        None => (lengths.parse::<usize>().ok()?, None),
    };
    let (refresh, rest) = (rest.get(..refresh_len)?, rest.get(refresh_len..)?);
    let (profile, access) = match profile_len {
        Some(n) => (Some(rest.get(..n)?.to_owned()), rest.get(n..)?),
        None => (None, rest),
    };
    let refresh = if refresh.is_empty() {
        None
    } else {
        Some(Token::new(refresh.to_owned()).ok()?)
    };
    Some(Session {
        token: Token::new(access.to_owned()).ok()?,
        expires_at: stamp(exp)?,
        access_expires_at: stamp(access_exp)?,
        refresh,
        profile,
    })
}

/// A session's plaintext: `<expires_at or empty>:<token>` for a session of
/// one token whose access token ends with it (the first format, still
/// written for such sessions, so their cookies stay as they were); else
/// `<expires_at>,<access_expires_at>,<n>[,<m>]:<refresh token of n
/// bytes>[<profile of m bytes>]<access token>`, either expiry possibly
/// empty and `n` 0 without a refresh token. Tokens are printable ASCII, so
/// a byte count cuts between them.
fn session_text(grant: &Grant, expires_at: Option<i64>) -> Vec<u8> {
    let stamp = |t: Option<i64>| t.map(|e| e.to_string()).unwrap_or_default();
    let access = grant.access.expose();
    match (&grant.refresh, &grant.profile) {
        (None, None) if grant.access_expires_at == expires_at => {
            format!("{}:{access}", stamp(expires_at))
        }
        (refresh, None) => {
            let refresh = refresh.as_ref().map_or("", Token::expose);
            format!(
                "{},{},{}:{refresh}{access}",
                stamp(expires_at),
                stamp(grant.access_expires_at),
                refresh.len()
            )
        }
        (refresh, Some(profile)) => {
            let refresh = refresh.as_ref().map_or("", Token::expose);
            format!(
                "{},{},{},{}:{refresh}{profile}{access}",
                stamp(expires_at),
                stamp(grant.access_expires_at),
                refresh.len(),
                profile.len()
            )
        }
    }
    .into_bytes()
}

/// A cookie value without one pair of surrounding double quotes, as the
/// `cookie` crate's `value_trimmed` reads it.
fn unquote(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|inner| inner.strip_suffix('"'))
        .unwrap_or(value)
}

/// Whether two tokens are the same, in time independent of where they first
/// differ: one of them may be a victim's, the other an attacker's, and the
/// attacker can time requests that carry both.
fn same_token(a: &Token, b: &Token) -> bool {
    bool::from(a.expose().as_bytes().ct_eq(b.expose().as_bytes()))
}

/// The sooner of two expiries; an unknown one yields to a known one.
fn earliest(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The reason to report when several cookies fail: `Expired` if any opened
/// (the user had a real session that ended), else `Unopenable`.
fn worse(so_far: Option<Rejection>, why: Rejection) -> Rejection {
    if so_far == Some(Rejection::Expired) {
        Rejection::Expired
    } else {
        why
    }
}

/// A fresh key of [`KEY_LEN`] bytes from `random`.
fn random_key(random: &dyn Random) -> Result<Key, RandomError> {
    let mut bytes = [0; KEY_LEN];
    random.fill(&mut bytes)?;
    Ok(Key::from(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::SeededRandom;

    /// Nonces and keys for these tests: different on each call, the same
    /// on each run.
    static RANDOM: SeededRandom = SeededRandom::new(7);

    const NOW: i64 = 1_700_000_000;

    fn jar_with(policy: CookiePolicy, keys: CookieKeys) -> CookieJar {
        CookieJar::new(policy, keys)
    }

    fn jar() -> CookieJar {
        jar_with(CookiePolicy::default(), CookieKeys::generate(&RANDOM).unwrap())
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

    /// `name=value` under the default cookie name, as a browser sends it.
    fn sent(value: &str) -> String {
        format!("{DEFAULT_NAME}={value}")
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
            let issued = jar.issue(&tok(t), NOW, &RANDOM).unwrap();
            let state = jar.open([pair(&issued.set_cookies[0]).as_bytes()], NOW);
            assert_eq!(state.token().map(Token::expose), Some(t));
        }
    }

    #[test]
    fn sealing_matches_the_cookie_crates_private_jar() {
        // Sealed here with a nonce from the port: the `cookie` crate's own
        // private jar opens it, so the format is the crate's.
        let jar = jar();
        let key = &jar.keys.keys[0];
        let issued = jar.issue(&tok("tok"), NOW, &RANDOM).unwrap();
        let (name, value) = pair(&issued.set_cookies[0])
            .split_once('=')
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .unwrap();
        let mut theirs = cookie::CookieJar::new();
        theirs.add_original(Cookie::new(name.clone(), value));
        let opened = theirs.private(key).get(&name).unwrap();
        // No expiry under the default policy: `<empty>:<token>`.
        assert_eq!(opened.value(), ":tok");
    }

    /// What the `cookie` crate's private jar opens `set_cookie`'s value to.
    fn plaintext(jar: &CookieJar, set_cookie: &str) -> String {
        let (name, value) = pair(set_cookie)
            .split_once('=')
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .unwrap();
        let mut theirs = cookie::CookieJar::new();
        theirs.add_original(Cookie::new(name.clone(), value));
        theirs
            .private(&jar.keys.keys[0])
            .get(&name)
            .unwrap()
            .value()
            .to_owned()
    }

    fn grant(access: Token, refresh: Option<Token>, access_expires_at: Option<i64>) -> Grant {
        Grant {
            access,
            refresh,
            access_expires_at,
            profile: None,
        }
    }

    #[test]
    fn a_stored_session_opens_only_as_a_stored_session() {
        let jar = jar();
        let mut grant = grant(tok("A9:zz"), Some(tok("R7,qq:1")), Some(NOW + 30));
        grant.profile = Some(r#"{"sub":"ada"}"#.to_owned());
        let sealed = jar.seal_stored(&grant, Some(NOW + 600), &RANDOM).unwrap();
        assert!(
            !sealed.contains("qq") && !sealed.contains("A9"),
            "sealed, not clear"
        );
        let opened = jar.open_stored(sealed.as_bytes(), NOW).unwrap();
        assert_eq!(opened.token, tok("A9:zz"));
        assert_eq!(opened.refresh, Some(tok("R7,qq:1")));
        assert_eq!(opened.profile.as_deref(), Some(r#"{"sub":"ada"}"#));
        assert_eq!(
            (opened.expires_at, opened.access_expires_at),
            (Some(NOW + 600), Some(NOW + 30))
        );
        assert_eq!(
            jar.open_stored(sealed.as_bytes(), NOW + 600),
            Err(Rejection::Expired)
        );
        // Bound to its purpose: a stored value is no cookie, a cookie no
        // stored value.
        let header = format!("{}={sealed}", jar.name());
        assert_eq!(
            jar.open([header.as_bytes()], NOW),
            CookieState::Rejected(Rejection::Unopenable)
        );
        let cookie = jar
            .issue_replacing(&grant, NOW, &RANDOM, Carried::default())
            .unwrap();
        assert_eq!(
            jar.open_stored(value(&cookie.set_cookies[0]).as_bytes(), NOW),
            Err(Rejection::Unopenable)
        );
        // Hostile store values: truncated, not UTF-8, empty.
        for bad in [&sealed.as_bytes()[..sealed.len() / 2], b"\xff\xfe", b""] {
            assert_eq!(jar.open_stored(bad, NOW), Err(Rejection::Unopenable));
        }
    }

    #[test]
    fn a_session_with_a_refresh_token_is_sealed_in_the_second_format() {
        let jar = jar();
        let issued = jar
            .issue_replacing(
                &grant(tok("A9:zz"), Some(tok("R7,qq:1")), Some(NOW + 30)),
                NOW,
                &RANDOM,
                Carried::default(),
            )
            .unwrap();
        // Byte counts, not separators, cut the tokens apart.
        assert_eq!(
            plaintext(&jar, &issued.set_cookies[0]),
            format!(",{},7:R7,qq:1A9:zz", NOW + 30)
        );
        let header = pair(&issued.set_cookies[0]);
        assert_eq!(
            jar.open([header.as_bytes()], NOW),
            CookieState::Valid(Session {
                token: tok("A9:zz"),
                expires_at: None,
                access_expires_at: Some(NOW + 30),
                refresh: Some(tok("R7,qq:1")),
                profile: None,
            })
        );
        // The access token's expiry does not end the session: it is
        // refreshed instead.
        assert!(matches!(
            jar.open([header.as_bytes()], NOW + 3600),
            CookieState::Valid(_)
        ));
        // Neither token shows in the session's Debug.
        assert!(!format!("{:?}", jar.open([header.as_bytes()], NOW)).contains("qq"));
    }

    #[test]
    fn a_session_with_a_refresh_token_lives_by_the_refresh_token() {
        let check = |max_age_s: u64, refresh: Token, expected: Option<i64>| {
            let jar = jar_with(
                CookiePolicy {
                    max_age_s,
                    ..CookiePolicy::default()
                },
                CookieKeys::generate(&RANDOM).unwrap(),
            );
            let g = grant(jwt_with_exp(NOW + 60), Some(refresh), Some(NOW + 60));
            let issued = jar.issue_replacing(&g, NOW, &RANDOM, Carried::default()).unwrap();
            assert_eq!(issued.expires_at, expected);
            let max_age = Cookie::parse(issued.set_cookies[0].as_str())
                .unwrap()
                .max_age()
                .map(|age| age.whole_seconds());
            assert_eq!(max_age, expected.map(|e| e - NOW));
        };
        // cookie.max_age_s first, then the refresh token's JWT exp, else a
        // browser-session cookie; never the access token's 60 s.
        check(600, jwt_with_exp(NOW + 86_400), Some(NOW + 600));
        check(0, jwt_with_exp(NOW + 86_400), Some(NOW + 86_400));
        check(0, tok("opaque-refresh"), None);
    }

    #[test]
    fn a_one_token_session_keeps_the_first_format() {
        let jar = jar();
        let issued = jar
            .issue_replacing(
                &grant(jwt_with_exp(NOW + 60), None, Some(NOW + 60)),
                NOW,
                &RANDOM,
                Carried::default(),
            )
            .unwrap();
        assert!(plaintext(&jar, &issued.set_cookies[0]).starts_with(&format!("{}:", NOW + 60)));
        // A lifetime from `expires_in` that is not the JWT's: the second
        // format, and the session ends with the access token.
        let issued = jar
            .issue_replacing(
                &grant(tok("opaque"), None, Some(NOW + 90)),
                NOW,
                &RANDOM,
                Carried::default(),
            )
            .unwrap();
        assert_eq!(issued.expires_at, Some(NOW + 90));
        assert_eq!(
            jar.open([pair(&issued.set_cookies[0]).as_bytes()], NOW),
            CookieState::Valid(Session::of_token(tok("opaque"), Some(NOW + 90)))
        );
    }

    #[test]
    fn a_large_session_with_a_refresh_token_is_chunked_and_joins() {
        let jar = jar();
        let (access, refresh) = (long_token(3_000, b'a'), long_token(3_000, b'r'));
        let issued = jar
            .issue_replacing(
                &grant(access.clone(), Some(refresh.clone()), Some(NOW + 30)),
                NOW,
                &RANDOM,
                Carried::default(),
            )
            .unwrap();
        assert_eq!(issued.set_cookies.len(), 3);
        let mut store = CookieStore::new();
        store.apply(&issued.set_cookies);
        let CookieState::Valid(session) = opened(&jar, &store) else {
            panic!("the chunks join");
        };
        assert_eq!((session.token, session.refresh), (access, Some(refresh)));
    }

    #[test]
    fn clear_mode_keeps_the_access_token_alone() {
        let jar = jar_with(
            CookiePolicy {
                encrypt: false,
                ..CookiePolicy::default()
            },
            CookieKeys::generate(&RANDOM).unwrap(),
        );
        let issued = jar
            .issue_replacing(
                &grant(tok("acc"), Some(tok("ref")), None),
                NOW,
                &RANDOM,
                Carried::default(),
            )
            .unwrap();
        assert_eq!(pair(&issued.set_cookies[0]), sent("acc"));
    }

    #[test]
    fn a_malformed_second_format_does_not_open() {
        let jar = jar();
        let key = &jar.keys.keys[0];
        for plaintext in [
            ",,5:abc", ",,x:abc", ",1,:a", "1,2:ab", ",,3:", ",,1:r", "x,,0:a", ",x,0:a",
        ] {
            let mut theirs = cookie::CookieJar::new();
            theirs.private_mut(key).add(Cookie::new(DEFAULT_NAME, plaintext));
            let value = theirs.get(DEFAULT_NAME).unwrap().value().to_owned();
            assert_eq!(
                jar.open([sent(&value).as_bytes()], NOW),
                CookieState::Rejected(Rejection::Unopenable),
                "{plaintext}"
            );
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
            .add(Cookie::new(DEFAULT_NAME, format!("{}:tok-1", NOW + 60)));
        let by_crate = sealed.get(DEFAULT_NAME).unwrap().value().to_owned();
        let header = sent(&by_crate);
        let state = jar.open([header.as_bytes()], NOW);
        assert_eq!(
            state,
            CookieState::Valid(Session::of_token(tok("tok-1"), Some(NOW + 60)))
        );
        // And what tokenjar seals, the `cookie` crate opens.
        let issued = jar.issue(&tok("tok-2"), NOW, &RANDOM).unwrap();
        let opened = cookie::CookieJar::new()
            .private(key)
            .decrypt(Cookie::new(DEFAULT_NAME, value(&issued.set_cookies[0])))
            .unwrap();
        assert_eq!(opened.value(), ":tok-2");
        // Too short to hold a nonce and a tag.
        let short = base64::engine::general_purpose::STANDARD.encode([0u8; NONCE_LEN + TAG_LEN - 1]);
        assert_eq!(
            jar.open([sent(&short).as_bytes()], NOW),
            CookieState::Rejected(Rejection::Unopenable)
        );
    }

    #[test]
    fn sealed_value_never_contains_the_token() {
        let jar = jar();
        let token = tok("super-secret-token-value");
        let issued = jar.issue(&token, NOW, &RANDOM).unwrap();
        assert!(!issued.set_cookies[0].contains("super-secret"));
        // Sealing twice gives different values (fresh nonce).
        let again = jar.issue(&token, NOW, &RANDOM).unwrap();
        assert_ne!(value(&issued.set_cookies[0]), value(&again.set_cookies[0]));
    }

    #[test]
    fn attributes_follow_the_policy() {
        let issued = &jar().issue(&tok("t"), NOW, &RANDOM).unwrap().set_cookies[0];
        // By default a __Host- cookie, which browsers take only when Secure,
        // host-only and Path=/.
        assert!(issued.starts_with("__Host-auth-token="), "{issued}");
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
        let issued = jar_with(policy, CookieKeys::generate(&RANDOM).unwrap())
            .issue(&tok("t"), NOW, &RANDOM)
            .unwrap();
        assert_eq!(issued.expires_at, Some(NOW + 600));
        let s = &issued.set_cookies[0];
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
        let issued = jar.issue(&jwt_with_exp(NOW + 3600), NOW, &RANDOM).unwrap();
        assert_eq!(issued.expires_at, Some(NOW + 3600));
        assert!(issued.set_cookies[0].contains("Max-Age=3600"));
        // Already-expired token: the browser is told to drop it at once.
        let stale = jar.issue(&jwt_with_exp(NOW - 5), NOW, &RANDOM).unwrap();
        assert!(stale.set_cookies[0].contains("Max-Age=0"));

        let fixed = jar_with(
            CookiePolicy {
                max_age_s: 60,
                ..CookiePolicy::default()
            },
            CookieKeys::generate(&RANDOM).unwrap(),
        );
        let issued = fixed.issue(&jwt_with_exp(NOW + 3600), NOW, &RANDOM).unwrap();
        assert_eq!(issued.expires_at, Some(NOW + 60));
        assert!(issued.set_cookies[0].contains("Max-Age=60"));
    }

    #[test]
    fn an_expired_session_is_rejected_when_opened() {
        let jar = jar();
        let issued = jar.issue(&jwt_with_exp(NOW + 10), NOW, &RANDOM).unwrap();
        let header = pair(&issued.set_cookies[0]);
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
        let near_misses = format!("{DEFAULT_NAME}x=1; x{DEFAULT_NAME}=2");
        let cases: &[&[u8]] = &[
            b"",
            b"other=1",
            near_misses.as_bytes(),
            // The development name is another cookie, not this one.
            b"auth-token=1",
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
        let issued = jar.issue(&tok("tok"), NOW, &RANDOM).unwrap();
        let good = value(&issued.set_cookies[0]);
        let mut flipped = good.clone().into_bytes();
        flipped[5] = if flipped[5] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        let other_key = jar_with(CookiePolicy::default(), CookieKeys::generate(&RANDOM).unwrap())
            .issue(&tok("tok"), NOW, &RANDOM)
            .unwrap();
        let cases = vec![
            sent(&flipped),
            sent(&good[..good.len() - 4]),
            sent("garbage"),
            sent(""),
            sent("tok"),
            sent(&"A".repeat(64 * 1024)),
            pair(&other_key.set_cookies[0]),
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
        let keys = CookieKeys::from_base64(&[CookieKeys::generate_base64(&RANDOM).unwrap()]).unwrap();
        let other = jar_with(
            CookiePolicy {
                name: "other".into(),
                ..CookiePolicy::default()
            },
            keys.clone(),
        );
        let issued = other.issue(&tok("tok"), NOW, &RANDOM).unwrap();
        let jar = jar_with(CookiePolicy::default(), keys);
        let header = sent(&value(&issued.set_cookies[0]));
        assert_eq!(
            jar.open([header.as_bytes()], NOW),
            CookieState::Rejected(Rejection::Unopenable)
        );
    }

    #[test]
    fn duplicated_and_quoted_cookies() {
        let jar = jar();
        let good = pair(&jar.issue(&tok("tok"), NOW, &RANDOM).unwrap().set_cookies[0]);
        let quoted = sent(&format!("\"{}\"", value(&good)));
        let junk = sent("junk");
        let cases = vec![
            format!("{junk}; {good}"),
            format!("{good}; {junk}"),
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
        let state = jar.open([&b"a=1"[..], junk.as_bytes(), good.as_bytes()], NOW);
        assert_eq!(state.token().map(Token::expose), Some("tok"));
        // A stray non-UTF-8 byte elsewhere in the header does not hide it.
        let mut bytes = b"x=\xff\xfe; ".to_vec();
        bytes.extend_from_slice(good.as_bytes());
        assert_eq!(
            jar.open([bytes.as_slice()], NOW).token().map(Token::expose),
            Some("tok")
        );
    }

    /// What a set of `Cookie` headers amounts to, in a word: `valid <token>`,
    /// `conflicting`, `rejected <why>` or `absent`.
    fn outcome(jar: &CookieJar, headers: &[String]) -> String {
        match jar.open(headers.iter().map(String::as_bytes), NOW) {
            CookieState::Valid(session) => format!("valid {}", session.token.expose()),
            CookieState::Conflicting => "conflicting".to_owned(),
            CookieState::Rejected(why) => format!("rejected {why:?}"),
            CookieState::Absent => "absent".to_owned(),
        }
    }

    /// `n` distinct junk values of the auth cookie's name, `; `-separated.
    fn junk(n: usize) -> String {
        (0..n)
            .map(|i| sent(&format!("junk{i}")))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The `name=value` a browser sends back for `token` sealed by `jar`.
    fn cookie_for(jar: &CookieJar, token: &Token) -> String {
        pair(&jar.issue(token, NOW, &RANDOM).unwrap().set_cookies[0])
    }

    #[test]
    fn every_auth_cookie_is_tried_and_two_sessions_count_as_none() {
        let jar = jar();
        let victim = cookie_for(&jar, &tok("victim"));
        let attacker = cookie_for(&jar, &tok("attacker"));
        // The victim's token sealed a second time: another value, same session.
        let victim_again = cookie_for(&jar, &tok("victim"));
        assert_ne!(victim, victim_again);
        let expired = cookie_for(&jar, &jwt_with_exp(NOW - 1));
        let expired_attacker = cookie_for(&jar, &jwt_with_exp(NOW));
        // Well-formed, right length, other key: fails only at the AES-GCM tag.
        let foreign = cookie_for(
            &jar_with(CookiePolicy::default(), CookieKeys::generate(&RANDOM).unwrap()),
            &tok("x"),
        );

        let one = |header: String| vec![header];
        let cases: Vec<(&str, Vec<String>, &str)> = vec![
            // Cookie tossing: whichever goes first, neither session is used,
            // and (not Rejected) nothing is deleted.
            (
                "attacker, victim",
                one(format!("{attacker}; {victim}")),
                "conflicting",
            ),
            (
                "victim, attacker",
                one(format!("{victim}; {attacker}")),
                "conflicting",
            ),
            (
                "attacker and victim in two Cookie headers",
                vec![attacker.clone(), victim.clone()],
                "conflicting",
            ),
            (
                "attacker, victim, among junk",
                one(format!(
                    "{}; {attacker}; {}; {victim}; {}",
                    junk(3),
                    junk(2),
                    junk(5)
                )),
                "conflicting",
            ),
            (
                "the victim twice and the attacker",
                one(format!("{victim}; {victim_again}; {attacker}")),
                "conflicting",
            ),
            // One session, however often it comes.
            (
                "the same cookie twice",
                one(format!("{victim}; {victim}")),
                "valid victim",
            ),
            (
                "one session sealed twice",
                one(format!("{victim_again}; {victim}")),
                "valid victim",
            ),
            (
                "the same cookie, quoted and not",
                one(format!("{}; {victim}", sent(&format!("\"{}\"", value(&victim))))),
                "valid victim",
            ),
            // Junk and expired cookies beside a session do not hide it, and
            // are not deleted (the deletion could hit the good one).
            (
                "4 junk values first",
                one(format!("{}; {victim}", junk(4))),
                "valid victim",
            ),
            (
                "10 junk values first",
                one(format!("{}; {victim}", junk(10))),
                "valid victim",
            ),
            (
                "100 junk values first",
                one(format!("{}; {victim}", junk(100))),
                "valid victim",
            ),
            (
                "100 junk values after",
                one(format!("{victim}; {}", junk(100))),
                "valid victim",
            ),
            (
                "a foreign sealed value first",
                one(format!("{foreign}; {victim}")),
                "valid victim",
            ),
            (
                "expired, then valid",
                one(format!("{expired}; {victim}")),
                "valid victim",
            ),
            (
                "valid, then expired",
                one(format!("{victim}; {expired}")),
                "valid victim",
            ),
            // An expired session of another token is no session: no conflict.
            (
                "another token's expired cookie",
                one(format!("{expired_attacker}; {victim}")),
                "valid victim",
            ),
            // Nothing opens: deleted.
            ("only junk", one(junk(10)), "rejected Unopenable"),
            ("only expired", one(expired.clone()), "rejected Expired"),
            (
                "expired among junk",
                one(format!("{}; {expired}; {}", junk(2), junk(2))),
                "rejected Expired",
            ),
            ("no auth cookie", one("theme=dark".to_owned()), "absent"),
        ];
        // Every case is run and every wrong one listed, not just the first.
        let wrong: Vec<String> = cases
            .into_iter()
            .filter_map(|(case, headers, expected)| {
                let got = outcome(&jar, &headers);
                (got != expected).then(|| format!("{case}: {got}, expected {expected}"))
            })
            .collect();
        assert!(wrong.is_empty(), "{wrong:#?}");
        // A conflict holds no token, and prints none.
        let state = jar.open([format!("{attacker}; {victim}").as_bytes()], NOW);
        assert_eq!(state.token(), None);
        assert_eq!(format!("{state:?}"), "Conflicting");
    }

    #[test]
    fn one_session_sealed_with_two_expiries_reports_the_earlier() {
        let short = jar_with(
            CookiePolicy {
                max_age_s: 60,
                ..CookiePolicy::default()
            },
            CookieKeys::generate(&RANDOM).unwrap(),
        );
        let long = CookieJar::new(
            CookiePolicy {
                max_age_s: 600,
                ..CookiePolicy::default()
            },
            short.keys.clone(),
        );
        let never = CookieJar::new(CookiePolicy::default(), short.keys.clone());
        let token = tok("one-session");
        let (a, b, c) = (
            cookie_for(&long, &token),
            cookie_for(&short, &token),
            cookie_for(&never, &token),
        );
        for header in [format!("{a}; {b}; {c}"), format!("{c}; {b}; {a}")] {
            assert_eq!(
                short.open([header.as_bytes()], NOW),
                CookieState::Valid(Session {
                    token: token.clone(),
                    expires_at: Some(NOW + 60),
                    // An opaque token: its own expiry is unknown.
                    access_expires_at: None,
                    refresh: None,
                    profile: None,
                }),
                "{header}"
            );
        }
    }

    /// AES-GCM openings made on this thread so far.
    fn decryptions() -> usize {
        DECRYPTIONS.with(std::cell::Cell::get)
    }

    #[test]
    fn a_stuffed_header_costs_one_opening_per_distinct_value() {
        let jar = jar();
        let good = cookie_for(&jar, &tok("tok"));
        let foreign = cookie_for(
            &jar_with(CookiePolicy::default(), CookieKeys::generate(&RANDOM).unwrap()),
            &tok("x"),
        );
        let count = |headers: &[String]| {
            let before = decryptions();
            let state = outcome(&jar, headers);
            (state, decryptions() - before)
        };

        // Thousands of copies of one value that reaches AES-GCM cost one
        // opening, also when they are spread over several headers and
        // spelled with and without quotes.
        let quoted = sent(&format!("\"{}\"", value(&foreign)));
        let stuffed = format!("{foreign}; {quoted}; ").repeat(2_500);
        assert_eq!(count(&[format!("{stuffed}{good}")]), ("valid tok".to_owned(), 2));
        assert_eq!(
            count(&[stuffed.clone(), stuffed.clone(), good.clone()]),
            ("valid tok".to_owned(), 2)
        );
        assert_eq!(
            count(std::slice::from_ref(&stuffed)),
            ("rejected Unopenable".to_owned(), 1)
        );
        // The same behind a first, different value.
        assert_eq!(
            count(&[format!("{good}; {stuffed}")]),
            ("valid tok".to_owned(), 2)
        );
        // And in a header that is not UTF-8, whose values are copies.
        let mut bytes = b"x=\xff; ".to_vec();
        bytes.extend_from_slice(stuffed.as_bytes());
        let before = decryptions();
        let state = jar.open([bytes.as_slice(), bytes.as_slice(), good.as_bytes()], NOW);
        assert_eq!(state.token().map(Token::expose), Some("tok"));
        assert_eq!(decryptions() - before, 2);
        // Values that are not base64 of a nonce and a tag never reach AES.
        assert_eq!(
            count(&[format!("{}; {good}", junk(1_000))]),
            ("valid tok".to_owned(), 1)
        );
        // Distinct well-formed values cost one opening each: the HTTP
        // server's head size limit is what bounds them.
        let distinct: Vec<String> = (0..50)
            .map(|i| {
                cookie_for(
                    &jar_with(CookiePolicy::default(), CookieKeys::generate(&RANDOM).unwrap()),
                    &tok(&format!("x{i}")),
                )
            })
            .collect();
        assert_eq!(
            count(&[format!("{}; {good}", distinct.join("; "))]),
            ("valid tok".to_owned(), 51)
        );
        // A conflict ends the search: what follows is not opened.
        let other = cookie_for(&jar, &tok("other"));
        assert_eq!(
            count(&[format!("{good}; {other}; {}", distinct.join("; "))]),
            ("conflicting".to_owned(), 2)
        );
    }

    #[test]
    fn rotation_first_key_seals_all_keys_open() {
        let k1 = CookieKeys::generate_base64(&RANDOM).unwrap();
        let k2 = CookieKeys::generate_base64(&RANDOM).unwrap();
        let old = jar_with(CookiePolicy::default(), CookieKeys::from_base64(&[&k1]).unwrap());
        let rotated = jar_with(
            CookiePolicy::default(),
            CookieKeys::from_base64(&[&k2, &k1]).unwrap(),
        );
        let retired = jar_with(CookiePolicy::default(), CookieKeys::from_base64(&[&k2]).unwrap());

        let old_cookie = pair(&old.issue(&tok("tok"), NOW, &RANDOM).unwrap().set_cookies[0]);
        assert!(rotated.open([old_cookie.as_bytes()], NOW).token().is_some());
        assert!(retired.open([old_cookie.as_bytes()], NOW).token().is_none());

        let new_cookie = pair(&rotated.issue(&tok("tok"), NOW, &RANDOM).unwrap().set_cookies[0]);
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
        let issued = jar.issue(&tok("plain-tok"), NOW, &RANDOM).unwrap();
        assert_eq!(pair(&issued.set_cookies[0]), sent("plain-tok"));
        let odd = jar.issue(&tok("a; b=c"), NOW, &RANDOM).unwrap();
        assert!(!pair(&odd.set_cookies[0]).contains(';'));
        let state = jar.open([pair(&odd.set_cookies[0]).as_bytes()], NOW);
        assert_eq!(state.token().map(Token::expose), Some("a; b=c"));
        assert_eq!(
            jar.open([sent("%0d%0a").as_bytes()], NOW),
            CookieState::Rejected(Rejection::Unopenable)
        );
    }

    #[test]
    fn sealing_without_a_key_fails_cleanly() {
        let jar = jar_with(
            CookiePolicy::default(),
            CookieKeys::from_base64::<&str>(&[]).unwrap(),
        );
        assert_eq!(jar.issue(&tok("t"), NOW, &RANDOM), Err(CookieError::NoKey));
        assert_eq!(
            jar.open([sent("abc").as_bytes()], NOW),
            CookieState::Rejected(Rejection::Unopenable)
        );
    }

    #[test]
    fn removal_deletes_with_the_same_scope() {
        let policy = CookiePolicy {
            name: "sid".into(),
            path: "/app".into(),
            domain: Some("example.com".into()),
            ..CookiePolicy::default()
        };
        let removal = jar_with(policy, CookieKeys::generate(&RANDOM).unwrap()).removal();
        assert!(removal.starts_with("sid=;"), "{removal}");
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
        let good = CookieKeys::generate_base64(&RANDOM).unwrap();
        assert_eq!(
            CookieKeys::from_base64(&[good.as_str(), short.as_str()]).map(|_| ()),
            Err(KeyError::WrongLength { index: 1, len: 32 })
        );
        let keys = CookieKeys::from_base64(&[good.as_str()]).unwrap();
        assert_eq!(keys.len(), 1);
        assert!(!format!("{keys:?}").contains(&good[..10]));
        let decoded = base64::engine::general_purpose::STANDARD.decode(&good).unwrap();
        assert_eq!(decoded.len(), KEY_LEN);
        assert_ne!(good, CookieKeys::generate_base64(&RANDOM).unwrap());
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
                name: "sid".into(),
                same_site: SameSite::None,
                secure: false,
                ..CookiePolicy::default()
            },
            &["same_site"],
        );
        // The default name cannot go without Secure: plain-http development
        // names its cookie otherwise (config/local.toml).
        check(
            CookiePolicy {
                secure: false,
                ..CookiePolicy::default()
            },
            &["secure"],
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

    // -----------------------------------------------------------------
    // Chunks (SPEC §15)
    // -----------------------------------------------------------------

    use crate::memory::CookieStore;

    /// A printable token of `len` bytes that is no JWT (so no expiry).
    fn long_token(len: usize, seed: u8) -> Token {
        let text: String = (0..len)
            .map(|i| char::from(b'a' + u8::try_from((i * 7 + usize::from(seed)) % 26).unwrap()))
            .collect();
        tok(&text)
    }

    /// The auth cookie names a store holds, the plain name shown as `-`
    /// and chunks by their suffix.
    fn family(store: &CookieStore, name: &str) -> Vec<String> {
        let mut parts: Vec<(usize, String)> = store
            .names()
            .into_iter()
            .filter_map(|n| match Part::of(name, n)? {
                Part::Whole => Some((0, "-".to_owned())),
                Part::Chunk(i) => Some((i + 1, format!(".{i}"))),
            })
            .collect();
        parts.sort();
        parts.into_iter().map(|(_, p)| p).collect()
    }

    fn login(jar: &CookieJar, store: &mut CookieStore, token: &Token) -> Vec<String> {
        let header = store.header();
        let carried = jar.carried([header.as_bytes()]);
        let issued = jar
            .issue_replacing(&Grant::access_only(token.clone()), NOW, &RANDOM, carried)
            .unwrap();
        store.apply(&issued.set_cookies);
        issued.set_cookies
    }

    fn opened(jar: &CookieJar, store: &CookieStore) -> CookieState {
        jar.open([store.header().as_bytes()], NOW)
    }

    #[test]
    fn a_session_up_to_4000_bytes_is_one_cookie_and_one_byte_more_is_chunks() {
        // 20 bytes of name and a value of 3980 make exactly 4000: `:` and
        // 2956 token bytes, a 12-byte nonce and a 16-byte tag are 2985
        // bytes, 3980 in base64.
        let name = "a".repeat(20);
        let jar = jar_with(
            CookiePolicy {
                name: name.clone(),
                secure: false,
                ..CookiePolicy::default()
            },
            CookieKeys::generate(&RANDOM).unwrap(),
        );
        let fits = jar.issue(&long_token(2956, 1), NOW, &RANDOM).unwrap();
        assert_eq!(fits.set_cookies.len(), 1);
        let whole = pair(&fits.set_cookies[0]);
        assert_eq!(
            whole.len() - 1,
            CHUNK_BYTES,
            "name and value exactly at the limit"
        );
        assert!(whole.starts_with(&format!("{name}=")));

        let over = jar.issue(&long_token(2957, 1), NOW, &RANDOM).unwrap();
        assert_eq!(over.set_cookies.len(), 2);
        for (i, set_cookie) in over.set_cookies.iter().enumerate() {
            let p = pair(set_cookie);
            assert!(p.starts_with(&format!("{name}.{i}=")), "{p:.40}");
            assert!(p.len() - 1 <= CHUNK_BYTES);
        }
        assert_eq!(
            pair(&over.set_cookies[0]).len() - 1,
            CHUNK_BYTES,
            "the first chunk is full"
        );

        for issued in [fits, over] {
            let mut store = CookieStore::new();
            store.apply(&issued.set_cookies);
            assert!(opened(&jar, &store).token().is_some());
        }
    }

    #[test]
    fn chunks_carry_the_same_attributes_as_the_whole_cookie() {
        let jar = jar_with(
            CookiePolicy {
                max_age_s: 3600,
                ..CookiePolicy::default()
            },
            CookieKeys::generate(&RANDOM).unwrap(),
        );
        let whole = jar.issue(&tok("short"), NOW, &RANDOM).unwrap();
        let attributes = |set_cookie: &str| {
            let mut a: Vec<String> = set_cookie.split("; ").skip(1).map(str::to_owned).collect();
            a.sort();
            a
        };
        let expected = attributes(&whole.set_cookies[0]);
        assert!(expected.contains(&"Max-Age=3600".to_owned()), "{expected:?}");
        let chunked = jar.issue(&long_token(6000, 2), NOW, &RANDOM).unwrap();
        assert_eq!(chunked.set_cookies.len(), 3);
        for (i, set_cookie) in chunked.set_cookies.iter().enumerate() {
            // `__Host-auth-token.0` still starts with `__Host-`: the prefix
            // rules hold for every chunk.
            assert!(set_cookie.starts_with(&format!("__Host-auth-token.{i}=")));
            assert_eq!(attributes(set_cookie), expected);
        }
    }

    #[test]
    fn chunks_join_in_numeric_order_past_ten() {
        let jar = jar().with_max_chunks(16);
        let token = long_token(40_000, 3);
        let mut store = CookieStore::new();
        let written = login(&jar, &mut store, &token);
        assert!(written.len() >= 11, "{} chunks", written.len());
        // The store sends `.0 .1 .10 .11 … .2`: text order, not numbers.
        let header = store.header();
        let first_three: Vec<&str> = header
            .split("; ")
            .take(3)
            .map(|c| c.split('=').next().unwrap())
            .collect();
        assert_eq!(
            first_three,
            [
                "__Host-auth-token.0",
                "__Host-auth-token.1",
                "__Host-auth-token.10"
            ]
        );
        assert_eq!(opened(&jar, &store).token(), Some(&token));
        // And reversed, one chunk per header line.
        let mut lines: Vec<String> = header.split("; ").map(str::to_owned).collect();
        lines.reverse();
        let state = jar.open(lines.iter().map(String::as_bytes), NOW);
        assert_eq!(state.token(), Some(&token));
    }

    #[test]
    fn a_session_over_max_chunks_is_refused() {
        let jar = jar();
        assert_eq!(jar.max_chunks(), DEFAULT_MAX_CHUNKS);
        // Four chunks hold about 4 × 3980 base64 bytes: some 11,900 token bytes.
        assert_eq!(
            jar.issue(&long_token(11_000, 4), NOW, &RANDOM)
                .unwrap()
                .set_cookies
                .len(),
            4
        );
        let refused = jar.issue(&long_token(12_500, 4), NOW, &RANDOM);
        assert_eq!(refused, Err(CookieError::TooLarge { max_chunks: 4 }));
        let one = jar.clone().with_max_chunks(1);
        assert_eq!(
            one.issue(&tok("short"), NOW, &RANDOM).unwrap().set_cookies.len(),
            1
        );
        assert_eq!(
            one.issue(&long_token(3000, 4), NOW, &RANDOM),
            Err(CookieError::TooLarge { max_chunks: 1 })
        );
        // The setting is held to what the jar can ever read.
        assert_eq!(jar.clone().with_max_chunks(0).max_chunks(), 1);
        assert_eq!(jar.with_max_chunks(99).max_chunks(), MAX_CHUNKS_LIMIT);
        // The error says what to change, and never holds the token.
        let message = CookieError::TooLarge { max_chunks: 4 }.to_string();
        assert!(message.contains("cookie.max_chunks"), "{message}");
    }

    #[test]
    fn issuing_deletes_what_the_new_session_does_not_overwrite() {
        let jar = jar();
        let mut store = CookieStore::new();
        let deleted = |written: &[String]| -> Vec<String> {
            written
                .iter()
                .filter(|c| c.contains("Max-Age=0"))
                .map(|c| pair(c).trim_end_matches('=').to_owned())
                .collect()
        };

        // Nothing → plain: nothing to delete.
        let written = login(&jar, &mut store, &tok("small-1"));
        assert_eq!(deleted(&written), Vec::<String>::new());
        assert_eq!(family(&store, DEFAULT_NAME), ["-"]);

        // Plain → three chunks: the plain cookie goes.
        let big = long_token(8000, 5);
        let written = login(&jar, &mut store, &big);
        assert_eq!(deleted(&written), [DEFAULT_NAME]);
        assert_eq!(family(&store, DEFAULT_NAME), [".0", ".1", ".2"]);
        assert_eq!(opened(&jar, &store).token(), Some(&big));

        // Three chunks → two: `.2` goes, `.0` and `.1` are overwritten.
        let smaller = long_token(5000, 6);
        let written = login(&jar, &mut store, &smaller);
        assert_eq!(deleted(&written), [format!("{DEFAULT_NAME}.2")]);
        assert_eq!(family(&store, DEFAULT_NAME), [".0", ".1"]);
        assert_eq!(opened(&jar, &store).token(), Some(&smaller));

        // Two chunks → plain: both chunks go.
        let written = login(&jar, &mut store, &tok("small-2"));
        assert_eq!(
            deleted(&written),
            [format!("{DEFAULT_NAME}.0"), format!("{DEFAULT_NAME}.1")]
        );
        assert_eq!(family(&store, DEFAULT_NAME), ["-"]);
        assert_eq!(opened(&jar, &store).token(), Some(&tok("small-2")));

        // Logout (removals) deletes the plain cookie and every chunk sent.
        login(&jar, &mut store, &big);
        store.set(&format!("{DEFAULT_NAME}.7"), "left-over");
        let carried = jar.carried([store.header().as_bytes()]);
        store.apply(jar.removals(carried));
        assert_eq!(family(&store, DEFAULT_NAME), Vec::<String>::new());
    }

    #[test]
    fn a_missing_extra_or_stale_chunk_spoils_the_session() {
        let jar = jar();
        let old = long_token(8000, 7);
        let new = long_token(5000, 8);
        let mut old_store = CookieStore::new();
        login(&jar, &mut old_store, &old);
        let mut store = CookieStore::new();
        login(&jar, &mut store, &new);
        let chunk = |i: usize| format!("{DEFAULT_NAME}.{i}");

        // Stale: the old session's `.2` left behind the new `.0 .1`.
        let mut stale = store.clone();
        stale.set(&chunk(2), old_store.get(&chunk(2)).unwrap());
        assert_eq!(opened(&jar, &stale), CookieState::Rejected(Rejection::Unopenable));
        // All of it is deleted then: the plain name and every chunk sent.
        let carried = jar.carried([stale.header().as_bytes()]);
        stale.apply(jar.removals(carried));
        assert!(stale.names().is_empty(), "{:?}", stale.names());

        // Missing: `.0` alone, or `.1` alone.
        for gone in [0, 1] {
            let mut missing = store.clone();
            missing.remove(&chunk(gone));
            assert_eq!(
                opened(&jar, &missing),
                CookieState::Rejected(Rejection::Unopenable)
            );
        }
        // Extra: a chunk beyond `max_chunks`, or beyond the session's end.
        let mut extra = store.clone();
        extra.set(&chunk(2), "AAAA");
        assert_eq!(opened(&jar, &extra), CookieState::Rejected(Rejection::Unopenable));
        let mut too_many = old_store.clone();
        for i in 3..5 {
            too_many.set(&chunk(i), "AAAA");
        }
        assert_eq!(
            opened(&jar, &too_many),
            CookieState::Rejected(Rejection::Unopenable)
        );
        // Swapped: `.0` and `.1` exchange values.
        let mut swapped = store.clone();
        swapped.set(&chunk(0), store.get(&chunk(1)).unwrap());
        swapped.set(&chunk(1), store.get(&chunk(0)).unwrap());
        assert_eq!(
            opened(&jar, &swapped),
            CookieState::Rejected(Rejection::Unopenable)
        );
    }

    #[test]
    fn whole_and_chunked_sessions_meet_the_rules_of_several_cookies() {
        let jar = jar();
        let big = long_token(8000, 9);
        let mut chunked = CookieStore::new();
        login(&jar, &mut chunked, &big);

        // A chunked session beside junk `<name>`: the session stands.
        let mut with_junk = chunked.clone();
        with_junk.set(DEFAULT_NAME, "junk");
        assert_eq!(opened(&jar, &with_junk).token(), Some(&big));

        // Beside a whole cookie of another token: two sessions, none used
        // (and none deleted), as with two whole cookies.
        let other = jar.issue(&long_token(2000, 9), NOW, &RANDOM).unwrap();
        let mut both = chunked.clone();
        both.set(DEFAULT_NAME, &value(&other.set_cookies[0]));
        assert_eq!(opened(&jar, &both), CookieState::Conflicting);

        // The same token whole and chunked (e.g. a cookie under an old
        // path): one session.
        let mut twice = chunked.clone();
        let resealed = jar.issue(&big, NOW, &RANDOM).unwrap();
        // Re-sealed value under the whole name (too long for one real
        // cookie, but the jar reads what it is sent).
        let joined: String = resealed.set_cookies.iter().map(|c| value(c)).collect();
        twice.set(DEFAULT_NAME, &joined);
        assert_eq!(opened(&jar, &twice).token(), Some(&big));
    }

    #[test]
    fn duplicated_chunks_try_each_combination_up_to_a_bound() {
        let jar = jar();
        let big = long_token(8000, 10);
        let mut store = CookieStore::new();
        login(&jar, &mut store, &big);
        let header = store.header();
        let name1 = format!("{DEFAULT_NAME}.1");
        // A second `.1` (another path's, or tossed) before the real one.
        let tossed = format!("{name1}=AAAA; {header}");
        assert_eq!(jar.open([tossed.as_bytes()], NOW).token(), Some(&big));
        // Another session's `.1` beside it: still only one combination opens.
        let mut other = CookieStore::new();
        login(&jar, &mut other, &long_token(8000, 11));
        let mixed = format!("{name1}={}; {header}", other.get(&name1).unwrap());
        assert_eq!(jar.open([mixed.as_bytes()], NOW).token(), Some(&big));
        // Far too many values: ambiguous, nothing used and nothing deleted.
        let stuffed: String = (0..40)
            .map(|i| format!("{name1}=AAAA{i:04}; "))
            .chain(std::iter::once(header.clone()))
            .collect();
        assert_eq!(jar.open([stuffed.as_bytes()], NOW), CookieState::Conflicting);
    }

    #[test]
    fn chunks_sealed_under_an_old_key_open_after_rotation() {
        let old_keys = CookieKeys::generate(&RANDOM).unwrap();
        let old = jar_with(CookiePolicy::default(), old_keys.clone());
        let big = long_token(8000, 12);
        let mut store = CookieStore::new();
        login(&old, &mut store, &big);
        let mut keys = CookieKeys::generate(&RANDOM).unwrap().keys;
        keys.extend(old_keys.keys);
        let rotated = jar_with(CookiePolicy::default(), CookieKeys::from_keys(keys));
        assert_eq!(opened(&rotated, &store).token(), Some(&big));
    }

    #[test]
    fn clear_mode_chunks_too() {
        let jar = jar_with(
            CookiePolicy {
                encrypt: false,
                ..CookiePolicy::default()
            },
            CookieKeys::from_base64::<&str>(&[]).unwrap(),
        );
        // `;` is percent-encoded to three bytes: a cut may fall inside one.
        let text = "a;b ".repeat(1500) + "end";
        let token = tok(&text);
        let mut store = CookieStore::new();
        let written = login(&jar, &mut store, &token);
        assert!(written.len() >= 3, "{}", written.len());
        assert_eq!(opened(&jar, &store).token(), Some(&token));
    }

    #[test]
    fn chunk_names_are_written_one_way() {
        let base = "auth";
        assert_eq!(Part::of(base, "auth"), Some(Part::Whole));
        assert_eq!(Part::of(base, "auth.0"), Some(Part::Chunk(0)));
        assert_eq!(Part::of(base, "auth.15"), Some(Part::Chunk(15)));
        for not_ours in [
            "auth.16", "auth.01", "auth.+1", "auth.", "auth.x", "auth0", "authx", "aut", "auth.1.0",
        ] {
            assert_eq!(Part::of(base, not_ours), None, "{not_ours}");
        }
        let jar = jar();
        assert!(jar.is_own("__Host-auth-token.3"));
        assert!(!jar.is_own("__Host-auth-token-2"));
        assert_eq!(
            jar.carried([b"__Host-auth-token.3=x; other=1; __Host-auth-token=y".as_slice()]),
            Carried {
                whole: true,
                chunks: 1 << 3
            }
        );
    }
}
