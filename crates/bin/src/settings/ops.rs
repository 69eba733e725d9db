//! `[ops]`: the operator's side, the `/metrics` bearer token and the
//! separate listener for metrics and probes, for the adapter's
//! [`OpsSettings`]; the token never appears in `Debug` or `check-config`.

use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use tokenjar_adapters_actix::OpsSettings;

use super::section::{Problem, Problems, Section};

/// `ops.*`
#[derive(Clone, Deserialize, Serialize)]
pub struct OpsSection {
    /// Bearer token for `/metrics`; "" = open.
    pub metrics_token: String,
    /// A separate listener for `/metrics` and the probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
}

impl fmt::Debug for OpsSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpsSection")
            .field(
                "metrics_token",
                &if self.metrics_token.is_empty() {
                    ""
                } else {
                    "<redacted>"
                },
            )
            .field("listen", &self.listen)
            .finish()
    }
}

impl OpsSection {
    /// The section as `check-config` shows it: a set token hidden.
    pub fn redacted(&self) -> Self {
        let mut shown = self.clone();
        if !shown.metrics_token.is_empty() {
            shown.metrics_token = "<redacted>".to_owned();
        }
        shown
    }
}

impl Section for OpsSection {
    const NAME: &'static str = "ops";
    type Out = OpsSettings;

    fn validate(&self) -> Result<OpsSettings, Vec<Problem>> {
        let mut problems = Problems::in_section(Self::NAME);
        let listen = self.listen.as_deref().filter(|l| !l.trim().is_empty());
        let listen = match listen.map(|l| (l, l.trim().parse::<SocketAddr>())) {
            None => None,
            Some((_, Ok(addr))) => Some(addr),
            Some((text, Err(_))) => {
                problems.push(
                    "listen",
                    format!("{text:?} is not an address and port, e.g. 127.0.0.1:9091"),
                );
                None
            }
        };
        problems.finish(|| {
            Some(OpsSettings {
                metrics_token: (!self.metrics_token.is_empty()).then(|| self.metrics_token.clone()),
                listen,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_listen_address_is_quoted_as_written() {
        let section = OpsSection {
            listen: Some("localhost".into()),
            metrics_token: String::new(),
        };
        let problems = section.validate().unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!(
            problems[0].to_string(),
            "ops.listen: \"localhost\" is not an address and port, e.g. 127.0.0.1:9091"
        );
    }
}
