//! Firebase Cloud Messaging HTTP v1: the client that sends one message and reads FCM's
//! answer. Nothing here knows about Redis: the sender hands in a [`Message`] and gets back
//! an [`Answer`].
//!
//! - [`credentials`]: the service account and the access tokens it buys.
//! - [`message`]: the request body, as typed structs built from a [`Push`](crate::push::Push).
//! - [`answer`]: FCM's answer, and the one place that maps its errors to retry classes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

use serde_json::json;

pub mod answer;
pub mod credentials;
pub mod message;

pub use answer::{Answer, ErrorClass, QuotaScope, Retry, classify, quota_scope};
pub use credentials::{Credentials, SCOPE, ServiceAccount};
pub use message::{Expiry, Message};

use message::SendRequest;

/// What can fail before any message is sent: the key file, the token endpoint, the client.
#[derive(Debug, thiserror::Error)]
pub enum FcmError {
    #[error("reading service account {path}: {message}")]
    ServiceAccount { path: String, message: String },
    #[error("getting an access token from {uri}: {message}")]
    Token { uri: String, message: String },
    #[error("reading the CA file {path}: {message}")]
    CaFile { path: String, message: String },
    #[error("building the HTTP client: {0}")]
    Client(String),
}

/// reqwest errors name the URL; keep messages short and free of query strings (APNs
/// messages too: its URLs carry device tokens).
pub(crate) fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let mut text = kind.to_owned();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        text = format!("{text}: {inner}");
        source = inner.source();
    }
    text
}

pub(crate) fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}

/// Settings of the HTTP client. No `Debug`: `proxy` may carry a password.
#[derive(Clone)]
pub struct ClientSettings {
    /// `https://fcm.googleapis.com`, or the emulator's `http://…` (spoken as h2c).
    pub endpoint: String,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// `http://[user:password@]host:port`: the CONNECT proxy every request goes through
    /// (token grant and sends). `None` leaves reqwest's `HTTPS_PROXY`/`NO_PROXY` handling on.
    pub proxy: Option<String>,
    /// PEM CA certificates trusted besides the system store, path already resolved against
    /// the config file's directory.
    pub ca_file: Option<PathBuf>,
}

/// One pooled HTTP client: HTTP/2 over TLS to Google, h2c to a plain-http endpoint.
///
/// TLS is checked against the system CA store (rustls-platform-verifier, which reads it
/// through rustls-native-certs: `/etc/ssl/certs`, or `SSL_CERT_FILE`/`SSL_CERT_DIR`), plus
/// the certificates of `ca_file`. With `proxy` every request, whatever its host, goes
/// through that proxy; without it reqwest reads `HTTPS_PROXY`/`ALL_PROXY`/`NO_PROXY` (and
/// `HTTP_PROXY` for plain-http URLs) from the environment.
pub fn http_client(settings: &ClientSettings) -> Result<reqwest::Client, FcmError> {
    // reqwest is built without a default TLS backend; ring is the one compiled in.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder()
        .connect_timeout(settings.connect_timeout)
        .timeout(settings.request_timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .user_agent(concat!("pushgate/", env!("CARGO_PKG_VERSION")));
    if settings.endpoint.starts_with("http://") {
        builder = builder.http2_prior_knowledge();
    }
    if let Some(proxy) = &settings.proxy {
        // The error leaves the URL out: it may carry a password.
        let proxy = reqwest::Proxy::all(proxy.as_str())
            .map_err(|e| FcmError::Client(format!("the proxy: {}", without_url(&e))))?;
        builder = builder.proxy(proxy);
    }
    if let Some(path) = &settings.ca_file {
        let roots = read_ca_file(path)?
            .iter()
            .map(|der| reqwest::Certificate::from_der(der))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| FcmError::Client(without_url(&e)))?;
        builder = builder.tls_certs_merge(roots);
    }
    builder
        .build()
        .map_err(|e| FcmError::Client(without_url(&e)))
}

/// The certificates of a `ca_file`: every one must be a usable trust anchor, and there
/// must be at least one (`pushgate check` calls this too).
pub fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, FcmError> {
    let failed = |message: String| FcmError::CaFile {
        path: path.display().to_string(),
        message,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| failed(e.to_string()))?;
    if certs.is_empty() {
        return Err(failed("the file holds no PEM certificate".into()));
    }
    let mut roots = rustls::RootCertStore::empty();
    for (i, cert) in certs.iter().enumerate() {
        roots
            .add(cert.clone())
            .map_err(|e| failed(format!("certificate {} of {}: {e}", i + 1, certs.len())))?;
    }
    Ok(certs)
}

