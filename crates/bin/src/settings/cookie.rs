//! `[cookie]`: the auth cookie's attributes and sealing keys, checked into
//! the domain's [`CookieJar`]; the keys never appear in `Debug` or in
//! `check-config`'s output.

use std::fmt;

use serde::{Deserialize, Serialize};
use tokenjar_adapters_actix::OsRandom;
use tokenjar_domain::{CookieJar, CookieKeys, CookiePolicy, SameSite, MAX_CHUNKS_LIMIT};

use super::section::{Problem, Problems, Section};

/// `cookie.*`
#[derive(Clone, Deserialize, Serialize)]
pub struct CookieSection {
    /// Cookie name.
    pub name: String,
    /// `Secure`.
    pub secure: bool,
    /// `SameSite`.
    pub same_site: SameSiteSetting,
    /// `Path`.
    pub path: String,
    /// `Domain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Fixed lifetime; 0 = from the token.
    pub max_age_s: u64,
    /// Seal the token.
    pub encrypt: bool,
    /// Most cookies one session may be split into (SPEC §15).
    pub max_chunks: usize,
    /// Sealing keys, base64.
    pub keys: Vec<String>,
}

impl fmt::Debug for CookieSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CookieSection")
            .field("name", &self.name)
            .field("secure", &self.secure)
            .field("same_site", &self.same_site)
            .field("path", &self.path)
            .field("domain", &self.domain)
            .field("max_age_s", &self.max_age_s)
            .field("encrypt", &self.encrypt)
            .field("max_chunks", &self.max_chunks)
            .field("keys", &format_args!("<{} redacted>", self.keys.len()))
            .finish()
    }
}

impl CookieSection {
    /// The section as `check-config` shows it: each key replaced by its place.
    pub fn redacted(&self) -> Self {
        Self {
            keys: (0..self.keys.len())
                .map(|i| format!("<redacted key #{i}>"))
                .collect(),
            ..self.clone()
        }
    }
}

/// `cookie.same_site`: `strict`, `lax` or `none`, in any case.
///
/// Read from a string rather than as serde's own enum so that any other
/// value still loads, is kept as written, and is reported by `validate`
/// along with every other problem (`check-config` has always done so).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(from = "String", into = "String")]
pub enum SameSiteSetting {
    /// `strict`
    Strict,
    /// `lax`
    Lax,
    /// `none` (needs `secure`)
    None,
    /// Anything else, as written.
    Unknown(String),
}

impl From<String> for SameSiteSetting {
    fn from(value: String) -> Self {
        match value.to_ascii_lowercase().as_str() {
            "strict" => Self::Strict,
            "lax" => Self::Lax,
            "none" => Self::None,
            _ => Self::Unknown(value),
        }
    }
}

impl From<SameSiteSetting> for String {
    fn from(value: SameSiteSetting) -> Self {
        match value {
            SameSiteSetting::Strict => "strict".to_owned(),
            SameSiteSetting::Lax => "lax".to_owned(),
            SameSiteSetting::None => "none".to_owned(),
            SameSiteSetting::Unknown(value) => value,
        }
    }
}

/// The checked `[cookie]` section.
pub struct Cookies {
    /// Seals and opens the auth cookie.
    pub jar: CookieJar,
    /// No key was configured; a random one was made.
    pub ephemeral_key: bool,
}

impl Section for CookieSection {
    const NAME: &'static str = "cookie";
    type Out = Cookies;

