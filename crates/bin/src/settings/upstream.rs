//! `[upstream]`: where the API is (the domain's base URL) and how the
//! adapter's HTTP client reaches it (timeouts, pool).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokenjar_adapters_actix::UpstreamSettings;
use tokenjar_domain::UpstreamBase;

use super::section::{Problem, Problems, Section};

/// `upstream.*`
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct UpstreamSection {
    /// The API's base URL.
    pub url: String,
    /// Connect timeout.
    pub connect_timeout_ms: u64,
    /// Response-head timeout.
    pub timeout_ms: u64,
    /// Connections per worker; 0 = default.
    pub pool_size: usize,
}

/// The checked `[upstream]` section.
pub struct Upstream {
    /// The API's base URL, for the domain.
    pub base: UpstreamBase,
    /// The HTTP client's settings; `buffer_bytes` is 0 and `tls` unset
    /// here, since they come from `server.client_body_buffer_bytes` and
    /// `[tls]` (`Settings::validate` sets them).
    pub client: UpstreamSettings,
}

impl Section for UpstreamSection {
    const NAME: &'static str = "upstream";
    type Out = Upstream;

    fn validate(&self) -> Result<Upstream, Vec<Problem>> {
        let mut problems = Problems::in_section(Self::NAME);
        let base = http_url(&mut problems, "url", &self.url);
        problems.nonzero("connect_timeout_ms", self.connect_timeout_ms);
        problems.nonzero("timeout_ms", self.timeout_ms);
        problems.finish(|| {
            Some(Upstream {
                base: base?,
                client: UpstreamSettings {
                    connect_timeout: Duration::from_millis(self.connect_timeout_ms),
                    timeout: Duration::from_millis(self.timeout_ms),
                    pool_size: self.pool_size,
                    buffer_bytes: 0,
                    tls: None,
                },
            })
        })
    }
}

/// A URL tokenjar's HTTP client will call (`upstream.url`, `frontend.url`),
/// `http://` or `https://` (verified against the web roots and
/// `tls.ca_file`).
pub fn http_url(problems: &mut Problems, key: &str, url: &str) -> Option<UpstreamBase> {
    match UpstreamBase::parse(url) {
        Ok(base) => Some(base),
        Err(e) => {
            problems.push(key, e.to_string());
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::settings::testing::load;

    #[test]
    fn https_upstreams_are_accepted_and_other_schemes_refused() {
        let settings = load(&[("TOKENJAR_UPSTREAM__URL", "https://api.example/v1")]).unwrap();
        assert!(settings.validate().is_ok());
        let settings = load(&[("TOKENJAR_UPSTREAM__URL", "ftp://api.example")]).unwrap();
        let problems = settings.validate().err().unwrap();
        assert_eq!(problems[0].key, "upstream.url");
    }
}
