//! A strict local stand-in for Apple's provider API (APNs) with token auth:
//! `POST /3/device/<token>` and `GET /stats`.
//!
//! Apple is unreachable from the test machines, so this is the only APNs the gateway meets in
//! tests. Like the FCM emulator it is deliberately strict: every fact of `docs/apns.md` (the
//! ES256 provider token and its 20-to-60-minute reuse, each `apns-*` header, the payload and
//! its size) is checked and a violation is answered with Apple's status and `{"reason"}`, so
//! the gateway's mistakes fail tests instead of failing in production. Which rule fired is in
//! the `x-emulator-detail` header. Faults (503/429/500, per-token reasons, 410 Unregistered,
//! latency) are injected on demand.
//!
//! Transport: HTTP/2 only, as Apple. Plain h2c (prior knowledge) on `--listen`, or with
//! `--tls-cert-out` HTTPS whose ALPN offers only `h2` (a client that cannot speak HTTP/2 fails
//! the handshake). An HTTP/1.x request that gets through (plain http) is answered 400 with the
//! emulator's own reason `HTTP2Required`; only `GET /stats` is served on any version.
//!
//! Layout: this file starts, serves and stops the emulator and routes each request; `key` is
//! the `.p8`, `auth` the provider token and its reuse discipline, `request` the header and
//! payload rules, `faults` injected failures, `reason` Apple's reason table, `stats` the
//! counters behind `GET /stats`.

mod auth;
mod faults;
mod key;
mod reason;
mod request;
mod stats;

#[cfg(test)]
mod harness;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response, StatusCode, Version};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{read_body, reply, server, tls};
use auth::{Admitted, ProviderTokens};
use faults::{Faults, TokenVerdicts};
use reason::Refusal;
use request::Notification;

pub use faults::parse_fail_token;
pub use reason::Reason;
pub use request::{MAX_PAYLOAD, MAX_VOIP_PAYLOAD, PushType};
pub use stats::Stats;

/// Accepted requests `accepted_in_order` remembers, for tests of order and pace.
const ACCEPTED_KEPT: usize = 200_000;
/// Accepted notifications remembered whole (headers and payload), for tests of what was sent.
const NOTIFICATIONS_KEPT: usize = 1000;

#[derive(Debug, Clone, clap::Args)]
pub struct ApnsEmulatorArgs {
    /// Address to listen on (loopback), e.g. 127.0.0.1:0
    #[arg(long, default_value = "127.0.0.1:8931")]
    pub listen: SocketAddr,
    /// Read the provider key from this `.p8` (PKCS#8 PEM, P-256) instead of generating one.
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Write the provider key as a `.p8` (PKCS#8 PEM, like Apple's download) to this file,
    /// for the gateway's `key_file`.
    #[arg(long)]
    pub write_key: Option<PathBuf>,
    /// The key id a token's `kid` must name (10 characters, like Apple's).
    #[arg(long, default_value = "EMUKEY0001")]
    pub key_id: String,
    /// The team id a token's `iss` must name (10 characters, like Apple's).
    #[arg(long, default_value = "EMUTEAM001")]
    pub team_id: String,
    /// The bundle id every device token belongs to: `apns-topic` (with Apple's suffix for
    /// voip, complication and the like).
    #[arg(long, default_value = "kr.example.pushgate")]
    pub topic: String,
    /// Seconds after its `iat` a provider token is refused 403 ExpiredProviderToken (Apple: 3600).
    #[arg(long, default_value_t = 3600)]
    pub token_max_age: u64,
    /// Seconds a new provider token must come after the previous new one, else 429
    /// TooManyProviderTokenUpdates (Apple: 20 minutes); 0 = no limit.
    #[arg(long, default_value_t = 1200)]
    pub token_min_age: u64,
    /// Fraction (0..=1) of requests answered 503 ServiceUnavailable, drawn after the provider
    /// token is checked (the three rates are exclusive and sum to at most 1).
    #[arg(long, default_value_t = 0.0)]
    pub fail_503: f64,
    /// Fraction (0..=1) of requests answered 429 TooManyRequests.
    #[arg(long, default_value_t = 0.0)]
    pub fail_429: f64,
    /// Fraction (0..=1) of requests answered 500 InternalServerError.
    #[arg(long, default_value_t = 0.0)]
    pub fail_500: f64,
    /// Retry-After seconds sent with injected and forced 503/429 (none if unset).
    #[arg(long)]
    pub retry_after: Option<u64>,
    /// Added latency per request, milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Device tokens starting with this (hex) are answered 410 Unregistered, with `timestamp`
    /// = now in unix milliseconds.
    #[arg(long)]
    pub unregistered_prefix: Option<String>,
    /// PREFIX=REASON: device tokens starting with PREFIX (hex) always get that answer (any
    /// reason of Apple's table, with its status). Repeatable; the first match wins.
    #[arg(long = "fail-token", value_parser = parse_fail_token)]
    pub fail_tokens: Vec<(String, String)>,
    /// Serve HTTPS (HTTP/2 only, by ALPN) instead of h2c: generate a self-signed certificate
    /// for localhost and 127.0.0.1 and write it (PEM) to this file, for the client's `ca_file`.
    #[arg(long)]
    pub tls_cert_out: Option<PathBuf>,
}

/// One notification the emulator accepted, as it arrived.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    pub device_token: String,
    pub topic: String,
    pub push_type: PushType,
    /// 10 when the request had no `apns-priority`.
    pub priority: u8,
    pub expiration: Option<i64>,
    pub collapse_id: Option<String>,
    /// The `apns-id` answered: the request's, or a fresh one.
    pub apns_id: String,
    pub payload: Value,
    /// When it was accepted, unix ms.
    pub at_ms: i64,
}

