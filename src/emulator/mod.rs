//! A strict local stand-in for FCM HTTP v1: Google's OAuth token endpoint and `messages:send`.
//!
//! Google is unreachable from the test machines, so this is the only FCM the gateway ever
//! meets in tests. It is deliberately strict: every protocol fact of `docs/fcm-v1.md` (JWT
//! grant, bearer tokens, message shape, sizes, error envelope) is checked and a violation is
//! answered the way Google answers it, so the gateway's mistakes fail tests instead of failing
//! in production. Where Google is lenient the emulator is not: a JSON `null` field is rejected
//! rather than read as absent, so the gateway sends minimal, typed JSON. Faults (503/429/500,
//! per-token errors, latency) are injected on demand to exercise the retry classes, and
//! FCM's per-device quota is enforced; every QUOTA_EXCEEDED names the quota it hit (the
//! device or the project) in a `google.rpc.QuotaFailure` detail, as FCM does.
//!
//! Routes: `POST /token`, `POST /v1/projects/{project}/messages:send`, `GET /stats`,
//! `GET /stats/accepted?since=N` (the accepted sends in order, with their times); HTTP/1.1
//! and h2c (prior knowledge) on one port, or, with `--tls-cert-out`, HTTPS only (HTTP/2 by
//! ALPN, and HTTP/1.1) with a self-signed certificate, the token endpoint included.
//!
//! Layout: this file starts, serves and stops the emulator and routes each request; `token`
//! is the OAuth token endpoint and the bearer check, `send` validates `messages:send`,
//! `faults` injects failures, `quota` is the per-device quota, `rejection` is FCM's error
//! table and envelope, `stats` the counters behind `GET /stats`, `tls` the self-signed
//! certificate, `server` the accept loop every emulator runs. [`apns`] is the APNs emulator,
//! built the same way; [`gateway`] the messaging gateway (Alimtalk, SMS) behind fallback.

pub mod apns;
mod faults;
pub mod gateway;
mod quota;
mod rejection;
mod send;
mod server;
mod stats;
mod tls;
mod token;

#[cfg(test)]
mod harness;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use rand::Rng as _;
use rsa::RsaPrivateKey;
use rsa::pkcs1v15::VerifyingKey;
use rsa::pkcs8::{EncodePrivateKey as _, LineEnding};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use faults::{Faults, Forced};
use quota::DeviceQuota;
use rejection::Rejection;

pub use faults::parse_fail_token;
pub use rejection::ErrorCode;
pub use stats::Stats;
pub use token::FCM_SCOPE;

/// Far above any valid FCM request; only stops a runaway client from filling memory.
const MAX_BODY: usize = 1 << 20;

#[derive(Debug, Clone, clap::Args)]
pub struct EmulatorArgs {
    /// Address to listen on (loopback), e.g. 127.0.0.1:0
    #[arg(long, default_value = "127.0.0.1:8930")]
    pub listen: SocketAddr,
    /// Write the service-account JSON (fresh RSA key, token_uri pointing here) to this file.
    #[arg(long)]
    pub write_service_account: Option<std::path::PathBuf>,
    #[arg(long, default_value = "pushgate-emulator")]
    pub project: String,
    /// Lifetime of issued access tokens, seconds.
    #[arg(long, default_value_t = 3600)]
    pub token_ttl: u64,
    /// Fraction (0..=1) of sends answered 503 UNAVAILABLE / 429 QUOTA_EXCEEDED (naming the
    /// project's quota) / 500 INTERNAL.
    #[arg(long, default_value_t = 0.0)]
    pub fail_503: f64,
    #[arg(long, default_value_t = 0.0)]
    pub fail_429: f64,
    #[arg(long, default_value_t = 0.0)]
    pub fail_500: f64,
    /// Retry-After seconds sent with injected 503/429 and forced quota answers (none if unset).
    #[arg(long)]
    pub retry_after: Option<u64>,
    /// Added latency per send, milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Registration tokens starting with this are answered 404 UNREGISTERED.
    #[arg(long)]
    pub unregistered_prefix: Option<String>,
    /// PREFIX=ERRORCODE: tokens starting with PREFIX always get that FCM error (any code of the
    /// table in fcm-v1.md; QUOTA_EXCEEDED names the project's quota, QUOTA_EXCEEDED_DEVICE is
    /// the 429 naming the device's). Repeatable.
    #[arg(long = "fail-token", value_parser = parse_fail_token)]
    pub fail_tokens: Vec<(String, String)>,
    /// Messages a minute one registration token may receive (FCM: 240 per Android device);
    /// more are answered 429 QUOTA_EXCEEDED naming the device, with Retry-After. 0 = off.
    #[arg(long, default_value_t = 240)]
    pub device_rate: u32,
    /// Serve HTTPS instead of plain http/h2c: generate a self-signed certificate for
    /// localhost and 127.0.0.1 and write it (PEM) to this file, for the client's `ca_file`.
    /// The service account's token_uri is then https:// too.
    #[arg(long)]
    pub tls_cert_out: Option<std::path::PathBuf>,
}

