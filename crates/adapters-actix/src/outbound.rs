//! tokenjar's TLS to the API and the web app's server (SPEC §12): the
//! rustls client configuration (Mozilla's roots plus `tls.ca_file`, the
//! client certificate for mutual TLS, verification always on), the socket
//! the upstream guard reads through (plain TCP or TLS over it), and what a
//! failed handshake is called in the log.
//!
//! tokenjar does the handshake itself, inside its connector, rather than
//! letting awc do it: awc would put TLS above the connector's stream, where
//! the upstream guard ([`crate::guard`]) would see ciphertext instead of the
//! answers it must hold to one per request. awc is handed the https URL as
//! `http://host:port` on a client whose every connection is TLS
//! ([`crate::upstream`]), with the original `Host`.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use actix_codec::{AsyncRead, AsyncWrite, ReadBuf};
use actix_rt::net::{ActixStream, Ready, TcpStream};
use rustls::client::ResolvesClientCert;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::sign::CertifiedKey;
use rustls::{AlertDescription, CertificateError, ClientConfig, RootCertStore, SignatureScheme};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::tls::{self, TlsFile, TlsFileError, TlsFiles};

/// The `[tls]` settings: what outbound https trusts and presents.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutboundTlsFiles {
    /// `tls.ca_file`: extra trusted roots (PEM), besides Mozilla's.
    pub ca_file: Option<PathBuf>,
    /// `tls.client_cert_file` and `tls.client_key_file`: the certificate
    /// presented to servers that ask for one (mutual TLS).
    pub client_cert: Option<TlsFiles>,
}

/// Which `[tls]` setting an [`OutboundTlsError`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutboundTlsKey {
    /// `tls.ca_file`
    CaFile,
    /// `tls.client_cert_file`
    ClientCertFile,
    /// `tls.client_key_file`
    ClientKeyFile,
}

impl OutboundTlsKey {
    /// The setting's name within `[tls]`.
    pub fn key(self) -> &'static str {
        match self {
            Self::CaFile => "ca_file",
            Self::ClientCertFile => "client_cert_file",
            Self::ClientKeyFile => "client_key_file",
        }
    }
}

/// Why the `[tls]` files cannot be used; the message names the path and
/// never quotes a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboundTlsError {
    /// The setting at fault.
    pub key: OutboundTlsKey,
    /// What is wrong with its file.
    pub message: String,
}

/// The client side of TLS, shared by every worker: one rustls
/// configuration (and so one session cache for resumed handshakes) in two
/// variants that differ only in the protocols offered by ALPN.
#[derive(Clone)]
pub struct OutboundTls {
    /// HTTP/1.1 only: the connections awc reads through the guard.
    connector: TlsConnector,
    /// `h2` and `http/1.1`: the first connection to an https origin, which
    /// finds out whether the API speaks HTTP/2 ([`crate::http2`]).
    offering_h2: TlsConnector,
}

impl fmt::Debug for OutboundTls {
    // The client key stays out of every printout.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OutboundTls")
    }
}

impl OutboundTls {
    /// Reads the `[tls]` files and builds the client configuration:
    /// Mozilla's roots (`webpki-roots`) plus every certificate in
    /// `ca_file`, and the client certificate when one is set. [`connect`]
    /// offers HTTP/1.1 only (the guard follows HTTP/1 answers);
    /// [`connect_offering_h2`] offers HTTP/2 first.
    ///
    /// [`connect`]: Self::connect
    /// [`connect_offering_h2`]: Self::connect_offering_h2
    ///
    /// # Errors
    /// Every problem found, each naming its setting.
    pub fn load(files: &OutboundTlsFiles) -> Result<Self, Vec<OutboundTlsError>> {
        let mut problems = Vec::new();
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = &files.ca_file {
            if let Err(message) = add_roots(&mut roots, path) {
                problems.push(OutboundTlsError {
                    key: OutboundTlsKey::CaFile,
                    message,
                });
            }
        }
        let client_key = match &files.client_cert {
            None => None,
            Some(pair) => match tls::certified_key(pair) {
                Ok(key) => Some(key),
                Err(errors) => {
                    problems.extend(errors.into_iter().map(client_cert_problem));
                    None
                }
            },
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        let builder = ClientConfig::builder_with_provider(tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| {
                vec![OutboundTlsError {
                    key: OutboundTlsKey::CaFile,
                    message: format!("no TLS version is available: {e}"),
                }]
            })?
            .with_root_certificates(roots);
        let mut config = match client_key {
            Some(key) => builder.with_client_cert_resolver(Arc::new(ClientCert(key))),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        // A clone shares the roots, the client certificate and the session
        // cache (an `Arc` inside); a resumed session renegotiates ALPN.
        let mut offering_h2 = config.clone();
        offering_h2.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            offering_h2: TlsConnector::from(Arc::new(offering_h2)),
        })
    }