/// A running emulator; dropping it stops the server too, `shutdown` also waits for it.
pub struct ApnsEmulator {
    addr: SocketAddr,
    state: Arc<State>,
    /// The provider key as a `.p8`'s text.
    key_pem: String,
    key_id: String,
    team_id: String,
    /// The self-signed certificate (PEM) when serving HTTPS.
    certificate: Option<String>,
    cancel: CancellationToken,
    server: JoinHandle<()>,
}

impl ApnsEmulator {
    /// Check the arguments, take or generate the key (writing it if asked), bind, and serve
    /// in the background.
    pub async fn start(args: ApnsEmulatorArgs) -> std::io::Result<ApnsEmulator> {
        let invalid = |msg: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, msg);
        let rates = [args.fail_503, args.fail_429, args.fail_500];
        if rates.iter().any(|r| !(0.0..=1.0).contains(r)) || rates.iter().sum::<f64>() > 1.0 {
            return Err(invalid(format!(
                "fault rates must be in 0..=1 and sum to at most 1, got {rates:?}"
            )));
        }
        for (what, id) in [("--key-id", &args.key_id), ("--team-id", &args.team_id)] {
            if id.len() != 10 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(invalid(format!(
                    "{what} must be 10 letters or digits, like Apple's, got {id:?}"
                )));
            }
        }
        if args.token_min_age > args.token_max_age {
            return Err(invalid(format!(
                "--token-min-age {} exceeds --token-max-age {}: no token could be refreshed",
                args.token_min_age, args.token_max_age
            )));
        }
        if let Some(prefix) = &args.unregistered_prefix {
            faults::check_prefix(prefix).map_err(invalid)?;
        }
        let forced = (args.fail_tokens.iter())
            .map(|(prefix, reason)| {
                faults::check_prefix(prefix).map_err(invalid)?;
                let reason = Reason::parse_apple(reason).map_err(invalid)?;
                Ok((prefix.to_ascii_lowercase(), reason))
            })
            .collect::<std::io::Result<Vec<_>>>()?;

        let secret = match &args.key {
            Some(path) => key::read(path)?,
            None => key::generate(),
        };
        let key_pem = key::pem(&secret)?;
        if let Some(path) = &args.write_key {
            key::write(path, &key_pem)?;
        }

        let listener = TcpListener::bind(args.listen).await?;
        let addr = listener.local_addr()?;
        let tls = match &args.tls_cert_out {
            None => None,
            Some(path) => {
                // Apple's servers offer HTTP/2 only.
                let tls = tls::self_signed(addr.ip(), &[b"h2"])?;
                // Written before the first accept: once the emulator answers, the file is there.
                tokio::fs::write(path, &tls.pem).await.map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!("writing the certificate to {}: {e}", path.display()),
                    )
                })?;
                Some(tls)
            }
        };

        let state = Arc::new(State {
            topic: args.topic,
            tokens: ProviderTokens::new(
                args.key_id.clone(),
                args.team_id.clone(),
                *p256::ecdsa::SigningKey::from(&secret).verifying_key(),
                Duration::from_secs(args.token_max_age),
                Duration::from_secs(args.token_min_age),
            ),
            faults: Faults {
                p503: args.fail_503,
                p429: args.fail_429,
                p500: args.fail_500,
                retry_after: args.retry_after,
            },
            verdicts: TokenVerdicts {
                forced,
                unregistered_prefix: args.unregistered_prefix.map(|p| p.to_ascii_lowercase()),
                retry_after: args.retry_after,
            },
            latency: Duration::from_millis(args.latency_ms),
            stats: Mutex::default(),
            accepted: Mutex::default(),
            notifications: Mutex::default(),
        });
        let cancel = CancellationToken::new();
        let certificate = tls.as_ref().map(|t| t.pem.clone());
        let acceptor = tls.map(|t| t.acceptor);
        let server = tokio::spawn(server::serve(
            "APNs emulator",
            listener,
            acceptor,
            state.clone(),
            cancel.clone(),
        ));
        Ok(ApnsEmulator {
            addr,
            state,
            key_pem,
            key_id: args.key_id,
            team_id: args.team_id,
            certificate,
            cancel,
            server,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://ADDR` when serving TLS, else `http://ADDR` (h2c).
    pub fn base_url(&self) -> String {
        let scheme = if self.certificate.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// The self-signed certificate (PEM) a client must trust, when serving HTTPS.
    pub fn certificate_pem(&self) -> Option<&str> {
        self.certificate.as_deref()
    }

    /// The provider key as a `.p8` (PKCS#8 PEM), what `--write-key` writes.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn team_id(&self) -> &str {
        &self.team_id
    }

    /// The bundle id (`apns-topic`) every device token belongs to.
    pub fn topic(&self) -> &str {
        &self.state.topic
    }

    pub fn stats(&self) -> Stats {
        self.state.stats().clone()
    }

    /// The accepted notifications in the order they were accepted, with when (unix ms): the
    /// last 200,000. Payloads without a `uniqueKey` are listed with `""`.
    pub fn accepted_in_order(&self) -> Vec<(String, i64)> {
        let accepted = self
            .state
            .accepted
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        accepted.iter().cloned().collect()
    }

    /// The last 1,000 accepted notifications whole (headers and payload), oldest first.
    pub fn notifications(&self) -> Vec<Accepted> {
        let notifications =
            (self.state.notifications.lock()).unwrap_or_else(PoisonError::into_inner);
        notifications.iter().cloned().collect()
    }

    /// Stop accepting, let in-flight requests finish (bounded), and wait for the server.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        let _ = (&mut self.server).await;
    }
}

