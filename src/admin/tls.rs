//! HTTPS on the admin listener itself (`[admin] tls_cert`, `tls_key`), so a bank need
//! not put a proxy in front of the console to get TLS. rustls with the ring provider.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading the admin certificate {path}: {cause}")]
    Cert {
        path: PathBuf,
        cause: rustls::pki_types::pem::Error,
    },
    #[error("the admin certificate file {0} holds no certificate")]
    NoCert(PathBuf),
    #[error("reading the admin private key {path}: {cause}")]
    Key {
        path: PathBuf,
        cause: rustls::pki_types::pem::Error,
    },
    #[error("the admin certificate and key do not make a TLS server: {0}")]
    Config(#[from] rustls::Error),
}

/// The acceptor for the configured certificate, or `None` when TLS is off.
pub fn acceptor(config: &Config) -> Result<Option<TlsAcceptor>, TlsError> {
    let (Some(cert), Some(key)) = (&config.admin.tls_cert, &config.admin.tls_key) else {
        return Ok(None);
    };
    let (cert, key) = (config.resolve(cert), config.resolve(key));
    let chain = CertificateDer::pem_file_iter(&cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|cause| TlsError::Cert {
            path: cert.clone(),
            cause,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCert(cert));
    }
    let private = PrivateKeyDer::from_pem_file(&key).map_err(|cause| TlsError::Key {
        path: key.clone(),
        cause,
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, private)?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(TlsAcceptor::from(Arc::new(server))))
}
