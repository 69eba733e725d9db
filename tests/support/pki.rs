//! A certificate authority made at test time (rcgen) and what the TLS tests
//! need from it: server certificates (good, expired, for another name),
//! client certificates for mutual TLS, rustls configurations for a test
//! client or a test server, and the files tokenjar is pointed at.

use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// A test CA.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA's own certificate.
    pub der: CertificateDer<'static>,
    /// The same, as PEM (for `tls.ca_file`).
    pub pem: String,
}

/// A certificate and its key, as PEM, and the certificate's DER to compare
/// with what a handshake served.
pub struct IssuedCert {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
    /// The certificate, DER.
    pub der: CertificateDer<'static>,
}

/// What a server certificate is made for.
pub enum Validity {
    /// Valid now, for 127.0.0.1 and localhost.
    Good,
    /// Expired in 2020.
    Expired,
    /// Valid now, but only for `api.invalid`.
    OtherName,
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl TestCa {
    /// A new CA with a fresh key.
    pub fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // A name of its own: two test CAs of one name would be told apart
        // only by their signatures.
        params.distinguished_name.push(
            DnType::CommonName,
            format!("tokenjar test CA {}", crate::unique()),
        );
        let cert = params.self_signed(&key).unwrap();
        Self {
            issuer: Issuer::new(params, key),
            der: cert.der().clone(),
            pem: cert.pem(),
        }
    }

    /// A server certificate for 127.0.0.1 and localhost, named `name` (its
    /// common name).
    pub fn server_cert(&self, name: &str) -> IssuedCert {
        self.server_cert_with(name, &Validity::Good)
    }

    /// A server certificate named `name`, made as `validity` says.
    pub fn server_cert_with(&self, name: &str, validity: &Validity) -> IssuedCert {
        let names = match validity {
            Validity::Good | Validity::Expired => vec!["127.0.0.1".to_owned(), "localhost".to_owned()],
            Validity::OtherName => vec!["api.invalid".to_owned()],
        };
        let mut params = CertificateParams::new(names).unwrap();
        if matches!(validity, Validity::Expired) {
            params.not_before = date_time_ymd(2019, 1, 1);
            params.not_after = date_time_ymd(2020, 1, 1);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params, name)
    }

    /// A client certificate named `name`, for mutual TLS.
    pub fn client_cert(&self, name: &str) -> IssuedCert {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params, name)
    }

    fn issue(&self, mut params: CertificateParams, name: &str) -> IssuedCert {
        let key = KeyPair::generate().unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        roots
    }

    /// A rustls client trusting only this CA, offering `alpn`.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(self.roots())
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    /// An awc client over TLS trusting this CA; `h2` offers HTTP/2
    /// besides HTTP/1.1.
    pub fn awc(&self, h2: bool) -> awc::Client {
        let alpn: &[&[u8]] = if h2 { &[b"h2", b"http/1.1"] } else { &[b"http/1.1"] };
        let connector = awc::Connector::new().rustls_0_23(self.client_config(alpn));
        awc::Client::builder()
            .connector(connector)
            .timeout(Duration::from_secs(30))
            .finish()
    }

    /// A rustls server serving `cert`, offering `alpn`; with `clients`,
    /// it requires a client certificate issued by that CA.
    pub fn server_config(cert: &IssuedCert, alpn: &[&[u8]], clients: Option<&TestCa>) -> ServerConfig {
        let chain = vec![cert.der.clone()];
        let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).unwrap();
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match clients {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(ca.roots()), provider())
                    .build()
                    .unwrap();
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(chain, key).unwrap();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
