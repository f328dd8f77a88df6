//! Apple's provider API (APNs) directly, with token auth: the client that sends one push
//! to one device and reads Apple's answer. Like `fcm`, nothing here knows about Redis: the
//! sender hands in a [`Push`] and gets back an [`Answer`] whose classes are the same map
//! to retries as FCM's.
//!
//! (Being built: this file holds the interface the sender uses.)

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::fcm::{Answer, ErrorClass};
use crate::push::Push;

/// What can fail before any push is sent: the key file.
#[derive(Debug, thiserror::Error)]
pub enum ApnsError {
    #[error("reading the APNs key {path}: {message}")]
    Key { path: String, message: String },
}

/// The app's settings, from its `[[app]]` (provider = "apns").
#[derive(Debug, Clone)]
pub struct ApnsSettings {
    pub endpoint: String,
    /// The bundle id, sent as `apns-topic`.
    pub topic: String,
    pub key_id: String,
    pub team_id: String,
    /// How long one provider token is used before a new one is signed.
    pub token_refresh: Duration,
}

/// The `.p8` signing key. Never printed.
pub struct ProviderKey {
    _pem: String,
}

impl ProviderKey {
    pub fn load(path: &Path) -> Result<ProviderKey, ApnsError> {
        let pem = std::fs::read_to_string(path).map_err(|e| ApnsError::Key {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Ok(ProviderKey { _pem: pem })
    }
}

/// Sends pushes for one APNs app.
pub struct ApnsClient {
    _http: reqwest::Client,
    _settings: ApnsSettings,
    _key: ProviderKey,
}

impl ApnsClient {
    pub fn new(http: reqwest::Client, settings: ApnsSettings, key: ProviderKey) -> ApnsClient {
        ApnsClient {
            _http: http,
            _settings: settings,
            _key: key,
        }
    }

    /// The app's bundle id (`apns-topic`).
    pub fn topic(&self) -> &str {
        &self._settings.topic
    }

    /// When the provider token in use is due to be replaced (unix ms).
    pub fn token_expires_at_ms(&self) -> Option<i64> {
        None
    }

    /// Whether a provider token is at hand.
    pub fn has_token(&self) -> bool {
        false
    }

    /// Send one push; `expiration` is `apns-expiration` (unix seconds) from its deadline.
    pub async fn send(&self, _push: &Push, _expiration: Option<i64>) -> Answer {
        Answer::Refused {
            class: ErrorClass::Transport,
            http: 0,
            body: "{\"error\":\"APNs is not built yet\"}".into(),
            retry_after: None,
            quota: None,
        }
    }

    /// Keep the provider token fresh in the background until `cancel`.
    pub async fn keep_fresh(self: Arc<Self>, cancel: CancellationToken) {
        cancel.cancelled().await;
    }
}
