//! `[tls]`: what tokenjar's outbound https trusts besides Mozilla's roots,
//! and the client certificate it presents for mutual TLS (SPEC §12), read
//! and checked now into the adapter's [`OutboundTls`].

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tokenjar_adapters_actix::{OutboundTls, OutboundTlsFiles, TlsFiles};

use super::section::{Problem, Problems, Section};

/// `tls.*`
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct TlsSection {
    /// Extra trusted root certificates (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain for mutual TLS (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_file: Option<PathBuf>,
}

impl Section for TlsSection {
    const NAME: &'static str = "tls";
    type Out = OutboundTls;

    fn validate(&self) -> Result<OutboundTls, Vec<Problem>> {
        let mut problems = Problems::in_section(Self::NAME);
        let client_cert = match (&self.client_cert_file, &self.client_key_file) {
            (None, None) => Some(None),
            (Some(cert_file), Some(key_file)) => Some(Some(TlsFiles {
                cert_file: cert_file.clone(),
                key_file: key_file.clone(),
            })),
            (Some(_), None) => {
                problems.push("client_key_file", "must be set with tls.client_cert_file");
                None
            }
            (None, Some(_)) => {
                problems.push("client_cert_file", "must be set with tls.client_key_file");
                None
            }
        };
        let tls = client_cert.and_then(|client_cert| {
            let files = OutboundTlsFiles {
                ca_file: self.ca_file.clone(),
                client_cert,
            };
            match OutboundTls::load(&files) {
                Ok(tls) => Some(tls),
                Err(errors) => {
                    for error in errors {
                        problems.push(error.key.key(), error.message);
                    }
                    None
                }
            }
        });
        problems.finish(|| tls)
    }
}

#[cfg(test)]
mod tests {
    use crate::settings::testing::{load, problem_keys};

    #[test]
    fn unset_means_the_web_roots_only() {
        let validated = load(&[]).unwrap().validate();
        assert!(validated.is_ok());
    }

    #[test]
    fn client_files_come_in_pairs_and_every_file_must_be_readable() {
        let settings = load(&[("TOKENJAR_TLS__CLIENT_CERT_FILE", "/nonexistent/cert.pem")]).unwrap();
        assert_eq!(problem_keys(settings.validate()), ["tls.client_key_file"]);
        let settings = load(&[
            ("TOKENJAR_TLS__CA_FILE", "/nonexistent/ca.pem"),
            ("TOKENJAR_TLS__CLIENT_CERT_FILE", "/nonexistent/cert.pem"),
            ("TOKENJAR_TLS__CLIENT_KEY_FILE", "/nonexistent/key.pem"),
        ])
        .unwrap();
        assert_eq!(
            problem_keys(settings.validate()),
            ["tls.ca_file", "tls.client_cert_file", "tls.client_key_file"]
        );
    }

    #[test]
    fn a_ca_file_without_a_certificate_is_refused() {
        let dir = std::env::temp_dir().join(format!("tokenjar-tls-section-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let settings = load(&[("TOKENJAR_TLS__CA_FILE", empty.to_str().unwrap())]).unwrap();
        let problems = settings.validate().err().unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].key, "tls.ca_file");
        assert!(
            problems[0].message.contains("no PEM certificate"),
            "{}",
            problems[0].message
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
