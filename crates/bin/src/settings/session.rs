//! `[session]`: where sessions live (SPEC §17): in the sealed cookie (the
//! default), in this process's memory, or in Redis shared by every
//! instance; for the domain's [`StoreRules`] and the store `main` builds.

use std::fmt;

use serde::{Deserialize, Serialize};
use tokenjar_domain::StoreRules;

use super::section::{Problem, Problems, Section};

/// `session.*`
#[derive(Clone, Deserialize, Serialize)]
pub struct SessionSection {
    /// `cookie`, `memory` or `redis`.
    pub store: String,
    /// `redis://` or `rediss://` URL of the Redis (or Valkey) server; may
    /// hold a password.
    pub redis_url: String,
    /// Put before every key tokenjar writes to Redis.
    pub redis_prefix: String,
}

impl Default for SessionSection {
    fn default() -> Self {
        Self {
            store: "cookie".to_owned(),
            redis_url: String::new(),
            redis_prefix: "tokenjar:".to_owned(),
        }
    }
}

/// Where sessions live, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreChoice {
    /// In the sealed cookie.
    Cookie,
    /// In this process's memory.
    Memory,
    /// In Redis at `url`, keys after `prefix`.
    Redis {
        /// The server's URL, password included.
        url: String,
        /// The key prefix.
        prefix: String,
    },
}

impl StoreChoice {
    /// The domain's rules for it: `None` for the cookie.
    pub fn rules(&self) -> Option<StoreRules> {
        (*self != Self::Cookie).then(StoreRules::default)
    }
}

/// `url` with any password (or user) replaced: what a log line or
/// `check-config` may show.
pub fn redacted_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://<redacted>{}", &rest[at..]),
        None => url.to_owned(),
    }
}

impl fmt::Debug for SessionSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionSection")
            .field("store", &self.store)
            .field("redis_url", &redacted_url(&self.redis_url))
            .field("redis_prefix", &self.redis_prefix)
            .finish()
    }
}

impl SessionSection {
    /// The section as `check-config` shows it: the URL's password replaced.
    pub fn redacted(&self) -> Self {
        Self {
            redis_url: redacted_url(&self.redis_url),
            ..self.clone()
        }
    }
}

impl Section for SessionSection {
    const NAME: &'static str = "session";
    type Out = StoreChoice;

    fn validate(&self) -> Result<StoreChoice, Vec<Problem>> {
        let mut problems = Problems::in_section(Self::NAME);
        let choice = match self.store.as_str() {
            "cookie" => Some(StoreChoice::Cookie),
            "memory" => Some(StoreChoice::Memory),
            "redis" => {
                let scheme_ok = ["redis://", "rediss://"]
                    .iter()
                    .any(|scheme| self.redis_url.starts_with(scheme) && self.redis_url.len() > scheme.len());
                if !scheme_ok {
                    problems.push(
                        "redis_url",
                        format!(
                            "{:?} must be a redis:// or rediss:// URL when session.store is \"redis\"",
                            redacted_url(&self.redis_url)
                        ),
                    );
                }
                Some(StoreChoice::Redis {
                    url: self.redis_url.clone(),
                    prefix: self.redis_prefix.clone(),
                })
            }
            other => {
                problems.push(
                    "store",
                    format!("{other:?} is not one of \"cookie\", \"memory\", \"redis\""),
                );
                None
            }
        };
        problems.finish(|| choice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::testing::{load, problem_keys};

    #[test]
    fn sessions_live_in_the_cookie_unless_a_store_is_chosen() {
        let validated = load(&[]).unwrap().validate().unwrap();
        assert_eq!(validated.store, StoreChoice::Cookie);
        assert!(validated.rules.store.is_none());

        let memory = load(&[("TOKENJAR_SESSION__STORE", "memory")]).unwrap();
        let validated = memory.validate().unwrap();
        assert_eq!(validated.store, StoreChoice::Memory);
        assert!(validated.rules.store.is_some());

        let redis = load(&[
            ("TOKENJAR_SESSION__STORE", "redis"),
            (
                "TOKENJAR_SESSION__REDIS_URL",
                "rediss://:s3cret-pw@cache.internal:6380/2",
            ),
        ])
        .unwrap();
        assert_eq!(
            redis.validate().unwrap().store,
            StoreChoice::Redis {
                url: "rediss://:s3cret-pw@cache.internal:6380/2".to_owned(),
                prefix: "tokenjar:".to_owned()
            }
        );
        // The password shows nowhere.
        assert!(!format!("{redis:?}").contains("s3cret-pw"));
        assert!(!redis.redacted_toml().contains("s3cret-pw"));
        assert!(redis
            .redacted_toml()
            .contains("rediss://<redacted>@cache.internal:6380/2"));
    }

    #[test]
    fn bad_session_settings_name_their_keys() {
        let bad = load(&[("TOKENJAR_SESSION__STORE", "disk")]).unwrap();
        assert_eq!(problem_keys(bad.validate()), ["session.store"]);
        for url in ["", "http://cache:6379", "redis://"] {
            let bad = load(&[
                ("TOKENJAR_SESSION__STORE", "redis"),
                ("TOKENJAR_SESSION__REDIS_URL", url),
            ])
            .unwrap();
            assert_eq!(problem_keys(bad.validate()), ["session.redis_url"], "{url:?}");
        }
        let clear = load(&[
            ("TOKENJAR_SESSION__STORE", "memory"),
            ("TOKENJAR_COOKIE__ENCRYPT", "false"),
        ])
        .unwrap();
        assert_eq!(problem_keys(clear.validate()), ["cookie.encrypt"]);
    }

    #[test]
    fn passwords_are_taken_out_of_urls() {
        assert_eq!(redacted_url("redis://:pw@h:1/0"), "redis://<redacted>@h:1/0");
        assert_eq!(redacted_url("redis://user:pw@h"), "redis://<redacted>@h");
        assert_eq!(redacted_url("redis://h:1/0?x=@"), "redis://h:1/0?x=@");
        assert_eq!(redacted_url("redis://h"), "redis://h");
        assert_eq!(redacted_url("nonsense"), "nonsense");
    }
}
