//! Apple's provider API (APNs) directly, with token auth: the client that sends one push
//! to one device and reads Apple's answer. Like `fcm`, nothing here knows about Redis: the
//! sender hands in a [`Push`] and gets back an [`Answer`] whose classes are the same map
//! to retries as FCM's.
//!
//! - [`token`]: the `.p8` key and the provider token (ES256 JWT) signed with it.
//! - [`payload`]: the request (path, `apns-*` headers, JSON payload) built from a push,
//!   and the script-time [`check`](payload::check).
//! - [`answer`]: Apple's answer, and the one place that maps its reasons to error classes.
//!
//! The HTTP client is FCM's [`http_client`](crate::fcm::http_client): HTTP/2 over TLS
//! (by ALPN) to Apple, h2c to a plain-http emulator, pooled, through the app's proxy.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;

pub mod answer;
pub mod payload;
pub mod token;

pub use payload::{Request, check};
pub use token::{ProviderKey, ProviderTokens};

use crate::fcm::{Answer, ErrorClass, without_url};
use crate::push::Push;

/// Apple's bounds on how long one provider token is used.
const TOKEN_WINDOW: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(20 * 60)..=Duration::from_secs(60 * 60);

/// What can fail before any push is sent: the key file, signing a token.
#[derive(Debug, thiserror::Error)]
pub enum ApnsError {
    #[error("reading the APNs key {path}: {message}")]
    Key { path: String, message: String },
    #[error("signing an APNs provider token: {0}")]
    Sign(String),
}

/// The app's settings, from its `[[app]]` (provider = "apns").
#[derive(Debug, Clone)]
pub struct ApnsSettings {
    /// `https://api.push.apple.com`, the sandbox's, or an emulator's.
    pub endpoint: String,
    /// The bundle id, sent as `apns-topic`.
    pub topic: String,
    /// The key's id (`kid`).
    pub key_id: String,
    /// The team's id (`iss`).
    pub team_id: String,
    /// How long one provider token is used before a new one is signed.
    pub token_refresh: Duration,
}

/// Sends pushes for one APNs app. No `Debug`: it holds the key.
pub struct ApnsClient {
    http: reqwest::Client,
    settings: ApnsSettings,
    tokens: ProviderTokens,
}

impl ApnsClient {
    pub fn new(http: reqwest::Client, settings: ApnsSettings, key: ProviderKey) -> ApnsClient {
        if !TOKEN_WINDOW.contains(&settings.token_refresh) {
            tracing::warn!(
                token_refresh_secs = settings.token_refresh.as_secs(),
                "Apple wants one provider token used for 20 to 60 minutes (token_refresh_secs = 1200 to 3600): \
                 older tokens get 403 ExpiredProviderToken, faster refreshes 429 TooManyProviderTokenUpdates"
            );
        }
        let tokens = ProviderTokens::new(
            key,
            &settings.key_id,
            &settings.team_id,
            settings.token_refresh,
        );
        ApnsClient {
            http,
            settings,
            tokens,
        }
    }

    /// The app's bundle id (`apns-topic`).
    pub fn topic(&self) -> &str {
        &self.settings.topic
    }

    /// When the provider token in use is due to be replaced (unix ms), once one is signed.
    pub fn token_expires_at_ms(&self) -> Option<i64> {
        self.tokens
            .has_token()
            .then(|| crate::clock::now_ms() + self.tokens.due_in().as_millis() as i64)
    }

    /// Whether a provider token is at hand.
    pub fn has_token(&self) -> bool {
        self.tokens.has_token()
    }

    /// The provider tokens, for the dashboard and tests.
    pub fn tokens(&self) -> &ProviderTokens {
        &self.tokens
    }

