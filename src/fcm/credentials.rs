//! Who pushgate is to Google: the service account, the signed JWT-bearer assertion, and
//! the OAuth2 access token it buys, cached and refreshed in the background so that no
//! send waits for one.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::sha2::Sha256;
use rsa::signature::{SignatureEncoding, Signer};
use serde::Deserialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{FcmError, truncate, without_url};

pub const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Google's own libraries refresh between 10 s and 5 min before expiry.
const MAX_REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// The fields of a Google service-account key file that pushgate uses.
#[derive(Clone, Deserialize)]
pub struct ServiceAccount {
    #[serde(rename = "type")]
    pub kind: String,
    pub project_id: String,
    pub private_key_id: String,
    private_key: String,
    pub client_email: String,
    #[serde(default = "default_token_uri")]
    pub token_uri: String,
}

fn default_token_uri() -> String {
    "https://oauth2.googleapis.com/token".into()
}

/// The private key never prints.
impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("project_id", &self.project_id)
            .field("private_key_id", &self.private_key_id)
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

impl ServiceAccount {
    pub fn load(path: &Path) -> Result<ServiceAccount, FcmError> {
        let fail = |message: String| FcmError::ServiceAccount {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        let account: ServiceAccount = serde_json::from_str(&text)
            .map_err(|e| fail(format!("not a service-account key: {e}")))?;
        if account.kind != "service_account" {
            return Err(fail(format!(
                "type is {:?}, not \"service_account\"",
                account.kind
            )));
        }
        // Parse once here so a bad key fails at start-up, not at the first send.
        account.signing_key().map_err(fail)?;
        Ok(account)
    }

    fn signing_key(&self) -> Result<SigningKey<Sha256>, String> {
        rsa::RsaPrivateKey::from_pkcs8_pem(&self.private_key)
            .map(SigningKey::<Sha256>::new)
            // The parser's message never contains key material.
            .map_err(|e| format!("private_key is not a PKCS#8 RSA key: {e}"))
    }

    /// The RS256-signed JWT assertion of the JWT-bearer grant.
    pub fn assertion(&self, now_secs: u64) -> Result<String, String> {
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": self.private_key_id});
        let claims = json!({
            "iss": self.client_email,
            "scope": SCOPE,
            "aud": self.token_uri,
            "iat": now_secs,
            "exp": now_secs + 3600,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self.signing_key()?.sign(signing_input.as_bytes());
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.to_bytes())
        ))
    }
}

/// An OAuth2 access token and when to stop using it.
#[derive(Clone)]
struct AccessToken {
    value: Arc<str>,
    /// Refresh from here on (some margin before the real expiry).
    refresh_at: Instant,
    expires_at: Instant,
}

/// Access tokens for one service account: cached, refreshed in the background before
/// they expire, at most one refresh in flight.
pub struct Credentials {
    account: ServiceAccount,
    http: reqwest::Client,
    current: RwLock<Option<AccessToken>>,
    /// Held while fetching, so concurrent callers wait for one refresh.
    refreshing: tokio::sync::Mutex<()>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    expires_in: u64,
}

impl Credentials {
    pub fn new(account: ServiceAccount, http: reqwest::Client) -> Credentials {
        Credentials {
            account,
            http,
            current: RwLock::new(None),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    pub fn project_id(&self) -> &str {
        &self.account.project_id
    }

    /// A token is cached and not expired.
    pub fn has_token(&self) -> bool {
        self.cached().is_some_and(|t| Instant::now() < t.expires_at)
    }

    /// When the cached token stops being used (unix ms), for the console's app card;
    /// none without a usable token.
    pub fn token_expires_at_ms(&self) -> Option<i64> {
        let left = self
            .cached()?
            .expires_at
            .checked_duration_since(Instant::now())?;
        Some(crate::clock::now_ms() + left.as_millis() as i64)
    }

    fn cached(&self) -> Option<AccessToken> {
        self.current.read().ok().and_then(|t| t.clone())
    }

    /// A token usable now: the cached one, or a freshly fetched one.
    pub async fn token(&self) -> Result<Arc<str>, FcmError> {
        match self.cached() {
            Some(t) if Instant::now() < t.expires_at => Ok(t.value),
            _ => self.refresh(None).await,
        }
    }

    /// Fetch a new token unless another caller already replaced `stale` meanwhile.
    pub async fn refresh(&self, stale: Option<&str>) -> Result<Arc<str>, FcmError> {
        let _one_at_a_time = self.refreshing.lock().await;
        if let Some(t) = self.cached() {
            let replaced = stale.is_some_and(|s| *s != *t.value);
            let still_fresh = stale.is_none() && Instant::now() < t.refresh_at;
            if replaced || still_fresh {
                return Ok(t.value);
            }
        }
        let token = self.fetch().await?;
        let value = token.value.clone();
        if let Ok(mut slot) = self.current.write() {
            *slot = Some(token);
        }
        Ok(value)
    }

    async fn fetch(&self) -> Result<AccessToken, FcmError> {
        let uri = &self.account.token_uri;
        let fail = |message: String| FcmError::Token {
            uri: uri.clone(),
            message,
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|e| fail(e.to_string()))?
            .as_secs();
        let assertion = self.account.assertion(now).map_err(fail)?;
        let started = Instant::now();
        let answer = self
            .http
            .post(uri)
            .form(&[
                ("grant_type", JWT_BEARER),
                ("assertion", assertion.as_str()),
            ])
            .send()
            .await
            .map_err(|e| fail(without_url(&e)))?;
        let status = answer.status();
        let body = answer.text().await.map_err(|e| fail(without_url(&e)))?;
        if !status.is_success() {
            return Err(fail(format!("HTTP {status}: {}", truncate(&body, 300))));
        }
        let answer: TokenAnswer =
            serde_json::from_str(&body).map_err(|e| fail(format!("unexpected answer: {e}")))?;
        let lifetime = Duration::from_secs(answer.expires_in);
        let margin = (lifetime / 4).min(MAX_REFRESH_MARGIN);
        tracing::info!(
            expires_in = answer.expires_in,
            "fetched an FCM access token"
        );
        Ok(AccessToken {
            value: answer.access_token.into(),
            refresh_at: started + lifetime - margin,
            expires_at: started + lifetime - margin / 4,
        })
    }

    /// Keep a fresh token ready, so that no send waits for one.
    pub async fn keep_fresh(self: Arc<Self>, cancel: CancellationToken) {
        let mut retry = Duration::from_millis(500);
        loop {
            let wait = match self.cached() {
                Some(t) => t.refresh_at.saturating_duration_since(Instant::now()),
                None => Duration::ZERO,
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = cancel.cancelled() => return,
            }
            match self.refresh(None).await {
                Ok(_) => retry = Duration::from_millis(500),
                Err(e) => {
                    tracing::error!(error = %e, "refreshing the FCM access token");
                    tokio::select! {
                        _ = tokio::time::sleep(retry) => {}
                        _ = cancel.cancelled() => return,
                    }
                    retry = (retry * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_account_key_never_prints() {
        let account = ServiceAccount {
            kind: "service_account".into(),
            project_id: "p".into(),
            private_key_id: "k".into(),
            private_key: "-----BEGIN PRIVATE KEY-----SECRET".into(),
            client_email: "a@p.iam.gserviceaccount.com".into(),
            token_uri: default_token_uri(),
        };
        assert!(!format!("{account:?}").contains("SECRET"));
        let err = account.assertion(0).unwrap_err();
        assert!(!err.contains("SECRET"), "{err}");
    }
}
