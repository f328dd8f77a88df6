//! Firebase Cloud Messaging HTTP v1: service-account credentials, access tokens,
//! the send call, and the one place that maps FCM's answers to retry classes.
//!
//! Nothing here knows about Redis: the sender hands in a message and gets back an
//! [`Answer`].

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
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::push::{Push, Target};

pub const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Google's own libraries refresh between 10 s and 5 min before expiry.
const MAX_REFRESH_MARGIN: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum FcmError {
    #[error("reading service account {path}: {message}")]
    ServiceAccount { path: String, message: String },
    #[error("getting an access token from {uri}: {message}")]
    Token { uri: String, message: String },
    #[error("building the HTTP client: {0}")]
    Client(String),
}

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

/// How pushgate treats an FCM error (fcm-v1.md's table, in one place).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorClass {
    InvalidArgument,
    Unregistered,
    SenderIdMismatch,
    ThirdPartyAuthError,
    QuotaExceeded,
    Unavailable,
    Internal,
    /// 401 without an FCM error code: our access token was refused.
    Unauthenticated,
    /// Timeout, refused or reset connection: treated as UNAVAILABLE.
    Transport,
    /// Any other answer (e.g. 403 PERMISSION_DENIED for a wrong project).
    Other,
}

/// What to do after an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// The message itself is wrong, or the token is dead: fail now.
    Never,
    /// Back off exponentially with jitter (honouring Retry-After).
    Backoff,
    /// Project quota: slow the whole sender down, starting at a minute.
    Quota,
}

impl ErrorClass {
    pub fn retry(self) -> Retry {
        match self {
            ErrorClass::InvalidArgument
            | ErrorClass::Unregistered
            | ErrorClass::SenderIdMismatch
            | ErrorClass::ThirdPartyAuthError
            | ErrorClass::Other => Retry::Never,
            ErrorClass::QuotaExceeded => Retry::Quota,
            ErrorClass::Unavailable
            | ErrorClass::Internal
            | ErrorClass::Unauthenticated
            | ErrorClass::Transport => Retry::Backoff,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ErrorClass::InvalidArgument => "INVALID_ARGUMENT",
            ErrorClass::Unregistered => "UNREGISTERED",
            ErrorClass::SenderIdMismatch => "SENDER_ID_MISMATCH",
            ErrorClass::ThirdPartyAuthError => "THIRD_PARTY_AUTH_ERROR",
            ErrorClass::QuotaExceeded => "QUOTA_EXCEEDED",
            ErrorClass::Unavailable => "UNAVAILABLE",
            ErrorClass::Internal => "INTERNAL",
            ErrorClass::Unauthenticated => "UNAUTHENTICATED",
            ErrorClass::Transport => "TRANSPORT",
            ErrorClass::Other => "OTHER",
        }
    }
}

/// Classify an error answer: the FcmError detail first, then `error.status`, then HTTP.
/// Only FCM's own UNREGISTERED detail marks a token dead: a bare 404 (a wrong endpoint
/// path, a proxy's page) is `Other`, so a misconfiguration cannot bury good tokens.
pub fn classify(http_status: u16, body: &str) -> ErrorClass {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let error = parsed.as_ref().map(|v| &v["error"]);
    let detail = error
        .and_then(|e| e["details"].as_array())
        .and_then(|details| {
            details.iter().find_map(|d| {
                let is_fcm = d["@type"]
                    .as_str()
                    .is_some_and(|t| t.ends_with("google.firebase.fcm.v1.FcmError"));
                is_fcm.then(|| d["errorCode"].as_str()).flatten()
            })
        });
    let by_code = |code: &str| match code {
        "INVALID_ARGUMENT" => Some(ErrorClass::InvalidArgument),
        "UNREGISTERED" => Some(ErrorClass::Unregistered),
        "SENDER_ID_MISMATCH" => Some(ErrorClass::SenderIdMismatch),
        "THIRD_PARTY_AUTH_ERROR" => Some(ErrorClass::ThirdPartyAuthError),
        "QUOTA_EXCEEDED" => Some(ErrorClass::QuotaExceeded),
        "UNAVAILABLE" => Some(ErrorClass::Unavailable),
        "INTERNAL" => Some(ErrorClass::Internal),
        _ => None,
    };
    if let Some(class) = detail.and_then(by_code) {
        return class;
    }
    let status = error.and_then(|e| e["status"].as_str());
    let by_status = match status {
        Some("INVALID_ARGUMENT") => Some(ErrorClass::InvalidArgument),

        Some("UNAUTHENTICATED") => Some(ErrorClass::Unauthenticated),
        Some("RESOURCE_EXHAUSTED") => Some(ErrorClass::QuotaExceeded),
        Some("UNAVAILABLE") => Some(ErrorClass::Unavailable),
        Some("INTERNAL") => Some(ErrorClass::Internal),
        _ => None,
    };
    if let Some(class) = by_status {
        return class;
    }
    match http_status {
        400 => ErrorClass::InvalidArgument,
        401 => ErrorClass::Unauthenticated,
        429 => ErrorClass::QuotaExceeded,
        500 => ErrorClass::Internal,
        502..=504 => ErrorClass::Unavailable,
        _ => ErrorClass::Other,
    }
}

/// FCM's answer to one send.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Accepted {
        /// FCM's answer (`{"name": "projects/{project}/messages/{id}"}`), kept on the record.
        body: String,
    },
    Refused {
        class: ErrorClass,
        /// HTTP status, 0 when no answer came.
        http: u16,
        body: String,
        retry_after: Option<Duration>,
    },
}