    /// Send one push; `expiration` is `apns-expiration` (unix seconds) from its deadline.
    /// A 403 for the provider token gets one new token (unless another send already
    /// replaced it, or one was forced moments ago) and one resend.
    pub async fn send(&self, push: &Push, expiration: Option<i64>) -> Answer {
        let request = match Request::for_push(push, &self.settings.topic, expiration) {
            Ok(request) => request,
            Err(message) => return not_sent(ErrorClass::InvalidArgument, message),
        };
        let token = match self.tokens.token() {
            Ok(token) => token,
            Err(e) => return not_sent(ErrorClass::Transport, e.to_string()),
        };
        let answer = self.post(&request, &token).await;
        if let Answer::Refused {
            class: ErrorClass::InvalidProviderToken,
            ..
        } = answer
            && let Some(fresh) = self.tokens.replace(&token)
        {
            tracing::info!("Apple refused the provider token; resending with a new one");
            return self.post(&request, &fresh).await;
        }
        answer
    }

    async fn post(&self, request: &Request, token: &str) -> Answer {
        let url = format!(
            "{}{}",
            self.settings.endpoint.trim_end_matches('/'),
            request.path
        );
        let mut post = self
            .http
            .post(url)
            // Apple's spelling; the scheme is case-insensitive all the same.
            .header(reqwest::header::AUTHORIZATION, format!("bearer {token}"))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(request.body.clone());
        for (name, value) in request.headers() {
            post = post.header(name, value);
        }
        let response = match post.send().await {
            Ok(response) => response,
            Err(e) => return not_sent(ErrorClass::Transport, without_url(&e)),
        };
        let http = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let apns_id = header("apns-id");
        let unique_id = header("apns-unique-id");
        let retry_after = crate::fcm::retry_after(response.headers());
        let text = match response.text().await {
            Ok(text) => text,
            Err(e) => return not_sent(ErrorClass::Transport, without_url(&e)),
        };
        answer::read(
            http,
            apns_id.as_deref(),
            unique_id.as_deref(),
            retry_after,
            &text,
        )
    }

