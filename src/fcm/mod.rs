//! Firebase Cloud Messaging HTTP v1: the client that sends one message and reads FCM's
//! answer. Nothing here knows about Redis: the sender hands in a [`Message`] and gets back
//! an [`Answer`].
//!
//! - [`credentials`]: the service account and the access tokens it buys.
//! - [`message`]: the request body, as typed structs built from a [`Push`](crate::push::Push).
//! - [`answer`]: FCM's answer, and the one place that maps its errors to retry classes.

use std::sync::Arc;
use std::time::Duration;

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
    #[error("building the HTTP client: {0}")]
    Client(String),
}

/// reqwest errors name the URL; keep messages short and free of query strings.
fn without_url(e: &reqwest::Error) -> String {
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

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}

/// Settings of the HTTP client.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// `https://fcm.googleapis.com`, or the emulator's `http://…` (spoken as h2c).
    pub endpoint: String,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

/// One pooled HTTP client: HTTP/2 over TLS to Google, h2c to a plain-http endpoint.
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
    builder
        .build()
        .map_err(|e| FcmError::Client(without_url(&e)))
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
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
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

fn transport(message: String) -> Answer {
    Answer::Refused {
        class: ErrorClass::Transport,
        http: 0,
        body: json!({"error": message}).to_string(),
        retry_after: None,
        quota: None,
    }
}