    fn validate(&self) -> Result<Cookies, Vec<Problem>> {
        let mut problems = Problems::in_section(Self::NAME);
        let same_site = match &self.same_site {
            SameSiteSetting::Strict => Some(SameSite::Strict),
            SameSiteSetting::Lax => Some(SameSite::Lax),
            SameSiteSetting::None => Some(SameSite::None),
            SameSiteSetting::Unknown(value) => {
                problems.push("same_site", format!("{value:?} is not one of strict, lax, none"));
                None
            }
        };
        // The policy's own rules (e.g. `none` needs `secure`) can only be
        // checked once `same_site` is known.
        let policy = same_site.and_then(|same_site| {
            problems.domain(
                CookiePolicy {
                    name: self.name.clone(),
                    secure: self.secure,
                    same_site,
                    path: self.path.clone(),
                    domain: self.domain.clone().filter(|d| !d.is_empty()),
                    max_age_s: self.max_age_s,
                    encrypt: self.encrypt,
                }
                .checked(),
            )
        });
        // Each chunk is up to 4,000 bytes that every request then carries:
        // past 16 (64 KB of cookies) a request head would outgrow what
        // servers and proxies accept, and server-side sessions are the way.
        if !(1..=MAX_CHUNKS_LIMIT).contains(&self.max_chunks) {
            problems.push(
                "max_chunks",
                format!(
                    "{} is not between 1 and {MAX_CHUNKS_LIMIT} (for larger tokens use session.store)",
                    self.max_chunks
                ),
            );
        }
        let configured: Vec<&str> = self
            .keys
            .iter()
            .map(|k| k.trim())
            .filter(|k| !k.is_empty())
            .collect();
        let mut keys = CookieKeys::from_base64(&configured)
            .map_err(|e| problems.push("keys", e.to_string()))
            .ok();
        let ephemeral_key =
            policy.as_ref().is_some_and(|p| p.encrypt) && keys.as_ref().is_some_and(CookieKeys::is_empty);
        if ephemeral_key {
            keys = CookieKeys::generate(&OsRandom)
                .map_err(|e| problems.push("keys", format!("no key could be made: {e}")))
                .ok();
        }
        problems.finish(|| {
            Some(Cookies {
                jar: CookieJar::new(policy?, keys?).with_max_chunks(self.max_chunks),
                ephemeral_key,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::testing::{load, problem_keys};

    #[test]
    fn the_default_name_needs_https_and_plain_http_names_the_cookie_otherwise() {
        assert_eq!(
            problem_keys(load(&[("TOKENJAR_COOKIE__SECURE", "false")]).unwrap().validate()),
            ["cookie.secure"]
        );
        let plain = load(&[
            ("TOKENJAR_COOKIE__SECURE", "false"),
            ("TOKENJAR_COOKIE__NAME", "auth-token"),
        ])
        .unwrap();
        let validated = plain.validate().unwrap();
        assert_eq!(validated.rules.cookies.name(), "auth-token");
    }

    #[test]
    fn same_site_takes_any_case_and_names_a_wrong_value() {
        let strict = load(&[("TOKENJAR_COOKIE__SAME_SITE", "Strict")]).unwrap();
        assert_eq!(strict.cookie.same_site, SameSiteSetting::Strict);
        let validated = strict.validate().unwrap();
        assert_eq!(validated.rules.cookies.policy().same_site, SameSite::Strict);

        let wrong = load(&[("TOKENJAR_COOKIE__SAME_SITE", "sometimes")]).unwrap();
        let problems = wrong.validate().err().unwrap();
        assert_eq!(
            problems[0].to_string(),
            "cookie.same_site: \"sometimes\" is not one of strict, lax, none"
        );
    }

    #[test]
    fn max_chunks_defaults_to_4_and_must_be_1_to_16() {
        let validated = load(&[]).unwrap().validate().unwrap();
        assert_eq!(validated.rules.cookies.max_chunks(), 4);
        let sixteen = load(&[("TOKENJAR_COOKIE__MAX_CHUNKS", "16")]).unwrap();
        assert_eq!(sixteen.validate().unwrap().rules.cookies.max_chunks(), 16);
        for wrong in ["0", "17"] {
            let problems = load(&[("TOKENJAR_COOKIE__MAX_CHUNKS", wrong)])
                .unwrap()
                .validate();
            assert_eq!(problem_keys(problems), ["cookie.max_chunks"], "{wrong}");
        }
    }
}
