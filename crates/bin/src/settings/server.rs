//! `[server]`: the listener (address, workers, limits, timeouts, TLS
//! certificate) for the adapter, and whom to believe about the browser
//! (public origin, trusted proxies) for the domain's forwarding rules.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokenjar_adapters_actix::{ServerSettings, TlsFiles, TlsSettings};
use tokenjar_domain::Forwarding;

use super::section::{Problem, Problems, Section};

/// `server.*`
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ServerSection {
    /// Listen address.
    pub host: String,
    /// Listen port.
    pub port: u16,
    /// Worker threads; 0 = one per core.
    pub workers: usize,
    /// Graceful shutdown time.
    pub shutdown_timeout_s: u64,
    /// Request body limit; 0 = none.
    pub max_body_bytes: u64,
    /// Connections per worker; 0 = default.
    pub max_connections: usize,
    /// Request-head timeout.
    pub client_request_timeout_ms: u64,
    /// Keep-alive idle time; 0 = off.
    pub keep_alive_s: u64,
    /// Longest pause between two reads of a request body.
    pub client_body_timeout_ms: u64,
    /// Bodies up to this size are read whole before the API is called
    /// (the upstream adapter's setting; `Settings::validate` passes it on).
    pub client_body_buffer_bytes: u64,
    /// The one origin served, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_origin: Option<String>,
    /// CIDR blocks of trusted load balancers.
    pub trusted_proxies: Vec<String>,
    /// PEM certificate chain: listen with TLS (with `tls_key_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key for `tls_cert_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key_file: Option<PathBuf>,
}

impl Section for ServerSection {
    const NAME: &'static str = "server";
    type Out = ServerSettings;

    /// The listener; [`ServerSection::forwarding`] checks the rest.
    fn validate(&self) -> Result<ServerSettings, Vec<Problem>> {
        let mut problems = Problems::in_section(Self::NAME);
        if self.host.trim().is_empty() {
            problems.push("host", "must not be empty");
        }
        if self.workers > 1024 {
            problems.push("workers", "more than 1024 workers is surely a mistake");
        }
        problems.nonzero("client_request_timeout_ms", self.client_request_timeout_ms);
        problems.nonzero("client_body_timeout_ms", self.client_body_timeout_ms);
        let tls = self.tls(&mut problems);
        problems.finish(|| {
            Some(ServerSettings {
                host: self.host.clone(),
                port: self.port,
                workers: self.workers,
                shutdown_timeout: Duration::from_secs(self.shutdown_timeout_s),
                max_body_bytes: self.max_body_bytes,
                max_connections: self.max_connections,
                client_request_timeout: Duration::from_millis(self.client_request_timeout_ms),
                keep_alive: Duration::from_secs(self.keep_alive_s),
                client_body_timeout: Duration::from_millis(self.client_body_timeout_ms),
                tls: tls?,
            })
        })
    }
}

impl ServerSection {
    /// The TLS certificate, read and checked now so that `check-config`
    /// reports a bad file too: `Some(None)` for plain HTTP, `None` when a
    /// problem was pushed.
    fn tls(&self, problems: &mut Problems) -> Option<Option<TlsSettings>> {
        let (cert_file, key_file) = match (&self.tls_cert_file, &self.tls_key_file) {
            (None, None) => return Some(None),
            (Some(cert_file), Some(key_file)) => (cert_file.clone(), key_file.clone()),
            (Some(_), None) => {
                problems.push("tls_key_file", "must be set with server.tls_cert_file");
                return None;
            }
            (None, Some(_)) => {
                problems.push("tls_cert_file", "must be set with server.tls_key_file");
                return None;
            }
        };
        match TlsSettings::load(TlsFiles { cert_file, key_file }) {
            Ok(tls) => Some(Some(tls)),
            Err(errors) => {
                for error in errors {
                    problems.push(error.file.key(), error.message);
                }
                None
            }
        }
    }
}

impl ServerSection {
    /// The domain's forwarding rules, from `public_origin` and
    /// `trusted_proxies`. A check of its own, not part of
    /// [`Section::validate`], because `check-config` has always listed these
    /// two keys' problems after the token section's (and tests pin that
    /// order); `Settings::validate` calls it there.
    ///
    /// # Errors
    /// Every problem with the two keys.
    pub fn forwarding(&self) -> Result<Forwarding, Vec<Problem>> {
        let mut problems = Problems::in_section(Self::NAME);
        let forwarding = problems.domain(Forwarding::new(
            self.public_origin.as_deref().unwrap_or_default(),
            &self.trusted_proxies,
        ));
        problems.finish(|| forwarding)
    }
}

#[cfg(test)]
mod tests {
    use crate::settings::testing::{load, problem_keys};

    #[test]
    fn the_listener_needs_a_host_sane_workers_and_nonzero_timeouts() {
        let settings = load(&[
            ("TOKENJAR_SERVER__HOST", " "),
            ("TOKENJAR_SERVER__WORKERS", "5000"),
            ("TOKENJAR_SERVER__CLIENT_REQUEST_TIMEOUT_MS", "0"),
        ])
        .unwrap();
        assert_eq!(
            problem_keys(settings.validate()),
            [
                "server.host",
                "server.workers",
                "server.client_request_timeout_ms"
            ]
        );
    }

    #[test]
    fn tls_files_come_in_pairs_and_must_be_readable() {
        let settings = load(&[("TOKENJAR_SERVER__TLS_CERT_FILE", "/nonexistent/cert.pem")]).unwrap();
        assert_eq!(problem_keys(settings.validate()), ["server.tls_key_file"]);
        let settings = load(&[("TOKENJAR_SERVER__TLS_KEY_FILE", "/nonexistent/key.pem")]).unwrap();
        assert_eq!(problem_keys(settings.validate()), ["server.tls_cert_file"]);
        // Both files missing: both named, at once.
        let settings = load(&[
            ("TOKENJAR_SERVER__TLS_CERT_FILE", "/nonexistent/cert.pem"),
            ("TOKENJAR_SERVER__TLS_KEY_FILE", "/nonexistent/key.pem"),
        ])
        .unwrap();
        assert_eq!(
            problem_keys(settings.validate()),
            ["server.tls_cert_file", "server.tls_key_file"]
        );
        // Unset: plain HTTP.
        let validated = load(&[]).unwrap().validate().unwrap();
        assert!(validated.adapter.server.tls.is_none());
    }
}