/// A running emulator; dropping it stops the server too, `shutdown` also waits for it.
pub struct Emulator {
    addr: SocketAddr,
    state: Arc<State>,
    service_account: String,
    /// The self-signed certificate (PEM) when serving HTTPS.
    certificate: Option<String>,
    cancel: CancellationToken,
    server: JoinHandle<()>,
}

impl Emulator {
    /// Generate a fresh 2048-bit RSA key, bind, serve in the background.
    pub async fn start(args: EmulatorArgs) -> std::io::Result<Emulator> {
        let key =
            tokio::task::spawn_blocking(|| RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048))
                .await
                .map_err(std::io::Error::other)?
                .map_err(std::io::Error::other)?;
        Self::start_with_key(args, key).await
    }

    /// Like `start` with a given service-account key: key generation dominates start-up, so
    /// test suites that start many emulators generate one key and share it.
    pub async fn start_with_key(
        args: EmulatorArgs,
        key: RsaPrivateKey,
    ) -> std::io::Result<Emulator> {
        let invalid = |msg: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, msg);
        let rates = [args.fail_503, args.fail_429, args.fail_500];
        if rates.iter().any(|r| !(0.0..=1.0).contains(r)) || rates.iter().sum::<f64>() > 1.0 {
            return Err(invalid(format!(
                "fault rates must be in 0..=1 and sum to at most 1, got {rates:?}"
            )));
        }
        let fail_tokens = (args.fail_tokens.iter())
            .map(|(prefix, code)| Ok((prefix.clone(), Forced::parse(code).map_err(invalid)?)))
            .collect::<std::io::Result<Vec<_>>>()?;

        let listener = TcpListener::bind(args.listen).await?;
        let addr = listener.local_addr()?;
        let tls = match &args.tls_cert_out {
            None => None,
            Some(path) => {
                let tls = tls::self_signed(addr.ip(), &[b"h2", b"http/1.1"])?;
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
        let scheme = if tls.is_some() { "https" } else { "http" };
        let key_id = hex(&rand::rng().random::<[u8; 20]>());
        let client_email = format!("pushgate-sender@{}.iam.gserviceaccount.com", args.project);
        let token_uri = format!("{scheme}://{addr}/token");
        let pem = key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(std::io::Error::other)?;
        let service_account = json!({
            "type": "service_account",
            "project_id": args.project,
            "private_key_id": key_id,
            "private_key": pem.as_str(),
            "client_email": client_email,
            "client_id": rand::rng().random::<u64>().to_string(),
            "token_uri": token_uri,
        })
        .to_string();

        let state = Arc::new(State {
            project: args.project,
            key_id,
            client_email,
            token_uri,
            verifying_key: VerifyingKey::new(key.to_public_key()),
            token_ttl: Duration::from_secs(args.token_ttl),
            faults: Faults {
                p503: args.fail_503,
                p429: args.fail_429,
                p500: args.fail_500,
                retry_after: args.retry_after,
            },
            latency: Duration::from_millis(args.latency_ms),
            unregistered_prefix: args.unregistered_prefix,
            fail_tokens,
            device_quota: DeviceQuota::per_minute(args.device_rate),
            tokens: Mutex::default(),
            stats: Mutex::default(),
            accepted: Mutex::new(std::collections::VecDeque::new()),
            next_id: AtomicU64::new(1),
        });
        let cancel = CancellationToken::new();
        let certificate = tls.as_ref().map(|t| t.pem.clone());
        let acceptor = tls.map(|t| t.acceptor);
        let server = tokio::spawn(server::serve(
            "FCM emulator",
            listener,
            acceptor,
            state.clone(),
            cancel.clone(),
        ));
        Ok(Emulator {
            addr,
            state,
            service_account,
            certificate,
            cancel,
            server,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://ADDR` when serving TLS, else `http://ADDR`.
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

    pub fn project(&self) -> &str {
        &self.state.project
    }

    /// The service-account JSON (type, project_id, private_key_id, private_key (PKCS#8 PEM),
    /// client_email, client_id, token_uri = http://ADDR/token, or https:// with TLS).
    pub fn service_account_json(&self) -> String {
        self.service_account.clone()
    }

    pub fn stats(&self) -> Stats {
        self.state.stats().clone()
    }

    /// The accepted sends in the order they were accepted, with when (unix ms): the last
    /// 200,000. Sends without a `uniqueKey` in their data are listed with `""`.
    pub fn accepted_in_order(&self) -> Vec<(String, i64)> {
        self.state
            .accepted
            .lock()
            .map(|a| a.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Stop accepting, let in-flight requests finish (bounded), and wait for the server.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        let _ = (&mut self.server).await;
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Run until `shutdown` resolves: start, write the service account file if asked, print the
/// address and project on stdout, serve.
pub async fn run(
    args: EmulatorArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let listen = args.listen;
    let service_account_path = args.write_service_account.clone();
    let emulator = Emulator::start(args)
        .await
        .with_context(|| format!("starting the FCM emulator on {listen}"))?;
    if let Some(path) = service_account_path {
        std::fs::write(&path, emulator.service_account_json()).with_context(|| {
            format!(
                "writing the emulator's service account to {}",
                path.display()
            )
        })?;
    }
    println!(
        "FCM emulator listening on {} for project {}",
        emulator.base_url(),
        emulator.project()
    );
    shutdown.await;
    emulator.shutdown().await;
    Ok(())
}

/// Everything the handlers share; fixed at start except the token table and the counters.
struct State {
    project: String,
    key_id: String,
    client_email: String,
    token_uri: String,
    verifying_key: VerifyingKey<Sha256>,
    token_ttl: Duration,
    faults: Faults,
    latency: Duration,
    unregistered_prefix: Option<String>,
    fail_tokens: Vec<(String, Forced)>,
    /// `None` with `--device-rate 0`.
    device_quota: Option<DeviceQuota>,
    /// Issued access tokens and when each expires.
    tokens: Mutex<HashMap<String, Instant>>,
    stats: Mutex<Stats>,
    /// The last accepted sends in order: (uniqueKey, unix ms), at most [`ACCEPTED_KEPT`].
    accepted: Mutex<std::collections::VecDeque<(String, i64)>>,
    next_id: AtomicU64,
}

/// Accepted sends the emulator remembers in order, for tests of order and pace.
const ACCEPTED_KEPT: usize = 200_000;

impl server::Handler for State {
    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        let path = parts.uri.path();
        let project = path
            .strip_prefix("/v1/projects/")
            .and_then(|rest| rest.strip_suffix("/messages:send"))
            .filter(|p| !p.is_empty() && !p.contains('/'));
        match (&parts.method, path, project) {
            (&Method::GET, "/stats", _) => {
                let stats = serde_json::to_value(self.stats().clone()).unwrap_or_default();
                reply(StatusCode::OK, &stats, None)
            }
            (&Method::GET, "/stats/accepted", _) => match since(parts.uri.query()) {
                Ok(since) => reply(StatusCode::OK, &self.accepted_since(since), None),
                Err(msg) => {
                    let e = Rejection::plain(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", msg);
                    reply(e.http, &e.envelope(), None)
                }
            },
            (&Method::POST, "/token", _) => self.token(&parts.headers, read_body(body).await),
            (&Method::POST, _, Some(project)) => {
                match self
                    .send(project, &parts.headers, read_body(body).await)
                    .await
                {
                    Ok(answer) => reply(StatusCode::OK, &answer, None),
                    Err(e) => {
                        tracing::debug!("FCM emulator rejects a send: {}", e.message);
                        self.refuse(&e);
                        reply(e.http, &e.envelope(), e.retry_after)
                    }
                }
            }
            _ => {
                self.reject("NOT_FOUND");
                let e = Rejection::plain(
                    StatusCode::NOT_FOUND,
                    "NOT_FOUND",
                    format!("no route {path}"),
                );
                reply(e.http, &e.envelope(), None)
            }
        }
    }
}

/// The `since` of `GET /stats/accepted` (0 when absent).
fn since(query: Option<&str>) -> Result<u64, String> {
    let value = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "since")
        .map(|(_, v)| v.into_owned());
    value.map_or(Ok(0), |v| {
        v.parse()
            .map_err(|_| format!("since={v:?} is not a count of accepted sends"))
    })
}

/// The media type of Content-Type, lowercased and without parameters such as charset.
fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(CONTENT_TYPE)?.to_str().ok()?;
    Some(
        value
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase(),
    )
}

async fn read_body(body: Incoming) -> Result<Bytes, String> {
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) => Err(format!(
            "reading the request body (limit {MAX_BODY} bytes): {e}"
        )),
    }
}

fn reply(status: StatusCode, body: &Value, retry_after: Option<u64>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=UTF-8"),
    );
    if let Some(seconds) = retry_after {
        headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::harness::*;
    use super::*;
    use std::collections::BTreeMap;

    #[tokio::test]
    async fn valid_send_with_a_fresh_key_is_accepted_and_counted_by_unique_key() {
        let emulator = Emulator::start(args(&[]))
            .await
            .expect("starting the emulator");
        let h = Harness::new(emulator, client(false));
        let sa = &h.service_account;
        assert_eq!(sa["type"], "service_account");
        assert_eq!(sa["project_id"], "pushgate-emulator");
        assert_eq!(
            sa["token_uri"],
            format!("http://{}/token", h.emulator.addr())
        );
        assert!(sa["client_id"].is_string() && sa["client_email"].is_string());

        let (status, grant) = h.grant(&h.good_jwt()).await;
        assert_eq!(status, 200, "{grant}");
        assert_eq!(
            (grant["expires_in"].as_u64(), grant["token_type"].as_str()),
            (Some(3600), Some("Bearer"))
        );
        let token = grant["access_token"].as_str().expect("access_token");
        let response = h
            .post_send(
                "pushgate-emulator",
                Some(token),
                &json!({"message": message("k1")}),
            )
            .await;
        assert_eq!(response.version(), reqwest::Version::HTTP_11);
        let (status, body) = read(response).await;
        assert_eq!(
            (status, &body),
            (
                200,
                &json!({"name": "projects/pushgate-emulator/messages/1"})
            )
        );

        let stats = h.emulator.stats();
        assert_eq!(
            (stats.accepted, stats.validated, stats.tokens_issued),
            (1, 0, 1)
        );
        assert_eq!(stats.by_key, BTreeMap::from([("k1".to_owned(), 1)]));
        assert!(stats.rejected.is_empty(), "{stats:?}");
    }

    #[tokio::test]
    async fn h2c_prior_knowledge_client_is_served_over_http2() {
        let emulator = Emulator::start_with_key(args(&[]), test_key(0))
            .await
            .expect("starting");
        let h = Harness::new(emulator, client(true));
        let token = h.token().await;
        let response = h
            .post_send(
                "pushgate-emulator",
                Some(&token),
                &json!({"message": message("h2")}),
            )
            .await;
        assert_eq!(response.version(), reqwest::Version::HTTP_2);
        assert_eq!(read(response).await.0, 200);
        assert_eq!(h.emulator.stats().by_key.get("h2"), Some(&1));
    }

    #[tokio::test]
    async fn with_tls_cert_out_it_serves_https_with_the_written_certificate_h2_and_http1() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("emulator.pem");
        let flags = ["--tls-cert-out", path.to_str().expect("utf-8 path")];
        let emulator = Emulator::start_with_key(args(&flags), test_key(0))
            .await
            .expect("starting");
        let pem = std::fs::read_to_string(&path).expect("the certificate is written at start");
        assert_eq!(emulator.certificate_pem(), Some(pem.as_str()));
        let root = reqwest::Certificate::from_pem(pem.as_bytes()).expect("a PEM certificate");
        let trusting = || reqwest::Client::builder().tls_certs_only([root.clone()]);
        let h = Harness::new(emulator, trusting().build().expect("client"));
        let base = format!("https://{}", h.emulator.addr());
        assert_eq!(h.emulator.base_url(), base);
        assert_eq!(h.service_account["token_uri"], format!("{base}/token"));

        // The grant (its JWT's aud is the https token_uri) and a send, HTTP/2 by ALPN.
        let token = h.token().await;
        let response = h
            .post_send(
                "pushgate-emulator",
                Some(&token),
                &json!({"message": message("tls")}),
            )
            .await;
        assert_eq!(response.version(), reqwest::Version::HTTP_2);
        assert_eq!(read(response).await.0, 200);
        assert_eq!(h.emulator.stats().by_key.get("tls"), Some(&1));

        // HTTP/1.1 clients, and the name localhost, are served too.
        let http1 = trusting().http1_only().build().expect("client");
        let port = h.emulator.addr().port();
        let stats = http1
            .get(format!("https://localhost:{port}/stats"))
            .send()
            .await
            .expect("GET /stats over HTTP/1.1 and TLS");
        assert_eq!(
            (stats.version(), stats.status().as_u16()),
            (reqwest::Version::HTTP_11, 200)
        );

        // Only TLS, and only for a client that trusts the certificate.
        let untrusting = client(false).get(h.url("/stats")).send().await;
        assert!(untrusting.is_err(), "an unknown certificate was accepted");
        let plain = client(false)
            .get(format!("http://{}/stats", h.emulator.addr()))
            .send()
            .await;
        assert!(
            plain.is_err() || plain.is_ok_and(|r| !r.status().is_success()),
            "plain http was served"
        );
    }

    #[tokio::test]
    async fn unknown_routes_are_404() {
        let h = spawn(&[]).await;
        for request in [
            h.http.get(h.url("/token")),
            h.http.post(h.url("/v1/projects/x/messages:batch")),
        ] {
            assert_eq!(
                request.send().await.expect("request").status().as_u16(),
                404
            );
        }
    }

    #[tokio::test]
    async fn run_writes_the_service_account_and_stops_on_shutdown() {
        let path =
            std::env::temp_dir().join(format!("pushgate-emulator-sa-{}.json", std::process::id()));
        let mut emulator_args = args(&[]);
        emulator_args.write_service_account = Some(path.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(run(emulator_args, async move {
            let _ = stopped.await;
        }));
        let deadline = Instant::now() + Duration::from_secs(30);
        let written = loop {
            if let Ok(text) = std::fs::read_to_string(&path)
                && let Ok(sa) = serde_json::from_str::<Value>(&text)
            {
                break sa;
            }
            assert!(Instant::now() < deadline, "service account never written");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let _ = std::fs::remove_file(&path);
        assert_eq!(written["type"], "service_account");
        let token_uri = written["token_uri"].as_str().expect("token_uri").to_owned();
        let _ = stop.send(());
        let result = tokio::time::timeout(Duration::from_secs(10), running).await;
        assert!(matches!(result, Ok(Ok(Ok(())))), "run did not stop cleanly");
        assert!(
            client(false).post(token_uri).send().await.is_err(),
            "still serving after shutdown"
        );
    }
}