/// Sends messages for one project.
pub struct FcmClient {
    http: reqwest::Client,
    send_url: String,
    credentials: Arc<Credentials>,
}

impl FcmClient {
    pub fn new(http: reqwest::Client, endpoint: &str, credentials: Arc<Credentials>) -> FcmClient {
        let send_url = format!(
            "{}/v1/projects/{}/messages:send",
            endpoint.trim_end_matches('/'),
            credentials.project_id()
        );
        FcmClient {
            http,
            send_url,
            credentials,
        }
    }

    pub fn credentials(&self) -> &Arc<Credentials> {
        &self.credentials
    }

    /// Send one message. A 401 for our access token refreshes it once and resends.
    pub async fn send(&self, message: &Message<'_>, validate_only: bool) -> Answer {
        // Serialised once, straight from the borrowed push: a resend after a 401 shares
        // the same bytes.
        let body: hyper::body::Bytes = serde_json::to_vec(&SendRequest {
            message,
            validate_only,
        })
        .unwrap_or_default()
        .into();
        let token = match self.credentials.token().await {
            Ok(t) => t,
            Err(e) => return transport(e.to_string()),
        };
        let answer = self.post(&body, &token).await;
        if let Answer::Refused {
            class: ErrorClass::Unauthenticated,
            ..
        } = answer
        {
            tracing::info!("FCM refused the access token; refreshing it and resending");
            return match self.credentials.refresh(Some(&token)).await {
                Ok(fresh) => self.post(&body, &fresh).await,
                Err(e) => transport(e.to_string()),
            };
        }
        answer
    }

    async fn post(&self, body: &hyper::body::Bytes, token: &str) -> Answer {
        let sent = self
            .http
            .post(&self.send_url)
            .bearer_auth(token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone())
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => return transport(without_url(&e)),
        };
        let http = response.status().as_u16();
        let retry_after = retry_after(response.headers());
        let body = match response.text().await {
            Ok(b) => b,
            Err(e) => return transport(without_url(&e)),
        };
        if (200..300).contains(&http) {
            return Answer::Accepted { body };
        }
        let class = classify(http, &body);
        Answer::Refused {
            class,
            http,
            // Read from the whole body: the kept copy is cut short.
            quota: (class == ErrorClass::QuotaExceeded).then(|| quota_scope(&body)),
            body: truncate(&body, 2000).to_owned(),
            retry_after,
        }
    }
}

/// A provider's (or gateway's) `Retry-After` in seconds, the one form FCM, Apple and the
/// messaging gateways send.
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

fn transport(message: String) -> Answer {
    Answer::Refused {
        class: ErrorClass::Transport,
        http: 0,
        body: json!({"error": message}).to_string(),
        retry_after: None,
        quota: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(ca_file: Option<PathBuf>) -> ClientSettings {
        ClientSettings {
            endpoint: "https://fcm.googleapis.com".into(),
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            proxy: Some("http://pushgate:hunter2@squid.dmz:3128".into()),
            ca_file,
        }
    }

    #[test]
    fn a_ca_file_must_hold_at_least_one_usable_certificate() {
        let dir = tempfile::tempdir().expect("temp dir");
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
            .expect("a certificate");
        let cases = [
            ("two.pem", format!("{0}{0}", certified.cert.pem()), Ok(2)),
            ("empty.pem", String::new(), Err("holds no PEM certificate")),
            (
                "key.pem",
                certified.signing_key.serialize_pem(),
                Err("holds no PEM certificate"),
            ),
            (
                "garbage.pem",
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
                Err("certificate 1 of 1"),
            ),
        ];
        for (name, text, expected) in cases {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("writing the case");
            let read = read_ca_file(&path).map(|certs| certs.len());
            match (read, expected) {
                (Ok(n), Ok(want)) => assert_eq!(n, want, "{name}"),
                (Err(e), Err(needle)) => {
                    let text = e.to_string();
                    assert!(text.contains(needle), "{name}: {text}");
                    assert!(text.contains(&path.display().to_string()), "{text}");
                }
                (got, want) => panic!("{name}: got {got:?}, expected {want:?}"),
            }
        }
        let missing = dir.path().join("missing.pem");
        let err = read_ca_file(&missing)
            .expect_err("a missing file")
            .to_string();
        assert!(err.starts_with("reading the CA file"), "{err}");

        // The client is built with the proxy and the extra root, and fails on a bad file.
        assert!(http_client(&settings(Some(dir.path().join("two.pem")))).is_ok());
        assert!(http_client(&settings(Some(missing))).is_err());
    }
}
