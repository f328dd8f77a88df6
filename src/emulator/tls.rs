//! HTTPS for the emulator (`--tls-cert-out`): a fresh self-signed certificate per start,
//! so a test can reach it the way the gateway reaches Google (TLS, HTTP/2 chosen by ALPN,
//! through a proxy if need be) and trust it with `ca_file`. The certificate names
//! `localhost` and `127.0.0.1` (and the listen address), and nothing here is ever reused:
//! the key lives only in this process.

use std::net::IpAddr;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

/// A self-signed certificate and the acceptor that serves it.
pub(super) struct SelfSigned {
    /// The certificate, PEM, for clients to trust.
    pub(super) pem: String,
    pub(super) acceptor: TlsAcceptor,
}

/// Generate a certificate for `localhost`, `127.0.0.1` and `ip`, and a server offering the
/// `alpn` protocols (FCM: `h2` and `http/1.1`; APNs: `h2` only, as Apple).
pub(super) fn self_signed(ip: IpAddr, alpn: &[&[u8]]) -> std::io::Result<SelfSigned> {
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    if !ip.is_unspecified() && !names.contains(&ip.to_string()) {
        names.push(ip.to_string());
    }
    let certified = rcgen::generate_simple_self_signed(names).map_err(std::io::Error::other)?;
    let chain = vec![CertificateDer::from(certified.cert.der().to_vec())];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
        .map_err(std::io::Error::other)?;
    server.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(SelfSigned {
        pem: certified.cert.pem(),
        acceptor: TlsAcceptor::from(Arc::new(server)),
    })
}