/// The FCM HTTP v1 `message` for a route decision's push.
pub fn message_for(push: &Push) -> Value {
    let mut message = serde_json::Map::new();
    let (key, target) = match &push.target {
        Target::Token(t) => ("token", t),
        Target::Topic(t) => ("topic", t),
        Target::Condition(c) => ("condition", c),
    };
    message.insert(key.into(), target.clone().into());
    let mut notification = serde_json::Map::new();
    for (name, value) in [
        ("title", &push.title),
        ("body", &push.body),
        ("image", &push.image),
    ] {
        if let Some(v) = value {
            notification.insert(name.into(), v.clone().into());
        }
    }
    if !notification.is_empty() {
        message.insert("notification".into(), notification.into());
    }
    if !push.data.is_empty() {
        message.insert("data".into(), json!(push.data));
    }
    if let Some(android) = &push.android {
        message.insert("android".into(), android.clone());
    }
    if let Some(apns) = &push.apns {
        message.insert("apns".into(), apns.clone());
    }
    Value::Object(message)
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
    pub async fn send(&self, message: &Value, validate_only: bool) -> Answer {
        #[derive(serde::Serialize)]
        struct Body<'a> {
            message: &'a Value,
            validate_only: bool,
        }
        // Serialised from the borrowed message (`json!` would copy it first), once: a
        // resend after a 401 shares the same bytes.
        let body: hyper::body::Bytes = serde_json::to_vec(&Body {
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
        Answer::Refused {
            class: classify(http, &body),
            http,
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(http: u16, status: &str, code: Option<&str>) -> String {
        let details = code
            .map(|c| json!([{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": c}]))
            .unwrap_or(json!([]));
        json!({"error": {"code": http, "message": "m", "status": status, "details": details}})
            .to_string()
    }

    #[test]
    fn every_error_of_the_table_maps_to_its_class_and_retry_policy() {
        let cases = [
            (
                400,
                "INVALID_ARGUMENT",
                Some("INVALID_ARGUMENT"),
                ErrorClass::InvalidArgument,
                Retry::Never,
            ),
            (
                404,
                "NOT_FOUND",
                Some("UNREGISTERED"),
                ErrorClass::Unregistered,
                Retry::Never,
            ),
            (
                403,
                "PERMISSION_DENIED",
                Some("SENDER_ID_MISMATCH"),
                ErrorClass::SenderIdMismatch,
                Retry::Never,
            ),
            (
                401,
                "UNAUTHENTICATED",
                Some("THIRD_PARTY_AUTH_ERROR"),
                ErrorClass::ThirdPartyAuthError,
                Retry::Never,
            ),
            (
                429,
                "RESOURCE_EXHAUSTED",
                Some("QUOTA_EXCEEDED"),
                ErrorClass::QuotaExceeded,
                Retry::Quota,
            ),
            (
                503,
                "UNAVAILABLE",
                Some("UNAVAILABLE"),
                ErrorClass::Unavailable,
                Retry::Backoff,
            ),
            (
                500,
                "INTERNAL",
                Some("INTERNAL"),
                ErrorClass::Internal,
                Retry::Backoff,
            ),
            (
                401,
                "UNAUTHENTICATED",
                None,
                ErrorClass::Unauthenticated,
                Retry::Backoff,
            ),
            (
                403,
                "PERMISSION_DENIED",
                None,
                ErrorClass::Other,
                Retry::Never,
            ),
        ];
        for (http, status, code, class, retry) in cases {
            let got = classify(http, &envelope(http, status, code));
            assert_eq!(got, class, "{http} {status} {code:?}");
            assert_eq!(got.retry(), retry, "{class:?}");
        }
    }

    #[test]
    fn the_fcm_detail_wins_over_status_and_status_over_http() {
        // A 400 whose detail says UNREGISTERED is UNREGISTERED.
        assert_eq!(
            classify(
                400,
                &envelope(400, "INVALID_ARGUMENT", Some("UNREGISTERED"))
            ),
            ErrorClass::Unregistered
        );
        // No detail: the canonical status decides.
        assert_eq!(
            classify(500, &envelope(500, "UNAVAILABLE", None)),
            ErrorClass::Unavailable
        );
        // Not JSON at all (a proxy's HTML page): the HTTP status decides.
        assert_eq!(
            classify(502, "<html>bad gateway</html>"),
            ErrorClass::Unavailable
        );
        assert_eq!(classify(429, ""), ErrorClass::QuotaExceeded);
        assert_eq!(classify(418, ""), ErrorClass::Other);
        assert_eq!(
            classify(404, "<html>not found</html>"),
            ErrorClass::Other,
            "a bare 404 kills no token"
        );
        assert_eq!(
            classify(404, &envelope(404, "NOT_FOUND", None)),
            ErrorClass::Other
        );
    }

    #[test]
    fn a_push_becomes_an_fcm_message_with_exactly_one_target() {
        let push = Push {
            target: Target::Topic("news".into()),
            title: Some("제목".into()),
            body: None,
            image: None,
            data: [("uniqueKey".to_owned(), "K1".to_owned())].into(),
            android: Some(json!({"priority": "high"})),
            apns: None,
        };
        assert_eq!(
            message_for(&push),
            json!({"topic": "news", "notification": {"title": "제목"}, "data": {"uniqueKey": "K1"}, "android": {"priority": "high"}})
        );
        let bare = Push {
            target: Target::Token("tok".into()),
            title: None,
            body: None,
            image: None,
            data: Default::default(),
            android: None,
            apns: None,
        };
        assert_eq!(message_for(&bare), json!({"token": "tok"}));
    }

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