impl Drop for ApnsEmulator {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Run until `shutdown` resolves: start (writing the key if asked), print the address, topic,
/// key id and team id on stdout, serve.
pub async fn run(
    args: ApnsEmulatorArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let listen = args.listen;
    let emulator = ApnsEmulator::start(args)
        .await
        .with_context(|| format!("starting the APNs emulator on {listen}"))?;
    println!(
        "APNs emulator listening on {} for topic {} (key id {}, team id {})",
        emulator.base_url(),
        emulator.topic(),
        emulator.key_id(),
        emulator.team_id()
    );
    shutdown.await;
    emulator.shutdown().await;
    Ok(())
}

/// Everything the handler shares; fixed at start except the token table and the records.
struct State {
    /// The bundle id.
    topic: String,
    tokens: ProviderTokens,
    faults: Faults,
    verdicts: TokenVerdicts,
    latency: Duration,
    stats: Mutex<Stats>,
    /// The last accepted requests in order: (uniqueKey, unix ms), at most [`ACCEPTED_KEPT`].
    accepted: Mutex<VecDeque<(String, i64)>>,
    /// The last accepted notifications whole, at most [`NOTIFICATIONS_KEPT`].
    notifications: Mutex<VecDeque<Accepted>>,
}

impl server::Handler for State {
    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        if parts.method == Method::GET && parts.uri.path() == "/stats" {
            let stats = serde_json::to_value(self.stats().clone()).unwrap_or_default();
            return reply(StatusCode::OK, &stats, None);
        }
        // Apple answers every request with an apns-id: the request's if it gave a valid one.
        let apns_id = (parts.headers.get("apns-id"))
            .and_then(|v| v.to_str().ok())
            .filter(|id| request::is_uuid(id))
            .map_or_else(request::new_uuid, str::to_owned);
        match self.push(&parts, body).await {
            Ok(notification) => {
                self.record(notification, &apns_id);
                let mut response = Response::new(Full::new(Bytes::new()));
                insert_apns_id(&mut response, &apns_id);
                response
            }
            Err(refusal) => {
                tracing::debug!(
                    "APNs emulator refuses {} {}: {} ({})",
                    parts.method,
                    parts.uri.path(),
                    refusal.reason.as_str(),
                    refusal.detail
                );
                self.stats().reject(refusal.reason.as_str());
                let mut response = reply(
                    refusal.reason.status(),
                    &refusal.body(),
                    refusal.retry_after,
                );
                insert_apns_id(&mut response, &apns_id);
                if let Ok(detail) = HeaderValue::from_str(&refusal.detail) {
                    response.headers_mut().insert("x-emulator-detail", detail);
                }
                response
            }
        }
    }
}