    /// Keep the provider token fresh in the background until `cancel`: a new one is
    /// signed when the current one has been used for `token_refresh`, so no send signs.
    pub async fn keep_fresh(self: Arc<Self>, cancel: CancellationToken) {
        let mut retry = Duration::from_millis(500);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.tokens.due_in()) => {}
                _ = cancel.cancelled() => return,
            }
            match self.tokens.token() {
                Ok(_) => retry = Duration::from_millis(500),
                Err(e) => {
                    tracing::error!(error = %e, "signing the APNs provider token");
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

/// A push that was not sent, or got no answer.
fn not_sent(class: ErrorClass, message: String) -> Answer {
    Answer::Refused {
        class,
        http: 0,
        body: json!({ "error": message }).to_string(),
        retry_after: None,
        quota: None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use http_body_util::{BodyExt as _, Full};
    use hyper::body::{Bytes, Incoming};
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use p256::ecdsa::signature::Verifier as _;
    use serde_json::Value;

    use super::*;
    use crate::fcm::QuotaScope;
    use crate::push::Target;

    const DEVICE: &str = "00fc13adff785122b4ad28809a3420982341241421348097878e577c991de8f0";

    /// One request as Apple would see it.
    #[derive(Debug, Clone)]
    struct Seen {
        http2: bool,
        path: String,
        headers: Vec<(String, String)>,
        body: Value,
    }

    impl Seen {
        fn header(&self, name: &str) -> Option<&str> {
            (self.headers.iter())
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        }
        fn token(&self) -> &str {
            self.header("authorization")
                .and_then(|a| a.strip_prefix("bearer "))
                .expect("a bearer token")
        }
    }

    /// A stand-in for Apple over h2c: answers from `answers` in turn (then 200), and
    /// keeps every request it saw.
    struct Apple {
        url: String,
        seen: Arc<Mutex<Vec<Seen>>>,
        answers: Arc<Mutex<VecDeque<(u16, &'static str)>>>,
        _stop: tokio::task::JoinHandle<()>,
    }

    impl Apple {
        async fn start() -> Apple {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let seen = Arc::new(Mutex::new(Vec::new()));
            let answers = Arc::new(Mutex::new(VecDeque::new()));
            let (s, a) = (seen.clone(), answers.clone());
            let stop = tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let (seen, answers) = (s.clone(), a.clone());
                    let service = service_fn(move |request: hyper::Request<Incoming>| {
                        let (seen, answers) = (seen.clone(), answers.clone());
                        async move {
                            let http2 = request.version() == hyper::Version::HTTP_2;
                            let path = request.uri().path().to_owned();
                            let headers = (request.headers().iter())
                                .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_owned()))
                                .collect();
                            let bytes = request.into_body().collect().await?.to_bytes();
                            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                            seen.lock().unwrap().push(Seen {
                                http2,
                                path,
                                headers,
                                body,
                            });
                            let (status, reason) =
                                answers.lock().unwrap().pop_front().unwrap_or((200, ""));
                            let mut answer = hyper::Response::builder().status(status);
                            let body = if status == 200 {
                                answer = answer
                                    .header("apns-id", "5e2b07b8-1f7a-4b33-9d0b-3c8f8f0f4a11");
                                String::new()
                            } else {
                                answer = answer.header("retry-after", "3");
                                reason.to_owned()
                            };
                            Ok::<_, hyper::Error>(
                                answer.body(Full::new(Bytes::from(body))).unwrap(),
                            )
                        }
                    });
                    tokio::spawn(async move {
                        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
            Apple {
                url,
                seen,
                answers,
                _stop: stop,
            }
        }

        fn answer(&self, status: u16, body: &'static str) {
            self.answers.lock().unwrap().push_back((status, body));
        }

        fn seen(&self) -> Vec<Seen> {
            self.seen.lock().unwrap().clone()
        }
    }

    fn client(endpoint: &str) -> ApnsClient {
        let http = crate::fcm::http_client(&crate::fcm::ClientSettings {
            endpoint: endpoint.to_owned(),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            proxy: None,
            ca_file: None,
        })
        .expect("an HTTP client");
        let settings = ApnsSettings {
            endpoint: endpoint.to_owned(),
            topic: "kr.example.bank".into(),
            key_id: "ABC123DEFG".into(),
            team_id: "TEAM123456".into(),
            token_refresh: Duration::from_secs(2400),
        };
        let key = ProviderKey::from_pem(&token::tests::p8()).expect("a key");
        ApnsClient::new(http, settings, key)
    }

    fn push() -> Push {
        Push {
            title: Some("로그인 알림".into()),
            body: Some("새 기기에서 로그인했습니다".into()),
            data: [("uniqueKey".to_owned(), "K1".to_owned())].into(),
            ttl_secs: Some(600),
            ..Push::new(Target::Token(DEVICE.into()))
        }
    }

    fn verifies(client: &ApnsClient, token: &str) -> bool {
        let (input, signature) = token.rsplit_once('.').unwrap();
        let signature =
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, signature)
                .unwrap();
        let signature = p256::ecdsa::Signature::from_slice(&signature).unwrap();
        client
            .tokens
            .key()
            .verifying_key()
            .verify(input.as_bytes(), &signature)
            .is_ok()
    }

    #[tokio::test]
    async fn a_push_is_posted_over_http2_with_its_headers_token_and_payload() {
        let apple = Apple::start().await;
        let client = client(&apple.url);
        let answer = client.send(&push(), Some(1_700_000_600)).await;
        assert_eq!(
            answer,
            Answer::Accepted {
                body: r#"{"apns-id":"5e2b07b8-1f7a-4b33-9d0b-3c8f8f0f4a11"}"#.into()
            }
        );
        let seen = apple.seen();
        assert_eq!(seen.len(), 1);
        let request = &seen[0];
        assert!(request.http2, "h2c to a plain-http endpoint");
        assert_eq!(request.path, format!("/3/device/{DEVICE}"));
        assert_eq!(request.header("apns-topic"), Some("kr.example.bank"));
        assert_eq!(request.header("apns-push-type"), Some("alert"));
        assert_eq!(request.header("apns-priority"), Some("10"));
        assert_eq!(request.header("apns-expiration"), Some("1700000600"));
        assert!(verifies(&client, request.token()));
        assert_eq!(request.body["aps"]["alert"]["title"], "로그인 알림");
        assert_eq!(request.body["uniqueKey"], "K1");

        // The same token for the next sends.
        client.send(&push(), None).await;
        let seen = apple.seen();
        assert_eq!(seen[1].token(), seen[0].token());
        assert_eq!(seen[1].header("apns-expiration"), None);
        assert_eq!(client.tokens().signed_count(), 1);
    }

    #[tokio::test]
    async fn an_expired_provider_token_is_replaced_once_and_the_push_resent() {
        let apple = Apple::start().await;
        let client = client(&apple.url);
        apple.answer(403, r#"{"reason":"ExpiredProviderToken"}"#);
        let answer = client.send(&push(), None).await;
        assert!(matches!(answer, Answer::Accepted { .. }), "{answer:?}");
        let seen = apple.seen();
        assert_eq!(seen.len(), 2, "sent, refused, resent");
        assert_ne!(seen[0].token(), seen[1].token());
        assert!(verifies(&client, seen[1].token()));
        assert_eq!(seen[0].body, seen[1].body);
        assert_eq!(client.tokens().signed_count(), 2);

        // Refused again right after: the key, not the token's age. One resend, no
        // new token, and the class that marks the app unhealthy.
        apple.answer(403, r#"{"reason":"InvalidProviderToken"}"#);
        apple.answer(403, r#"{"reason":"InvalidProviderToken"}"#);
        let answer = client.send(&push(), None).await;
        let Answer::Refused { class, http, .. } = answer else {
            panic!("refused: {answer:?}");
        };
        assert_eq!((class, http), (ErrorClass::InvalidProviderToken, 403));
        assert!(crate::sender::health::makes_unhealthy(class));
        assert_eq!(apple.seen().len(), 3, "no resend without a new token");
        assert_eq!(client.tokens().signed_count(), 2);
    }

    #[tokio::test]
    async fn apples_refusals_reach_the_sender_classified() {
        let apple = Apple::start().await;
        let client = client(&apple.url);
        apple.answer(
            410,
            r#"{"reason":"Unregistered","timestamp":1699990000000}"#,
        );
        apple.answer(429, r#"{"reason":"TooManyRequests"}"#);
        let Answer::Refused { class, body, .. } = client.send(&push(), None).await else {
            panic!("refused");
        };
        assert_eq!(class, ErrorClass::Unregistered);
        assert_eq!(
            answer::unregistered_at(&body, i64::MAX),
            Some(1_699_990_000_000)
        );
        let Answer::Refused {
            class,
            quota,
            retry_after,
            ..
        } = client.send(&push(), None).await
        else {
            panic!("refused");
        };
        assert_eq!(class, ErrorClass::QuotaExceeded);
        assert_eq!(quota, Some(QuotaScope::Device));
        assert_eq!(
            retry_after,
            Some(Duration::from_secs(3)),
            "Retry-After is passed on"
        );

        // Not sendable: refused here, nothing reaches Apple.
        let mut to_topic = push();
        to_topic.target = Target::Topic("news".into());
        let Answer::Refused {
            class, http, body, ..
        } = client.send(&to_topic, None).await
        else {
            panic!("refused");
        };
        assert_eq!((class, http), (ErrorClass::InvalidArgument, 0));
        assert!(body.contains("APNs sends to a device token"), "{body}");
        assert_eq!(apple.seen().len(), 2);
    }

    #[tokio::test]
    async fn no_connection_is_a_transport_error() {
        // A port that was free a moment ago: nothing listens on it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = client(&format!("http://127.0.0.1:{port}"));
        let Answer::Refused {
            class, http, body, ..
        } = client.send(&push(), None).await
        else {
            panic!("refused");
        };
        assert_eq!((class, http), (ErrorClass::Transport, 0));
        assert!(
            !body.contains(DEVICE),
            "the URL (with its token) stays out: {body}"
        );
    }

    #[tokio::test]
    async fn keep_fresh_signs_a_token_at_once_and_stops_when_cancelled() {
        let client = Arc::new(client("http://127.0.0.1:1"));
        assert!(!client.has_token());
        let cancel = CancellationToken::new();
        let task = tokio::spawn(client.clone().keep_fresh(cancel.clone()));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !client.has_token() {
            assert!(std::time::Instant::now() < deadline, "no token signed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("keep_fresh stops")
            .unwrap();
        assert_eq!(client.tokens().signed_count(), 1);
    }
}
