//! The roots a `rediss://` connection trusts when `tls.ca_file` is set:
//! Mozilla's plus the file's (SPEC §12). redis-rs takes extra roots only as
//! PEM that replaces its built-in ones, so both go to it as one PEM.

use std::fmt::Write as _;
use std::path::Path;

use base64::Engine as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;

use crate::ConnectError;

/// Mozilla's root certificates and those of the file at `path`, as PEM.
pub(crate) fn roots_with(path: &Path) -> Result<Vec<u8>, ConnectError> {
    let file = std::fs::read(path).map_err(|source| ConnectError::CaFile {
        path: path.to_owned(),
        source,
    })?;
    let own = CertificateDer::pem_slice_iter(&file)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConnectError::CaFileContent {
            path: path.to_owned(),
            reason: format!("not PEM: {e}"),
        })?;
    if own.is_empty() {
        return Err(ConnectError::CaFileContent {
            path: path.to_owned(),
            reason: "holds no certificate".to_owned(),
        });
    }
    let mut pem = String::new();
    for cert in webpki_root_certs::TLS_SERVER_ROOT_CERTS.iter().chain(&own) {
        push_pem(&mut pem, cert);
    }
    Ok(pem.into_bytes())
}

/// Appends `cert` as a PEM block (64 base64 characters a line).
fn push_pem(pem: &mut String, cert: &CertificateDer<'_>) {
    let body = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
    pem.push_str("-----BEGIN CERTIFICATE-----\n");
    let mut rest = body.as_str();
    while !rest.is_empty() {
        let (line, tail) = rest.split_at(rest.len().min(64));
        // Writing to a String cannot fail.
        let _ = writeln!(pem, "{line}");
        rest = tail;
    }
    pem.push_str("-----END CERTIFICATE-----\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pem_holds_every_root_and_the_file() {
        let dir = std::env::temp_dir().join(format!("tokenjar-redis-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("ca.pem");
        // One of Mozilla's own, as a stand-in CA file.
        let mut one = String::new();
        push_pem(&mut one, &webpki_root_certs::TLS_SERVER_ROOT_CERTS[0]);
        std::fs::write(&file, &one).unwrap();

        let pem = roots_with(&file).unwrap();
        let parsed = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        assert_eq!(parsed.len(), webpki_root_certs::TLS_SERVER_ROOT_CERTS.len() + 1);
        assert_eq!(parsed.last(), webpki_root_certs::TLS_SERVER_ROOT_CERTS.first());

        std::fs::write(&file, "no certificate here\n").unwrap();
        assert!(matches!(
            roots_with(&file),
            Err(ConnectError::CaFileContent { .. })
        ));
        assert!(matches!(
            roots_with(&dir.join("missing.pem")),
            Err(ConnectError::CaFile { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
