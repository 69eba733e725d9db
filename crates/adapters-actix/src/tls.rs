//! tokenjar's own TLS listener (SPEC §12): the certificate chain and key
//! read from PEM files and checked to belong together, and the rustls
//! configuration that serves them through a resolver whose pair a reload
//! (SIGHUP) swaps. A handshake takes the pair current at that moment, so
//! open connections keep theirs and new ones get the new one.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{Error as RustlsError, InconsistentKeys, ServerConfig};

/// The `server.tls_cert_file` and `server.tls_key_file` paths.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, the server's own certificate first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// Which of the two files a [`TlsFileError`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsFile {
    /// `server.tls_cert_file`
    Cert,
    /// `server.tls_key_file`
    Key,
}

impl TlsFile {
    /// The setting's name within `[server]`.
    pub fn key(self) -> &'static str {
        match self {
            Self::Cert => "tls_cert_file",
            Self::Key => "tls_key_file",
        }
    }
}

/// Why a pair of files cannot be served. The message names the path and
/// never quotes the files' contents: the key file holds a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFileError {
    /// The file at fault.
    pub file: TlsFile,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for TlsFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "server.{}: {}", self.file.key(), self.message)
    }
}

/// The crypto provider, chosen explicitly: rustls is built without a
/// default one (aws-lc-rs needs cmake and a C toolchain), and asking it for
/// the process default would panic.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A checked certificate chain and key, ready to serve.
#[derive(Clone)]
pub struct TlsSettings {
    /// Where they were read from, for reloads.
    pub files: TlsFiles,
    key: Arc<CertifiedKey>,
}

impl fmt::Debug for TlsSettings {
    // The signing key stays out of every log and printout.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSettings")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl TlsSettings {
    /// Reads both files and checks that the key matches the certificate.
    ///
    /// # Errors
    /// Every problem found, each naming its file: unreadable, no PEM
    /// certificate or key in it, a key rustls cannot use, or a key that
    /// does not belong to the certificate.
    pub fn load(files: TlsFiles) -> Result<Self, Vec<TlsFileError>> {
        let key = certified_key(&files)?;
        Ok(Self { files, key })
    }
}

pub(crate) fn certified_key(files: &TlsFiles) -> Result<Arc<CertifiedKey>, Vec<TlsFileError>> {
    let provider = provider();
    let chain = read_chain(files);
    let key = read_key(files, &provider);
    let (chain, key) = match (chain, key) {
        (Ok(chain), Ok(key)) => (chain, key),
        (chain, key) => return Err(chain.err().into_iter().chain(key.err()).collect()),
    };
    let certified = CertifiedKey::new(chain, key);
    match certified.keys_match() {
        // Unknown: the provider cannot tell for this key type; rustls's
        // handshake would then fail for clients, not start-up.
        Ok(()) | Err(RustlsError::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(Arc::new(certified)),
        Err(RustlsError::InconsistentKeys(InconsistentKeys::KeyMismatch)) => Err(vec![TlsFileError {
            file: TlsFile::Key,
            message: format!(
                "{} does not match the certificate in {}",
                files.key_file.display(),
                files.cert_file.display()
            ),
        }]),
        Err(e) => Err(vec![TlsFileError {
            file: TlsFile::Cert,
            message: format!(
                "{}: the first certificate is unusable: {e}",
                files.cert_file.display()
            ),
        }]),
    }
}

fn read_chain(files: &TlsFiles) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let path = &files.cert_file;
    let fail = |message: String| TlsFileError {
        file: TlsFile::Cert,
        message: format!("{}: {message}", path.display()),
    };
    let bytes = std::fs::read(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(format!("not valid PEM: {}", pem_problem(&e))))?;
    if chain.is_empty() {
        return Err(fail(
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    Ok(chain)
}

fn read_key(
    files: &TlsFiles,
    provider: &CryptoProvider,
) -> Result<Arc<dyn rustls::sign::SigningKey>, TlsFileError> {
    let path = &files.key_file;
    let fail = |message: String| TlsFileError {
        file: TlsFile::Key,
        message: format!("{}: {message}", path.display()),
    };
    let bytes = std::fs::read(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
    let der = PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => fail("holds no PEM private key (PKCS#8, PKCS#1 or SEC1)".into()),
        e => fail(format!("not valid PEM: {}", pem_problem(&e))),
    })?;
    provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| fail(format!("unusable private key: {e}")))
}

/// A PEM error described without quoting the file: some variants carry
/// the offending line, which in a key file is secret.
pub(crate) fn pem_problem(error: &pem::Error) -> &'static str {
    match error {
        pem::Error::MissingSectionEnd { .. } => "a section has no END line",
        pem::Error::IllegalSectionStart { .. } => "a BEGIN line is malformed",
        pem::Error::Base64Decode(_) => "a section is not valid base64",
        pem::Error::NoItemsFound => "no PEM section found",
        _ => "unreadable",
    }
}

/// Hands each handshake the pair current at that moment.
struct CurrentCert(RwLock<Arc<CertifiedKey>>);

impl fmt::Debug for CurrentCert {
    // rustls wants Debug; the key must not show in it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CurrentCert")
    }
}

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // A poisoned lock still holds a whole Arc: a panic elsewhere must
        // not stop every handshake.
        Some(Arc::clone(&self.0.read().unwrap_or_else(PoisonError::into_inner)))
    }
}

/// The TLS listener's certificate, reloadable while serving.
#[derive(Clone)]
pub struct TlsListener {
    files: TlsFiles,
    current: Arc<CurrentCert>,
}

impl TlsListener {
    /// Starts from the pair checked at start-up.
    pub fn new(settings: &TlsSettings) -> Self {
        Self {
            files: settings.files.clone(),
            current: Arc::new(CurrentCert(RwLock::new(Arc::clone(&settings.key)))),
        }
    }

    /// The rustls configuration for actix-web's listener; actix-web adds
    /// the ALPN protocols (h2, http/1.1).
    ///
    /// # Errors
    /// The provider supports none of rustls' default protocol versions.
    pub fn server_config(&self) -> io::Result<ServerConfig> {
        let resolver: Arc<dyn ResolvesServerCert> = self.current.clone();
        Ok(ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .with_no_client_auth()
            .with_cert_resolver(resolver))
    }

    /// Reads both files again; a good pair replaces the current one for
    /// new connections, a bad one is logged and the old pair kept.
    pub fn reload(&self) {
        match certified_key(&self.files) {
            Ok(key) => {
                *self.current.0.write().unwrap_or_else(PoisonError::into_inner) = key;
                tracing::info!(
                    cert_file = %self.files.cert_file.display(),
                    "new TLS certificate in use for new connections"
                );
            }
            Err(problems) => {
                for problem in problems {
                    tracing::warn!("TLS certificate not reloaded, the old one stays in use: {problem}");
                }
            }
        }
    }
}