    /// A TLS session over `tcp` with `host` (a name or an IP address; the
    /// certificate must be valid for it).
    ///
    /// # Errors
    /// The handshake failed; the message says why in words an operator
    /// can act on ([`describe`]).
    pub async fn connect(&self, host: &str, tcp: TcpStream) -> io::Result<TlsStream<TcpStream>> {
        handshake(&self.connector, host, tcp).await
    }

    /// Like [`connect`](Self::connect), offering `h2` before `http/1.1`;
    /// also says whether the server chose `h2`.
    ///
    /// # Errors
    /// As for [`connect`](Self::connect).
    pub async fn connect_offering_h2(
        &self,
        host: &str,
        tcp: TcpStream,
    ) -> io::Result<(TlsStream<TcpStream>, bool)> {
        let tls = handshake(&self.offering_h2, host, tcp).await?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        Ok((tls, h2))
    }
}

async fn handshake(connector: &TlsConnector, host: &str, tcp: TcpStream) -> io::Result<TlsStream<TcpStream>> {
    // A URI's IPv6 host comes in brackets; a certificate names the bare
    // address.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(bare.to_owned()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("TLS: {host:?} is not a valid server name"),
        )
    })?;
    connector
        .connect(name, tcp)
        .await
        .map_err(|e| io::Error::new(e.kind(), describe(&e, bare)))
}

fn add_roots(roots: &mut RootCertStore, path: &PathBuf) -> Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: cannot read it: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not valid PEM: {}", path.display(), tls::pem_problem(&e)))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| format!("{}: a certificate cannot be a trusted root: {e}", path.display()))?;
    }
    Ok(())
}

/// A problem with the client certificate pair, under its `[tls]` key.
fn client_cert_problem(error: TlsFileError) -> OutboundTlsError {
    OutboundTlsError {
        key: match error.file {
            TlsFile::Cert => OutboundTlsKey::ClientCertFile,
            TlsFile::Key => OutboundTlsKey::ClientKeyFile,
        },
        message: error.message,
    }
}

/// Presents the one client certificate to every server that asks.
struct ClientCert(Arc<CertifiedKey>);

impl fmt::Debug for ClientCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientCert")
    }
}

impl ResolvesClientCert for ClientCert {
    fn resolve(&self, _root_hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A failed handshake in an operator's words: which of the usual causes it
/// was (unknown CA, expired, wrong name, no client certificate), else
/// rustls' own description.
pub fn describe(error: &io::Error, host: &str) -> String {
    let why = match rustls_error(error) {
        Some(tls) => explain(tls, host),
        None => error.to_string(),
    };
    format!("TLS handshake with {host} failed: {why}")
}

/// The TLS error inside an I/O error, if that is what it is.
pub fn rustls_error(error: &io::Error) -> Option<&rustls::Error> {
    error.get_ref()?.downcast_ref::<rustls::Error>()
}

/// A TLS error explained for the log; `host` as the certificate should
/// name it.
pub fn explain(error: &rustls::Error, host: &str) -> String {
    match error {
        rustls::Error::InvalidCertificate(cert) => match cert {
            // BadSignature: a trusted CA of the issuer's name exists, but
            // did not sign it; for an operator that is the same problem.
            CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                "the server's certificate is signed by an unknown CA (add the CA to tls.ca_file)".to_owned()
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "the server's certificate has expired".to_owned()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the server's certificate is not valid yet".to_owned()
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!("the server's certificate is not valid for the host name {host}")
            }
            CertificateError::Revoked => "the server's certificate is revoked".to_owned(),
            other => format!("the server's certificate is invalid: {other:?}"),
        },
        // TLS 1.3 clients finish the handshake before the server has
        // checked their certificate: this alert comes with the first read.
        rustls::Error::AlertReceived(
            alert @ (AlertDescription::CertificateRequired
            | AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown),
        ) => format!(
            "the server refused tokenjar's client certificate or wants one ({alert:?}; see tls.client_cert_file)"
        ),
        other => other.to_string(),
    }
}

/// The socket under an upstream connection: plain TCP, or TLS over it.
/// The TLS session is boxed: awc moves connections by value, and most are
/// plain.
pub enum Transport {
    /// `http://`
    Plain(TcpStream),
    /// `https://`
    Tls(Box<TlsStream<TcpStream>>),
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Plain(_) => "Transport::Plain",
            Self::Tls(_) => "Transport::Tls",
        })
    }
}

impl Transport {
    fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(tcp) => tcp,
            Self::Tls(tls) => tls.get_ref().0,
        }
    }
}

impl AsyncRead for Transport {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(tcp) => tcp.is_write_vectored(),
            Self::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}

impl ActixStream for Transport {
    // Readiness of the socket itself, as actix-tls reports it for its TLS
    // streams: TLS bytes arrive and leave through it.
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<Ready>> {
        ActixStream::poll_read_ready(self.tcp(), cx)
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<Ready>> {
        ActixStream::poll_write_ready(self.tcp(), cx)
    }
}