impl State {
    /// One `POST /3/device/<token>`, checks in order: HTTP/2, route, duplicate headers,
    /// provider token, then (after the injected latency and faults) the request itself, then
    /// the per-token verdicts.
    async fn push(
        &self,
        parts: &hyper::http::request::Parts,
        body: Incoming,
    ) -> Result<Notification, Refusal> {
        let path = parts.uri.path();
        if parts.version != Version::HTTP_2 {
            return Err(Refusal::new(
                Reason::Http2Required,
                format!("{:?}: APNs speaks only HTTP/2", parts.version),
            ));
        }
        let Some(device_token) = path.strip_prefix("/3/device/") else {
            return Err(Refusal::new(Reason::BadPath, format!("no route {path}")));
        };
        if parts.method != Method::POST {
            return Err(Refusal::new(
                Reason::MethodNotAllowed,
                format!("{} {path}: only POST", parts.method),
            ));
        }
        if device_token.is_empty() {
            return Err(Refusal::new(
                Reason::MissingDeviceToken,
                "no device token after /3/device/",
            ));
        }
        if let Some(name) = (request::SINGLE_HEADERS.iter())
            .find(|name| parts.headers.get_all(**name).iter().count() > 1)
        {
            return Err(Refusal::new(
                Reason::DuplicateHeaders,
                format!("{name} given more than once"),
            ));
        }
        let now_ms = crate::clock::now_ms();
        match self.tokens.check(&parts.headers, now_ms, Instant::now())? {
            Admitted::Known => {}
            Admitted::First => self.stats().new_token(None),
            Admitted::Update { interval } => self.stats().new_token(Some(interval)),
        }
        tokio::time::sleep(self.latency).await;
        if let Some(fault) = self.faults.draw() {
            return Err(fault);
        }
        let body = read_body(body)
            .await
            .map_err(|e| Refusal::new(Reason::PayloadTooLarge, e))?;
        let notification = Notification::parse(device_token, &parts.headers, &body, &self.topic)?;
        match self.verdicts.verdict(device_token, crate::clock::now_ms()) {
            Some(refusal) => Err(refusal),
            None => Ok(notification),
        }
    }

    /// Counts and remembers an accepted notification.
    fn record(&self, notification: Notification, apns_id: &str) {
        let at_ms = crate::clock::now_ms();
        let key = notification.unique_key().map(str::to_owned);
        {
            let mut stats = self.stats();
            stats.accepted += 1;
            if let Some(key) = &key {
                *stats.by_key.entry(key.clone()).or_default() += 1;
            }
        }
        {
            let mut accepted = self.accepted.lock().unwrap_or_else(PoisonError::into_inner);
            if accepted.len() >= ACCEPTED_KEPT {
                accepted.pop_front();
            }
            accepted.push_back((key.unwrap_or_default(), at_ms));
        }
        let mut notifications = (self.notifications.lock()).unwrap_or_else(PoisonError::into_inner);
        if notifications.len() >= NOTIFICATIONS_KEPT {
            notifications.pop_front();
        }
        notifications.push_back(Accepted {
            device_token: notification.device_token,
            topic: notification.topic,
            push_type: notification.push_type,
            priority: notification.priority,
            expiration: notification.expiration,
            collapse_id: notification.collapse_id,
            apns_id: apns_id.to_owned(),
            payload: Value::Object(notification.payload),
            at_ms,
        });
    }

    fn stats(&self) -> std::sync::MutexGuard<'_, Stats> {
        self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn insert_apns_id(response: &mut Response<Full<Bytes>>, apns_id: &str) {
    if let Ok(value) = HeaderValue::from_str(apns_id) {
        response.headers_mut().insert("apns-id", value);
    }
}

#[cfg(test)]
mod tests {
    use super::harness::*;
    use super::*;
    use clap::Parser as _;
    use std::collections::BTreeMap;

    #[tokio::test]
    async fn a_valid_push_over_h2c_is_accepted_with_an_apns_id_and_counted_by_unique_key() {
        let h = spawn(&[]).await;
        let push = h
            .push()
            .header("apns-expiration", "1900000000")
            .header("apns-collapse-id", "debit");
        let answer = h.send(push).await;
        answer.assert_accepted();
        assert_eq!(answer.version, reqwest::Version::HTTP_2);

        let stats = h.emulator.stats();
        assert_eq!(
            (stats.accepted, stats.tokens_seen, stats.token_updates),
            (1, 1, 0)
        );
        assert_eq!(stats.by_key, BTreeMap::from([("k1".to_owned(), 1)]));
        assert!(stats.rejected.is_empty(), "{stats:?}");
        let order = h.emulator.accepted_in_order();
        assert_eq!(
            order.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            ["k1"]
        );

        // What arrived, whole, for tests of what the gateway sent.
        let [accepted] = &h.emulator.notifications()[..] else {
            panic!("one notification");
        };
        assert_eq!(
            (accepted.device_token.as_str(), accepted.topic.as_str()),
            (DEVICE, "kr.example.pushgate")
        );
        assert_eq!(
            (accepted.push_type, accepted.priority, accepted.expiration),
            (PushType::Alert, 10, Some(1_900_000_000))
        );
        assert_eq!(accepted.collapse_id.as_deref(), Some("debit"));
        assert_eq!(Some(accepted.apns_id.as_str()), answer.header("apns-id"));
        assert_eq!(accepted.payload, payload("k1"));
        assert_eq!(accepted.at_ms, order[0].1);
    }

    #[tokio::test]
    async fn the_requests_apns_id_is_echoed_and_a_bad_one_is_refused() {
        let h = spawn(&[]).await;
        let id = "123e4567-e89b-12d3-a456-426614174000";
        let answer = h.send(h.push().header("apns-id", id)).await;
        answer.assert_accepted();
        assert_eq!(answer.header("apns-id"), Some(id));
        h.assert_refused(h.push().header("apns-id", "42"), 400, "BadMessageId")
            .await;
    }

    #[tokio::test]
    async fn http1_requests_are_refused_but_stats_is_served_on_any_version() {
        let h = spawn(&[]).await;
        let http1 = reqwest::Client::builder()
            .http1_only()
            .build()
            .expect("client");
        let request = (http1.post(h.url(&format!("/3/device/{DEVICE}"))))
            .header("authorization", format!("bearer {}", h.jwt))
            .header("apns-topic", h.emulator.topic())
            .header("apns-push-type", "alert")
            .body(payload("k").to_string());
        let answer = Answer::read(request.send().await.expect("POST over HTTP/1.1")).await;
        assert_eq!(answer.version, reqwest::Version::HTTP_11);
        answer.assert_refused(400, "HTTP2Required");

        let stats = http1.get(h.url("/stats")).send().await.expect("GET /stats");
        assert_eq!(stats.status().as_u16(), 200);
        assert_eq!(h.emulator.stats().rejected.get("HTTP2Required"), Some(&1));
        assert_eq!(h.emulator.stats().accepted, 0);
    }

    #[tokio::test]
    async fn with_tls_cert_out_it_serves_https_http2_only_with_the_written_certificate() {
        let cert_dir = tempfile::tempdir().expect("temp dir");
        let path = cert_dir.path().join("apns-emulator.pem");
        let h = spawn(&["--tls-cert-out", path.to_str().expect("utf-8 path")]).await;
        let pem = std::fs::read_to_string(&path).expect("the certificate is written at start");
        assert_eq!(h.emulator.certificate_pem(), Some(pem.as_str()));
        assert_eq!(
            h.emulator.base_url(),
            format!("https://{}", h.emulator.addr())
        );
        let root = reqwest::Certificate::from_pem(pem.as_bytes()).expect("a PEM certificate");
        let trusting = || reqwest::Client::builder().tls_certs_only([root.clone()]);

        // A client offering h2 and http/1.1 by ALPN gets HTTP/2, as from Apple.
        let tls = Harness {
            http: trusting().build().expect("client"),
            ..h
        };
        let answer = tls.send(tls.push()).await;
        answer.assert_accepted();
        assert_eq!(answer.version, reqwest::Version::HTTP_2);

        // One that speaks only HTTP/1.1 fails the handshake; so do plain http and a client
        // that does not trust the certificate.
        let http1 = trusting().http1_only().build().expect("client");
        assert!(
            http1.get(tls.url("/stats")).send().await.is_err(),
            "HTTP/1.1 over TLS"
        );
        let plain = format!("http://{}/stats", tls.emulator.addr());
        assert!(
            client().get(plain).send().await.is_err(),
            "plain h2c was served"
        );
        assert!(
            client().get(tls.url("/stats")).send().await.is_err(),
            "untrusted"
        );
        assert_eq!(tls.emulator.stats().accepted, 1);
    }

    #[tokio::test]
    async fn unknown_paths_other_methods_and_a_missing_device_token_get_apples_reasons() {
        let h = spawn(&[]).await;
        let send = |request: reqwest::RequestBuilder| async move {
            Answer::read(request.send().await.expect("request")).await
        };
        send(h.http.post(h.url("/3/devices/abc")))
            .await
            .assert_refused(404, "BadPath");
        send(h.http.get(h.url(&format!("/3/device/{DEVICE}"))))
            .await
            .assert_refused(405, "MethodNotAllowed");
        h.assert_refused(h.push().to(""), 400, "MissingDeviceToken")
            .await;
        let stats = h.emulator.stats();
        assert_eq!(stats.rejected.len(), 3, "{stats:?}");
    }

    #[tokio::test]
    async fn with_key_it_verifies_tokens_signed_with_that_p8() {
        let first = spawn(&[]).await;
        let key_path = first.dir.path().join("AuthKey_EMUKEY0001.p8");
        let flags = ["--key", key_path.to_str().expect("utf-8 path")];
        let second = ApnsEmulator::start(args(&flags)).await.expect("starting");
        assert_eq!(second.key_pem(), first.emulator.key_pem());
        let h = Harness {
            emulator: second,
            ..first
        };
        // The first emulator's token, signed with the key the second one read.
        h.send(h.push()).await.assert_accepted();

        let other = spawn(&[]).await;
        assert_ne!(
            other.emulator.key_pem(),
            h.emulator.key_pem(),
            "a fresh key"
        );
    }

    #[tokio::test]
    async fn run_writes_the_key_prints_and_stops_on_shutdown() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("key.p8");
        let emulator_args = args(&["--write-key", path.to_str().expect("utf-8 path")]);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(run(emulator_args, async move {
            let _ = stopped.await;
        }));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !std::fs::read_to_string(&path).is_ok_and(|pem| pem.contains("END PRIVATE KEY")) {
            assert!(Instant::now() < deadline, "key never written");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = stop.send(());
        let result = tokio::time::timeout(Duration::from_secs(10), running).await;
        assert!(matches!(result, Ok(Ok(Ok(())))), "run did not stop cleanly");
    }

    #[tokio::test]
    async fn bad_arguments_are_refused_at_start() {
        let refused = |flags: &'static [&'static str]| async move {
            ApnsEmulator::start(args(flags))
                .await
                .err()
                .map(|e| (e.kind(), e.to_string()))
        };
        for (flags, needle) in [
            (
                &["--fail-503", "0.6", "--fail-429", "0.6"][..],
                "fault rates",
            ),
            (&["--key-id", "SHORT"][..], "--key-id"),
            (&["--team-id", "EMUTEAM0001"][..], "--team-id"),
            (
                &["--token-min-age", "10", "--token-max-age", "5"][..],
                "--token-min-age",
            ),
            (&["--unregistered-prefix", "gone-"][..], "hex"),
        ] {
            let Some((kind, message)) = refused(flags).await else {
                panic!("{flags:?} was accepted");
            };
            assert_eq!(kind, std::io::ErrorKind::InvalidInput, "{flags:?}");
            assert!(message.contains(needle), "{flags:?}: {message}");
        }
        let missing = ApnsEmulator::start(args(&["--key", "/nonexistent/AuthKey.p8"])).await;
        assert_eq!(
            missing.err().map(|e| e.kind()),
            Some(std::io::ErrorKind::NotFound)
        );
        assert!(Cli::try_parse_from(["e", "--fail-token", "dead=Gone"]).is_err());
    }
}
