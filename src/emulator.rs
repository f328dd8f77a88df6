//! A strict local stand-in for FCM HTTP v1: Google's OAuth token endpoint and `messages:send`.
//!
//! Google is unreachable from the test machines, so this is the only FCM the gateway ever
//! meets in tests. It is deliberately strict: every protocol fact of `docs/fcm-v1.md` (JWT
//! grant, bearer tokens, message shape, sizes, error envelope) is checked and a violation is
//! answered the way Google answers it, so the gateway's mistakes fail tests instead of failing
//! in production. Where Google is lenient the emulator is not: a JSON `null` field is rejected
//! rather than read as absent, so the gateway sends minimal, typed JSON. Faults (503/429/500,
//! per-token errors, latency) are injected on demand to exercise the retry classes.
//!
//! Routes: `POST /token`, `POST /v1/projects/{project}/messages:send`, `GET /stats`; HTTP/1.1
//! and h2c (prior knowledge) on one port.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rand::Rng as _;
use rsa::RsaPrivateKey;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::pkcs8::{EncodePrivateKey as _, LineEnding};
use rsa::signature::Verifier as _;
use serde_json::{Map, Value, json};
use sha2::Sha256;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The OAuth scope an FCM sender must ask for.
pub const FCM_SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Google's answer to a missing, unknown or expired access token, word for word.
const BAD_CREDENTIALS: &str = "Request had invalid authentication credentials. Expected OAuth 2 \
    access token, login cookie or other valid authentication credential. See \
    https://developers.google.com/identity/sign-in/web/devconsole-project.";
/// Far above any valid FCM request; only stops a runaway client from filling memory.
const MAX_BODY: usize = 1 << 20;
const MAX_MESSAGE: usize = 4096;
const MAX_TOPIC_MESSAGE: usize = 2048;
/// How long shutdown waits for in-flight requests before dropping them.
const DRAIN: Duration = Duration::from_secs(5);

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
    /// Fraction (0..=1) of sends answered 503 UNAVAILABLE / 429 QUOTA_EXCEEDED / 500 INTERNAL.
    #[arg(long, default_value_t = 0.0)]
    pub fail_503: f64,
    #[arg(long, default_value_t = 0.0)]
    pub fail_429: f64,
    #[arg(long, default_value_t = 0.0)]
    pub fail_500: f64,
    /// Retry-After seconds sent with injected 503/429 (none if unset).
    #[arg(long)]
    pub retry_after: Option<u64>,
    /// Added latency per send, milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Registration tokens starting with this are answered 404 UNREGISTERED.
    #[arg(long)]
    pub unregistered_prefix: Option<String>,
    /// PREFIX=ERRORCODE: tokens starting with PREFIX always get that FCM error (any code of the
    /// table in fcm-v1.md). Repeatable.
    #[arg(long = "fail-token", value_parser = parse_fail_token)]
    pub fail_tokens: Vec<(String, String)>,
}

/// Parses `--fail-token PREFIX=ERRORCODE`, accepting only the codes of the FCM error table.
pub fn parse_fail_token(arg: &str) -> Result<(String, String), String> {
    let (prefix, code) = arg
        .split_once('=')
        .ok_or_else(|| format!("expected PREFIX=ERRORCODE, got {arg:?}"))?;
    if prefix.is_empty() {
        return Err(format!("empty token prefix in {arg:?}"));
    }
    ErrorCode::parse(code)?;
    Ok((prefix.to_owned(), code.to_owned()))
}

/// The `errorCode`s of an FcmError detail, i.e. the table in fcm-v1.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidArgument,
    Unregistered,
    SenderIdMismatch,
    ThirdPartyAuthError,
    QuotaExceeded,
    Unavailable,
    Internal,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 7] = [
        Self::InvalidArgument,
        Self::Unregistered,
        Self::SenderIdMismatch,
        Self::ThirdPartyAuthError,
        Self::QuotaExceeded,
        Self::Unavailable,
        Self::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidArgument => "INVALID_ARGUMENT",
            Self::Unregistered => "UNREGISTERED",
            Self::SenderIdMismatch => "SENDER_ID_MISMATCH",
            Self::ThirdPartyAuthError => "THIRD_PARTY_AUTH_ERROR",
            Self::QuotaExceeded => "QUOTA_EXCEEDED",
            Self::Unavailable => "UNAVAILABLE",
            Self::Internal => "INTERNAL",
        }
    }

    /// The HTTP status and canonical `error.status` Google pairs with this code.
    pub fn http(self) -> (StatusCode, &'static str) {
        match self {
            Self::InvalidArgument => (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
            Self::Unregistered => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            Self::SenderIdMismatch => (StatusCode::FORBIDDEN, "PERMISSION_DENIED"),
            Self::ThirdPartyAuthError => (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"),
            Self::QuotaExceeded => (StatusCode::TOO_MANY_REQUESTS, "RESOURCE_EXHAUSTED"),
            Self::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
            Self::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
        }
    }

    pub fn parse(code: &str) -> Result<ErrorCode, String> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == code)
            .ok_or_else(|| format!("unknown FCM error code {code:?}"))
    }
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Stats {
    /// Sends answered 200 (not validate_only).
    pub accepted: u64,
    /// validate_only sends answered 200.
    pub validated: u64,
    pub tokens_issued: u64,
    /// Every non-200 answer, by FcmError `errorCode` if it has one, else by `error.status`
    /// (`invalid_grant` for the token endpoint).
    pub rejected: BTreeMap<String, u64>,
    /// data.uniqueKey -> times accepted, for exactly-once checks.
    pub by_key: BTreeMap<String, u64>,
}

/// A running emulator; dropping it stops the server too, `shutdown` also waits for it.
pub struct Emulator {
    addr: SocketAddr,
    state: Arc<State>,
    service_account: String,
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
            .map(|(prefix, code)| Ok((prefix.clone(), ErrorCode::parse(code).map_err(invalid)?)))
            .collect::<std::io::Result<Vec<_>>>()?;

        let listener = TcpListener::bind(args.listen).await?;
        let addr = listener.local_addr()?;
        let key_id = hex(&rand::rng().random::<[u8; 20]>());
        let client_email = format!("pushgate-sender@{}.iam.gserviceaccount.com", args.project);
        let token_uri = format!("http://{addr}/token");
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
            tokens: Mutex::default(),
            stats: Mutex::default(),
            next_id: AtomicU64::new(1),
        });
        let cancel = CancellationToken::new();
        let server = tokio::spawn(serve(listener, state.clone(), cancel.clone()));
        Ok(Emulator {
            addr,
            state,
            service_account,
            cancel,
            server,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn project(&self) -> &str {
        &self.state.project
    }

    /// The service-account JSON (type, project_id, private_key_id, private_key (PKCS#8 PEM),
    /// client_email, client_id, token_uri = http://ADDR/token).
    pub fn service_account_json(&self) -> String {
        self.service_account.clone()
    }

    pub fn stats(&self) -> Stats {
        self.state.stats().clone()
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
        "FCM emulator listening on http://{} for project {}",
        emulator.addr(),
        emulator.project()
    );
    shutdown.await;
    emulator.shutdown().await;
    Ok(())
}

async fn serve(listener: TcpListener, state: Arc<State>, cancel: CancellationToken) {
    let builder = auto::Builder::new(TokioExecutor::new());
    let connections = TaskTracker::new();
    loop {
        let stream = tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Usually fd exhaustion: back off instead of spinning on it.
                    tracing::warn!("FCM emulator: accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        let service = hyper::service::service_fn(move |req| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(state.handle(req).await) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let cancel = cancel.clone();
        connections.spawn(async move {
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                () = cancel.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(DRAIN, conn).await;
                }
            }
        });
    }
    connections.close();
    connections.wait().await;
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
    fail_tokens: Vec<(String, ErrorCode)>,
    /// Issued access tokens and when each expires.
    tokens: Mutex<HashMap<String, Instant>>,
    stats: Mutex<Stats>,
    next_id: AtomicU64,
}

impl State {
    fn stats(&self) -> std::sync::MutexGuard<'_, Stats> {
        self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn reject(&self, key: &str) {
        *self.stats().rejected.entry(key.to_owned()).or_default() += 1;
    }

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
            (&Method::POST, "/token", _) => self.token(&parts.headers, read_body(body).await),
            (&Method::POST, _, Some(project)) => {
                match self
                    .send(project, &parts.headers, read_body(body).await)
                    .await
                {
                    Ok(answer) => reply(StatusCode::OK, &answer, None),
                    Err(e) => {
                        tracing::debug!("FCM emulator rejects a send: {}", e.message);
                        self.reject(e.stats_key());
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

    fn token(&self, headers: &HeaderMap, body: Result<Bytes, String>) -> Response<Full<Bytes>> {
        match self.check_grant(headers, body, unix_now()) {
            Ok(()) => {
                let token = format!(
                    "ya29.emulator.{}",
                    URL_SAFE_NO_PAD.encode(rand::rng().random::<[u8; 32]>())
                );
                let now = Instant::now();
                let mut tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
                // Forget expired tokens here so a long run does not accumulate them.
                tokens.retain(|_, expiry| *expiry > now);
                tokens.insert(token.clone(), now + self.token_ttl);
                drop(tokens);
                self.stats().tokens_issued += 1;
                let body = json!({"access_token": token, "expires_in": self.token_ttl.as_secs(), "token_type": "Bearer"});
                reply(StatusCode::OK, &body, None)
            }
            Err(reason) => {
                tracing::debug!("FCM emulator rejects a token grant: {reason}");
                self.reject("invalid_grant");
                reply(
                    StatusCode::BAD_REQUEST,
                    &json!({"error": "invalid_grant", "error_description": reason}),
                    None,
                )
            }
        }
    }

    /// Checks a JWT-bearer grant the way Google's token endpoint does; `Err` says precisely why.
    fn check_grant(
        &self,
        headers: &HeaderMap,
        body: Result<Bytes, String>,
        now: i64,
    ) -> Result<(), String> {
        if media_type(headers).as_deref() != Some("application/x-www-form-urlencoded") {
            return Err("content-type must be application/x-www-form-urlencoded".into());
        }
        let form = parse_form(&body?)?;
        let field = |name: &str| -> Result<&str, String> {
            let mut values = form
                .iter()
                .filter(|(k, _)| k == name)
                .map(|(_, v)| v.as_str());
            match (values.next(), values.next()) {
                (Some(v), None) => Ok(v),
                (None, _) => Err(format!("missing form field {name}")),
                (Some(_), Some(_)) => Err(format!("form field {name} given more than once")),
            }
        };
        let grant_type = field("grant_type")?;
        if grant_type != JWT_BEARER_GRANT {
            return Err(format!(
                "grant_type must be {JWT_BEARER_GRANT}, got {grant_type:?}"
            ));
        }
        let assertion = field("assertion")?;
        let parts: Vec<&str> = assertion.split('.').collect();
        let [header_b64, claims_b64, signature_b64] = parts[..] else {
            return Err(format!(
                "assertion must be a JWT of 3 parts, got {}",
                parts.len()
            ));
        };
        let header = jwt_json(header_b64, "header")?;
        expect(&header, "header alg", "RS256")?;
        expect(&header, "header typ", "JWT")?;
        expect(&header, "header kid", &self.key_id)?;

        let signature = URL_SAFE_NO_PAD
            .decode(signature_b64)
            .map_err(|e| format!("JWT signature is not base64url without padding: {e}"))?;
        let signature = Signature::try_from(signature.as_slice())
            .map_err(|e| format!("JWT signature malformed: {e}"))?;
        self.verifying_key
            .verify(format!("{header_b64}.{claims_b64}").as_bytes(), &signature)
            .map_err(|_| {
                "invalid JWT signature: not signed by the service account's key".to_owned()
            })?;

        let claims = jwt_json(claims_b64, "claims")?;
        expect(&claims, "claim iss", &self.client_email)?;
        expect(&claims, "claim aud", &self.token_uri)?;
        let scope = (claims.get("scope").and_then(Value::as_str))
            .ok_or("JWT claim scope missing or not a string")?;
        if !scope.split(' ').any(|s| s == FCM_SCOPE) {
            return Err(format!("JWT claim scope {scope:?} lacks {FCM_SCOPE}"));
        }
        let time = |name: &str| {
            (claims.get(name).and_then(Value::as_i64))
                .ok_or_else(|| format!("JWT claim {name} missing or not an integer"))
        };
        let (iat, exp) = (time("iat")?, time("exp")?);
        if iat > now + 60 {
            return Err(format!(
                "JWT iat {iat} is {}s in the future (clock skew over 60s)",
                iat - now
            ));
        }
        if exp <= now {
            return Err(format!("JWT expired: exp {exp} is not after now {now}"));
        }
        if exp <= iat {
            return Err(format!("JWT exp {exp} is not after iat {iat}"));
        }
        if exp - iat > 3600 {
            return Err(format!(
                "JWT lifetime exp - iat = {}s exceeds 3600s",
                exp - iat
            ));
        }
        Ok(())
    }

    /// `messages:send`, checks in Google's order: project, credentials, then (after the
    /// injected latency and faults) the message itself, then per-token verdicts.
    async fn send(
        &self,
        project: &str,
        headers: &HeaderMap,
        body: Result<Bytes, String>,
    ) -> Result<Value, Rejection> {
        if project != self.project {
            let msg = format!(
                "Requested entity was not found: project {project:?} (this emulator serves {:?})",
                self.project
            );
            return Err(Rejection::plain(StatusCode::NOT_FOUND, "NOT_FOUND", msg));
        }
        self.authenticate(headers)?;
        tokio::time::sleep(self.latency).await;
        if let Some(fault) = self.faults.draw() {
            return Err(fault);
        }
        let request = body
            .and_then(|body| SendRequest::parse(media_type(headers).as_deref(), &body))
            .map_err(|msg| Rejection::fcm(ErrorCode::InvalidArgument, msg))?;
        if let Some(token) = &request.token {
            self.forced_error(token)?;
        }
        let mut stats = self.stats();
        if request.validate_only {
            stats.validated += 1;
            return Ok(
                json!({"name": format!("projects/{}/messages/fake_message_id", self.project)}),
            );
        }
        stats.accepted += 1;
        if let Some(key) = request.unique_key {
            *stats.by_key.entry(key).or_default() += 1;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        Ok(json!({"name": format!("projects/{}/messages/{id}", self.project)}))
    }

    fn authenticate(&self, headers: &HeaderMap) -> Result<(), Rejection> {
        let token = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        match token.and_then(|t| tokens.get(t)) {
            Some(expiry) if *expiry > Instant::now() => Ok(()),
            // Google answers an expired token exactly like a forged one, without FcmError.
            _ => Err(Rejection::plain(
                StatusCode::UNAUTHORIZED,
                "UNAUTHENTICATED",
                BAD_CREDENTIALS.into(),
            )),
        }
    }

    fn forced_error(&self, token: &str) -> Result<(), Rejection> {
        if let Some((prefix, code)) = self
            .fail_tokens
            .iter()
            .find(|(p, _)| token.starts_with(p.as_str()))
        {
            let msg = format!(
                "error {} forced for tokens starting with {prefix:?}",
                code.as_str()
            );
            return Err(Rejection::fcm(*code, msg));
        }
        match &self.unregistered_prefix {
            Some(prefix) if token.starts_with(prefix.as_str()) => Err(Rejection::fcm(
                ErrorCode::Unregistered,
                "Requested entity was not found.".into(),
            )),
            _ => Ok(()),
        }
    }
}

/// Randomly injected server-side failures, drawn once per send.
struct Faults {
    p503: f64,
    p429: f64,
    p500: f64,
    retry_after: Option<u64>,
}

impl Faults {
    fn draw(&self) -> Option<Rejection> {
        // One draw against stacked bands, so the three rates are exclusive and exact.
        let r: f64 = rand::rng().random();
        let (code, retry_after) = if r < self.p503 {
            (ErrorCode::Unavailable, self.retry_after)
        } else if r < self.p503 + self.p429 {
            (ErrorCode::QuotaExceeded, self.retry_after)
        } else if r < self.p503 + self.p429 + self.p500 {
            (ErrorCode::Internal, None)
        } else {
            return None;
        };
        let msg = format!("injected {} fault", code.as_str());
        Some(Rejection {
            retry_after,
            ..Rejection::fcm(code, msg)
        })
    }
}

/// A non-200 answer of `messages:send` in Google's error envelope.
#[derive(Debug)]
struct Rejection {
    http: StatusCode,
    status: &'static str,
    /// The FcmError detail; absent where Google sends none (bad credentials, unknown project).
    code: Option<ErrorCode>,
    message: String,
    retry_after: Option<u64>,
}

impl Rejection {
    fn fcm(code: ErrorCode, message: String) -> Self {
        let (http, status) = code.http();
        Rejection {
            http,
            status,
            code: Some(code),
            message,
            retry_after: None,
        }
    }

    fn plain(http: StatusCode, status: &'static str, message: String) -> Self {
        Rejection {
            http,
            status,
            code: None,
            message,
            retry_after: None,
        }
    }

    fn stats_key(&self) -> &'static str {
        self.code.map_or(self.status, ErrorCode::as_str)
    }

    fn envelope(&self) -> Value {
        let mut error =
            json!({"code": self.http.as_u16(), "message": self.message, "status": self.status});
        if let Some(code) = self.code {
            error["details"] = json!([{
                "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                "errorCode": code.as_str(),
            }]);
        }
        json!({ "error": error })
    }
}

/// A `messages:send` body that passed every check.
struct SendRequest {
    validate_only: bool,
    /// The registration token when the target is one (topics and conditions have no per-token
    /// verdicts).
    token: Option<String>,
    /// `message.data.uniqueKey`, counted in `Stats::by_key`.
    unique_key: Option<String>,
}

impl SendRequest {
    /// Validates a send body; `Err` is the INVALID_ARGUMENT message naming the problem.
    fn parse(media_type: Option<&str>, body: &[u8]) -> Result<SendRequest, String> {
        use Shape::{Bool, Object, Str, StringMap};
        if media_type != Some("application/json") {
            return Err(format!(
                "content-type must be application/json, got {media_type:?}"
            ));
        }
        let body: Value =
            serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
        let body = body
            .as_object()
            .ok_or("request body must be a JSON object")?;
        check_fields(
            body,
            "request body",
            &[("message", Object), ("validate_only", Bool)],
        )?;
        let validate_only = body
            .get("validate_only")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let message = body
            .get("message")
            .and_then(Value::as_object)
            .ok_or("message is required")?;
        let message_fields = [
            ("token", Str),
            ("topic", Str),
            ("condition", Str),
            ("notification", Object),
            ("data", StringMap),
            ("android", Object),
            ("apns", Object),
            ("webpush", Object),
            ("fcm_options", Object),
        ];
        check_fields(message, "message", &message_fields)?;

        let mut targets = ["token", "topic", "condition"]
            .into_iter()
            .filter(|k| message.contains_key(*k));
        let (Some(kind), None) = (targets.next(), targets.next()) else {
            return Err("message must have exactly one of token, topic, condition".into());
        };
        let target = (message.get(kind).and_then(Value::as_str))
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("message.{kind} must be a non-empty string"))?;
        let is_topic = kind == "topic";
        if is_topic
            && !target
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.~%".contains(&b))
        {
            return Err(format!(
                "message.topic {target:?} must be a bare name matching [a-zA-Z0-9-_.~%]+"
            ));
        }

        let part = |key| message.get(key).and_then(Value::as_object);
        if let Some(notification) = part("notification") {
            let fields = [("title", Str), ("body", Str), ("image", Str)];
            check_fields(notification, "message.notification", &fields)?;
        }
        if let Some(key) =
            part("data").and_then(|data| data.keys().find(|k| is_reserved_data_key(k)))
        {
            return Err(format!(
                "message.data key {key:?} is reserved (from, message_type, google*, gcm*)"
            ));
        }
        if let Some(android) = part("android") {
            check_android(android)?;
        }
        if let Some(apns) = part("apns") {
            let fields = [
                ("headers", StringMap),
                ("payload", Object),
                ("fcm_options", Object),
            ];
            check_fields(apns, "message.apns", &fields)?;
        }
        if let Some(options) = part("fcm_options") {
            check_fields(options, "message.fcm_options", &[("analytics_label", Str)])?;
        }

        let limit = if is_topic {
            MAX_TOPIC_MESSAGE
        } else {
            MAX_MESSAGE
        };
        let size = serde_json::to_vec(message).map_or(usize::MAX, |v| v.len());
        if size > limit {
            return Err(format!(
                "message is {size} bytes, over the {limit}-byte limit for this target"
            ));
        }
        Ok(SendRequest {
            validate_only,
            token: (kind == "token").then(|| target.to_owned()),
            unique_key: part("data")
                .and_then(|d| d.get("uniqueKey")?.as_str())
                .map(str::to_owned),
        })
    }
}

fn check_android(android: &Map<String, Value>) -> Result<(), String> {
    use Shape::{Bool, Object, Str, StringMap};
    let fields = [
        ("priority", Str),
        ("ttl", Str),
        ("collapse_key", Str),
        ("restricted_package_name", Str),
        ("notification", Object),
        ("data", StringMap),
        ("fcm_options", Object),
        ("direct_boot_ok", Bool),
    ];
    check_fields(android, "message.android", &fields)?;
    let text = |key| android.get(key).and_then(Value::as_str);
    if let Some(priority) = text("priority")
        && !["normal", "high"]
            .iter()
            .any(|p| priority.eq_ignore_ascii_case(p))
    {
        return Err(format!(
            "message.android.priority must be \"normal\" or \"high\", got {priority:?}"
        ));
    }
    if let Some(ttl) = text("ttl")
        && !is_duration(ttl)
    {
        return Err(format!(
            "message.android.ttl must be a duration like \"3600s\" or \"3.5s\", got {ttl:?}"
        ));
    }
    Ok(())
}

/// The JSON type a message field must have: protobuf JSON is typed, so a number where a string
/// belongs is an error, not coerced.
#[derive(Clone, Copy)]
enum Shape {
    Str,
    Bool,
    Object,
    /// `map<string, string>`, as `data` and APNs headers.
    StringMap,
}

/// Checks that `map` has only the listed fields, each of its shape.
fn check_fields(
    map: &Map<String, Value>,
    what: &str,
    fields: &[(&str, Shape)],
) -> Result<(), String> {
    for (key, value) in map {
        let Some((_, shape)) = fields.iter().find(|(name, _)| name == key) else {
            let allowed: Vec<&str> = fields.iter().map(|(name, _)| *name).collect();
            return Err(format!(
                "unknown field {key:?} in {what} (allowed: {})",
                allowed.join(", ")
            ));
        };
        let expected = match shape {
            Shape::Str if !value.is_string() => "a string",
            Shape::Bool if !value.is_boolean() => "a bool",
            Shape::Object | Shape::StringMap if !value.is_object() => "a JSON object",
            Shape::StringMap => match value
                .as_object()
                .and_then(|m| m.iter().find(|(_, v)| !v.is_string()))
            {
                Some((k, v)) => return Err(format!("{what}.{key}.{k} must be a string, got {v}")),
                None => continue,
            },
            _ => continue,
        };
        return Err(format!("{what}.{key} must be {expected}, got {value}"));
    }
    Ok(())
}

fn is_reserved_data_key(key: &str) -> bool {
    key == "from" || key == "message_type" || key.starts_with("google") || key.starts_with("gcm")
}

/// A protobuf Duration in JSON: seconds with up to nine fractional digits and an `s`.
fn is_duration(s: &str) -> bool {
    let digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    match s
        .strip_suffix('s')
        .map(|n| n.split_once('.').unwrap_or((n, "0")))
    {
        Some((whole, frac)) => digits(whole) && digits(frac) && frac.len() <= 9,
        None => false,
    }
}

/// Checks one string member of a JWT part; `what` is "header kid", "claim aud" and the like.
fn expect(part: &Map<String, Value>, what: &str, expected: &str) -> Result<(), String> {
    let name = what.rsplit(' ').next().unwrap_or(what);
    match part.get(name) {
        Some(Value::String(actual)) if actual == expected => Ok(()),
        Some(actual) => Err(format!("JWT {what} must be {expected:?}, got {actual}")),
        None => Err(format!("JWT {what} missing")),
    }
}

fn jwt_json(part: &str, what: &str) -> Result<Map<String, Value>, String> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|e| format!("JWT {what} is not base64url without padding: {e}"))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(format!("JWT {what} is not a JSON object")),
    }
}

/// Decodes an `application/x-www-form-urlencoded` body into its pairs, in order.
fn parse_form(body: &[u8]) -> Result<Vec<(String, String)>, String> {
    let body = std::str::from_utf8(body).map_err(|_| "form body is not UTF-8".to_owned())?;
    (body.split('&').filter(|pair| !pair.is_empty()))
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((percent_decode(k)?, percent_decode(v)?))
        })
        .collect()
}

fn percent_decode(s: &str) -> Result<String, String> {
    let hex_digit = |b: Option<u8>| b.and_then(|b| (b as char).to_digit(16));
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => match (hex_digit(bytes.next()), hex_digit(bytes.next())) {
                (Some(hi), Some(lo)) => out.push((hi * 16 + lo) as u8),
                _ => return Err(format!("bad percent-escape in form field {s:?}")),
            },
            _ => out.push(b),
        }
    }
    String::from_utf8(out).map_err(|_| format!("form field {s:?} does not decode to UTF-8"))
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
    use super::*;
    use clap::Parser as _;
    use reqwest::header::CONTENT_TYPE;
    use rsa::pkcs1v15::SigningKey;
    use rsa::pkcs8::DecodePrivateKey as _;
    use rsa::signature::{SignatureEncoding as _, Signer as _};
    use std::sync::OnceLock;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: EmulatorArgs,
    }

    /// Emulator arguments as the command line would give them, on an ephemeral port.
    fn args(extra: &[&str]) -> EmulatorArgs {
        Cli::parse_from(["emulator", "--listen", "127.0.0.1:0"].iter().chain(extra)).args
    }

    /// Keys are generated once per test binary: 2048-bit generation dominates start-up.
    fn test_key(slot: usize) -> RsaPrivateKey {
        static KEYS: [OnceLock<RsaPrivateKey>; 2] = [OnceLock::new(), OnceLock::new()];
        let generate =
            || RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("generating a test key");
        KEYS[slot].get_or_init(generate).clone()
    }

    fn client(h2c: bool) -> reqwest::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let builder = reqwest::Client::builder();
        let builder = if h2c {
            builder.http2_prior_knowledge()
        } else {
            builder
        };
        builder.build().expect("building the HTTP client")
    }

    struct Harness {
        emulator: Emulator,
        service_account: Value,
        /// The service account's key, read back from its PEM as a sender would.
        key: RsaPrivateKey,
        http: reqwest::Client,
    }

    async fn spawn(extra: &[&str]) -> Harness {
        let emulator = Emulator::start_with_key(args(extra), test_key(0))
            .await
            .expect("starting the emulator");
        Harness::new(emulator, client(false))
    }

    impl Harness {
        fn new(emulator: Emulator, http: reqwest::Client) -> Harness {
            let service_account: Value =
                serde_json::from_str(&emulator.service_account_json()).expect("SA JSON");
            let pem = service_account["private_key"]
                .as_str()
                .expect("private_key");
            let key = RsaPrivateKey::from_pkcs8_pem(pem).expect("private_key is PKCS#8 PEM");
            Harness {
                emulator,
                service_account,
                key,
                http,
            }
        }

        fn url(&self, path: &str) -> String {
            format!("http://{}{path}", self.emulator.addr())
        }

        fn header(&self) -> Value {
            json!({"alg": "RS256", "typ": "JWT", "kid": self.service_account["private_key_id"]})
        }

        fn claims(&self) -> Value {
            let now = unix_now();
            json!({
                "iss": self.service_account["client_email"],
                "scope": FCM_SCOPE,
                "aud": self.service_account["token_uri"],
                "iat": now,
                "exp": now + 3600,
            })
        }

        /// A JWT as Google's client libraries build it, from the given parts.
        fn jwt(&self, header: Value, claims: Value, key: &RsaPrivateKey) -> String {
            let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
            let signing_input = format!("{}.{}", b64(&header), b64(&claims));
            let signature = SigningKey::<Sha256>::new(key.clone()).sign(signing_input.as_bytes());
            format!(
                "{signing_input}.{}",
                URL_SAFE_NO_PAD.encode(signature.to_bytes())
            )
        }

        fn good_jwt(&self) -> String {
            self.jwt(self.header(), self.claims(), &self.key)
        }

        async fn grant(&self, assertion: &str) -> (u16, Value) {
            let form = [("grant_type", JWT_BEARER_GRANT), ("assertion", assertion)];
            let response = self
                .http
                .post(self.url("/token"))
                .form(&form)
                .send()
                .await
                .expect("POST /token");
            read(response).await
        }

        async fn token(&self) -> String {
            let (status, body) = self.grant(&self.good_jwt()).await;
            assert_eq!(status, 200, "{body}");
            body["access_token"]
                .as_str()
                .expect("access_token")
                .to_owned()
        }

        async fn post_send(
            &self,
            project: &str,
            bearer: Option<&str>,
            body: &Value,
        ) -> reqwest::Response {
            let mut request = (self
                .http
                .post(self.url(&format!("/v1/projects/{project}/messages:send"))))
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string());
            if let Some(token) = bearer {
                request = request.bearer_auth(token);
            }
            request.send().await.expect("POST messages:send")
        }

        /// Sends `message` with a fresh valid token to the right project.
        async fn send(&self, message: Value) -> (u16, Value) {
            let token = self.token().await;
            read(
                self.post_send(
                    "pushgate-emulator",
                    Some(&token),
                    &json!({"message": message}),
                )
                .await,
            )
            .await
        }

        async fn assert_invalid(&self, message: Value, needle: &str) {
            let (status, body) = self.send(message).await;
            assert_fcm_error(
                status,
                &body,
                400,
                "INVALID_ARGUMENT",
                Some("INVALID_ARGUMENT"),
            );
            let text = body["error"]["message"].as_str().unwrap_or_default();
            assert!(
                text.contains(needle),
                "message {text:?} should name {needle:?}"
            );
        }

        async fn assert_grant_rejected(&self, assertion: &str, needle: &str) {
            let (status, body) = self.grant(assertion).await;
            assert_eq!(status, 400, "{body}");
            assert_eq!(body["error"], "invalid_grant");
            let reason = body["error_description"].as_str().unwrap_or_default();
            assert!(
                reason.contains(needle),
                "reason {reason:?} should name {needle:?}"
            );
            assert_eq!(self.emulator.stats().tokens_issued, 0);
            assert_eq!(
                self.emulator.stats().rejected.get("invalid_grant"),
                Some(&1)
            );
        }
    }

    async fn read(response: reqwest::Response) -> (u16, Value) {
        let status = response.status().as_u16();
        let text = response.text().await.expect("reading the body");
        (
            status,
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("body {text:?} is not JSON: {e}")),
        )
    }

    fn assert_fcm_error(status: u16, body: &Value, http: u16, canonical: &str, code: Option<&str>) {
        assert_eq!(status, http, "{body}");
        assert_eq!(body["error"]["code"], http, "{body}");
        assert_eq!(body["error"]["status"], canonical, "{body}");
        assert!(body["error"]["message"].is_string(), "{body}");
        let expected_details = code.map(|code| {
            json!([{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}])
        });
        assert_eq!(
            body["error"].get("details"),
            expected_details.as_ref(),
            "{body}"
        );
    }

    fn message(unique_key: &str) -> Value {
        json!({
            "token": "device-1",
            "notification": {"title": "Debit", "body": "CHF 12.00 at Migros"},
            "data": {"uniqueKey": unique_key, "amount": "12.00"},
            "android": {"priority": "high", "ttl": "3600s", "collapse_key": "debit"},
            "apns": {"headers": {"apns-priority": "10"}, "payload": {"aps": {"sound": "default"}}},
            "fcm_options": {"analytics_label": "debit"},
        })
    }

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
    async fn stats_endpoint_serves_the_counters_as_json() {
        let h = spawn(&[]).await;
        assert_eq!(h.send(message("a")).await.0, 200);
        assert_eq!(h.send(message("a")).await.0, 200);
        assert_eq!(h.send(json!({"topic": "/topics/x"})).await.0, 400);
        let response = h
            .http
            .get(h.url("/stats"))
            .send()
            .await
            .expect("GET /stats");
        let stats: Stats =
            serde_json::from_str(&response.text().await.expect("body")).expect("Stats JSON");
        assert_eq!(stats, h.emulator.stats());
        assert_eq!((stats.accepted, stats.tokens_issued), (2, 3));
        assert_eq!(stats.by_key.get("a"), Some(&2));
        assert_eq!(stats.rejected.get("INVALID_ARGUMENT"), Some(&1));
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
    async fn grant_rejects_a_jwt_signed_by_another_key() {
        let h = spawn(&[]).await;
        h.assert_grant_rejected(&h.jwt(h.header(), h.claims(), &test_key(1)), "signature")
            .await;
    }

    #[tokio::test]
    async fn grant_rejects_a_kid_other_than_the_private_key_id() {
        let h = spawn(&[]).await;
        let mut header = h.header();
        header["kid"] = json!("0123");
        h.assert_grant_rejected(&h.jwt(header, h.claims(), &h.key), "kid")
            .await;
    }

    #[tokio::test]
    async fn grant_rejects_an_alg_other_than_rs256() {
        let h = spawn(&[]).await;
        let mut header = h.header();
        header["alg"] = json!("HS256");
        h.assert_grant_rejected(&h.jwt(header, h.claims(), &h.key), "alg")
            .await;
    }

    #[tokio::test]
    async fn grant_rejects_an_aud_other_than_the_token_uri() {
        let h = spawn(&[]).await;
        let mut claims = h.claims();
        claims["aud"] = json!("https://oauth2.googleapis.com/token");
        h.assert_grant_rejected(&h.jwt(h.header(), claims, &h.key), "aud")
            .await;
    }

    #[tokio::test]
    async fn grant_rejects_an_iss_other_than_the_client_email() {
        let h = spawn(&[]).await;
        let mut claims = h.claims();
        claims["iss"] = json!("someone@else.iam.gserviceaccount.com");
        h.assert_grant_rejected(&h.jwt(h.header(), claims, &h.key), "iss")
            .await;
    }

    #[tokio::test]
    async fn grant_rejects_a_scope_without_firebase_messaging() {
        let h = spawn(&[]).await;
        let mut claims = h.claims();
        claims["scope"] = json!("https://www.googleapis.com/auth/cloud-platform");
        h.assert_grant_rejected(&h.jwt(h.header(), claims, &h.key), "scope")
            .await;
    }

    #[tokio::test]
    async fn grant_accepts_the_firebase_scope_among_others() {
        let h = spawn(&[]).await;
        let mut claims = h.claims();
        claims["scope"] = json!(format!(
            "https://www.googleapis.com/auth/cloud-platform {FCM_SCOPE}"
        ));
        assert_eq!(h.grant(&h.jwt(h.header(), claims, &h.key)).await.0, 200);
    }

    #[tokio::test]
    async fn grant_rejects_an_expired_jwt() {
        let h = spawn(&[]).await;
        let now = unix_now();
        let mut claims = h.claims();
        (claims["iat"], claims["exp"]) = (json!(now - 3700), json!(now - 100));
        h.assert_grant_rejected(&h.jwt(h.header(), claims, &h.key), "expired")
            .await;
    }

    #[tokio::test]
    async fn grant_rejects_a_lifetime_over_an_hour() {
        let h = spawn(&[]).await;
        let mut claims = h.claims();
        claims["exp"] = json!(unix_now() + 3601);
        h.assert_grant_rejected(&h.jwt(h.header(), claims, &h.key), "exceeds 3600s")
            .await;
    }

    #[tokio::test]
    async fn grant_rejects_an_iat_over_a_minute_in_the_future() {
        let h = spawn(&[]).await;
        let now = unix_now();
        let mut claims = h.claims();
        (claims["iat"], claims["exp"]) = (json!(now + 120), json!(now + 600));
        h.assert_grant_rejected(&h.jwt(h.header(), claims, &h.key), "future")
            .await;
    }

    #[tokio::test]
    async fn grant_rejects_a_malformed_assertion() {
        let h = spawn(&[]).await;
        h.assert_grant_rejected("abc.def", "3 parts").await;
    }

    #[tokio::test]
    async fn grant_rejects_another_grant_type_and_non_form_bodies() {
        let h = spawn(&[]).await;
        let form = [
            ("grant_type", "client_credentials"),
            ("assertion", &h.good_jwt()),
        ];
        let response = h
            .http
            .post(h.url("/token"))
            .form(&form)
            .send()
            .await
            .expect("POST /token");
        let (status, body) = read(response).await;
        assert_eq!((status, &body["error"]), (400, &json!("invalid_grant")));
        assert!(
            body["error_description"]
                .as_str()
                .unwrap_or_default()
                .contains("grant_type"),
            "{body}"
        );

        let json_body =
            json!({"grant_type": JWT_BEARER_GRANT, "assertion": h.good_jwt()}).to_string();
        let response = h
            .http
            .post(h.url("/token"))
            .header(CONTENT_TYPE, "application/json")
            .body(json_body);
        let (status, body) = read(response.send().await.expect("POST /token")).await;
        assert_eq!(status, 400);
        assert!(
            body["error_description"]
                .as_str()
                .unwrap_or_default()
                .contains("content-type"),
            "{body}"
        );
        assert_eq!(h.emulator.stats().tokens_issued, 0);
    }

    #[test]
    fn form_decoding_handles_plus_and_escapes_and_rejects_bad_escapes() {
        let pairs = parse_form(b"a=x+y%2Fz%3d&b=&c").expect("valid form");
        let expected =
            [("a", "x y/z="), ("b", ""), ("c", "")].map(|(k, v)| (k.to_owned(), v.to_owned()));
        assert_eq!(pairs, expected);
        assert!(parse_form(b"a=%4").is_err());
        assert!(parse_form(b"a=%zz").is_err());
        assert!(parse_form(b"a=%ff").is_err(), "not UTF-8");
    }

    #[tokio::test]
    async fn send_without_a_bearer_token_is_unauthenticated_without_fcm_detail() {
        let h = spawn(&[]).await;
        let (status, body) = read(
            h.post_send("pushgate-emulator", None, &json!({"message": message("k")}))
                .await,
        )
        .await;
        assert_fcm_error(status, &body, 401, "UNAUTHENTICATED", None);
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .starts_with("Request had invalid authentication")
        );
        assert_eq!(h.emulator.stats().rejected.get("UNAUTHENTICATED"), Some(&1));
    }

    #[tokio::test]
    async fn send_with_a_token_not_issued_here_is_unauthenticated() {
        let h = spawn(&[]).await;
        let response = h
            .post_send(
                "pushgate-emulator",
                Some("ya29.forged"),
                &json!({"message": message("k")}),
            )
            .await;
        let (status, body) = read(response).await;
        assert_fcm_error(status, &body, 401, "UNAUTHENTICATED", None);
        assert_eq!(h.emulator.stats().accepted, 0);
    }

    #[tokio::test]
    async fn send_with_an_expired_token_is_unauthenticated() {
        let h = spawn(&["--token-ttl", "1"]).await;
        let (status, grant) = h.grant(&h.good_jwt()).await;
        assert_eq!((status, &grant["expires_in"]), (200, &json!(1)));
        let token = grant["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned();
        let deadline = Instant::now() + Duration::from_secs(10);
        let body = loop {
            let response = h
                .post_send(
                    "pushgate-emulator",
                    Some(&token),
                    &json!({"message": message("k")}),
                )
                .await;
            let (status, body) = read(response).await;
            if status == 401 {
                break body;
            }
            assert_eq!(status, 200, "{body}");
            assert!(
                Instant::now() < deadline,
                "token still accepted 10 s after a 1 s TTL"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_fcm_error(401, &body, 401, "UNAUTHENTICATED", None);
    }

    #[tokio::test]
    async fn send_to_another_project_is_not_found_without_fcm_detail() {
        let h = spawn(&[]).await;
        let token = h.token().await;
        let (status, body) = read(
            h.post_send(
                "other-project",
                Some(&token),
                &json!({"message": message("k")}),
            )
            .await,
        )
        .await;
        assert_fcm_error(status, &body, 404, "NOT_FOUND", None);
        assert_eq!(h.emulator.stats().accepted, 0);
    }

    #[tokio::test]
    async fn message_with_two_targets_is_invalid() {
        let h = spawn(&[]).await;
        h.assert_invalid(json!({"token": "device-1", "topic": "news"}), "exactly one")
            .await;
    }

    #[tokio::test]
    async fn message_without_a_target_is_invalid() {
        let h = spawn(&[]).await;
        h.assert_invalid(json!({"notification": {"title": "hi"}}), "exactly one")
            .await;
        h.assert_invalid(json!({"token": ""}), "non-empty").await;
    }

    #[tokio::test]
    async fn topic_must_be_a_bare_name() {
        let h = spawn(&[]).await;
        h.assert_invalid(json!({"topic": "/topics/news"}), "message.topic")
            .await;
        assert_eq!(h.send(json!({"topic": "news-CH_de.~%20"})).await.0, 200);
    }

    #[tokio::test]
    async fn data_values_must_be_strings() {
        let h = spawn(&[]).await;
        h.assert_invalid(
            json!({"token": "t", "data": {"amount": 12}}),
            "message.data.amount",
        )
        .await;
        h.assert_invalid(
            json!({"token": "t", "data": {"urgent": true}}),
            "message.data.urgent",
        )
        .await;
    }

    #[tokio::test]
    async fn reserved_data_keys_are_invalid() {
        let h = spawn(&[]).await;
        for key in [
            "from",
            "message_type",
            "google.sent_time",
            "gcm.notification",
        ] {
            h.assert_invalid(json!({"token": "t", "data": {key: "x"}}), key)
                .await;
        }
    }

    #[tokio::test]
    async fn unknown_message_and_body_keys_are_invalid() {
        let h = spawn(&[]).await;
        h.assert_invalid(json!({"token": "t", "priority": "high"}), "priority")
            .await;
        h.assert_invalid(
            json!({"token": "t", "notification": {"title": "x", "sound": "y"}}),
            "sound",
        )
        .await;
        let token = h.token().await;
        let body = json!({"message": {"token": "t"}, "dry_run": true});
        let (status, body) =
            read(h.post_send("pushgate-emulator", Some(&token), &body).await).await;
        assert_fcm_error(
            status,
            &body,
            400,
            "INVALID_ARGUMENT",
            Some("INVALID_ARGUMENT"),
        );
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("dry_run"),
            "{body}"
        );
    }

    #[tokio::test]
    async fn body_must_be_declared_json() {
        let h = spawn(&[]).await;
        let token = h.token().await;
        let request = (h
            .http
            .post(h.url("/v1/projects/pushgate-emulator/messages:send")))
        .bearer_auth(&token)
        .header(CONTENT_TYPE, "text/plain")
        .body(json!({"message": {"token": "t"}}).to_string());
        let (status, body) = read(request.send().await.expect("send")).await;
        assert_fcm_error(
            status,
            &body,
            400,
            "INVALID_ARGUMENT",
            Some("INVALID_ARGUMENT"),
        );
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("content-type"),
            "{body}"
        );
    }

    /// A message whose serialized form is exactly `size` bytes.
    fn sized(target: &str, name: &str, size: usize) -> Value {
        let mut message = json!({target: name, "data": {"pad": ""}});
        let missing = size - message.to_string().len();
        message["data"]["pad"] = json!("x".repeat(missing));
        assert_eq!(message.to_string().len(), size);
        message
    }

    #[tokio::test]
    async fn messages_over_4096_bytes_are_invalid() {
        let h = spawn(&[]).await;
        assert_eq!(h.send(sized("token", "t", 4096)).await.0, 200);
        h.assert_invalid(sized("token", "t", 4097), "4096-byte limit")
            .await;
    }

    #[tokio::test]
    async fn topic_messages_over_2048_bytes_are_invalid() {
        let h = spawn(&[]).await;
        assert_eq!(h.send(sized("topic", "news", 2048)).await.0, 200);
        h.assert_invalid(sized("topic", "news", 2049), "2048-byte limit")
            .await;
        assert_eq!(
            h.send(sized("condition", "'news' in topics", 3000)).await.0,
            200
        );
    }

    #[tokio::test]
    async fn android_priority_must_be_normal_or_high() {
        let h = spawn(&[]).await;
        h.assert_invalid(
            json!({"token": "t", "android": {"priority": "urgent"}}),
            "priority",
        )
        .await;
        assert_eq!(
            h.send(json!({"token": "t", "android": {"priority": "HIGH"}}))
                .await
                .0,
            200
        );
    }

    #[tokio::test]
    async fn android_ttl_must_be_a_duration_and_keys_known() {
        let h = spawn(&[]).await;
        h.assert_invalid(json!({"token": "t", "android": {"ttl": 3600}}), "ttl")
            .await;
        h.assert_invalid(json!({"token": "t", "android": {"ttl": "1h"}}), "ttl")
            .await;
        h.assert_invalid(
            json!({"token": "t", "android": {"time_to_live": "3600s"}}),
            "time_to_live",
        )
        .await;
        assert_eq!(
            h.send(json!({"token": "t", "android": {"ttl": "3.5s"}}))
                .await
                .0,
            200
        );
    }

    #[tokio::test]
    async fn validate_only_is_counted_as_validated_not_accepted() {
        let h = spawn(&[]).await;
        let token = h.token().await;
        let body = json!({"message": message("dry"), "validate_only": true});
        let (status, body) =
            read(h.post_send("pushgate-emulator", Some(&token), &body).await).await;
        assert_eq!(
            (status, &body["name"]),
            (
                200,
                &json!("projects/pushgate-emulator/messages/fake_message_id")
            )
        );
        let stats = h.emulator.stats();
        assert_eq!((stats.accepted, stats.validated), (0, 1));
        assert!(stats.by_key.is_empty(), "{stats:?}");
    }

    async fn assert_injected(
        extra: &[&str],
        http: u16,
        canonical: &str,
        code: &str,
        retry_after: Option<&str>,
    ) {
        let h = spawn(extra).await;
        let token = h.token().await;
        let response = h
            .post_send(
                "pushgate-emulator",
                Some(&token),
                &json!({"message": message("k")}),
            )
            .await;
        let header = response
            .headers()
            .get(RETRY_AFTER)
            .map(|v| v.to_str().expect("ASCII").to_owned());
        assert_eq!(header.as_deref(), retry_after);
        let (status, body) = read(response).await;
        assert_fcm_error(status, &body, http, canonical, Some(code));
        let stats = h.emulator.stats();
        assert_eq!((stats.accepted, stats.rejected.get(code)), (0, Some(&1)));
    }

    #[tokio::test]
    async fn injected_503_is_unavailable_with_retry_after() {
        assert_injected(
            &["--fail-503", "1", "--retry-after", "7"],
            503,
            "UNAVAILABLE",
            "UNAVAILABLE",
            Some("7"),
        )
        .await;
        assert_injected(
            &["--fail-503", "1"],
            503,
            "UNAVAILABLE",
            "UNAVAILABLE",
            None,
        )
        .await;
    }

    #[tokio::test]
    async fn injected_429_is_quota_exceeded_with_retry_after() {
        let args = ["--fail-429", "1", "--retry-after", "60"];
        assert_injected(
            &args,
            429,
            "RESOURCE_EXHAUSTED",
            "QUOTA_EXCEEDED",
            Some("60"),
        )
        .await;
    }

    #[tokio::test]
    async fn injected_500_is_internal_without_retry_after() {
        assert_injected(
            &["--fail-500", "1", "--retry-after", "7"],
            500,
            "INTERNAL",
            "INTERNAL",
            None,
        )
        .await;
    }

    #[tokio::test]
    async fn faults_come_after_authentication_and_before_validation() {
        let h = spawn(&["--fail-503", "1"]).await;
        let (status, body) = read(
            h.post_send("pushgate-emulator", None, &json!({"message": message("k")}))
                .await,
        )
        .await;
        assert_fcm_error(status, &body, 401, "UNAUTHENTICATED", None);
        let (status, body) = h.send(json!({"topic": "/topics/bad"})).await;
        assert_fcm_error(status, &body, 503, "UNAVAILABLE", Some("UNAVAILABLE"));
    }

    #[tokio::test]
    async fn fail_token_forces_every_error_code() {
        let rules: Vec<String> = ErrorCode::ALL
            .iter()
            .map(|c| format!("bad-{0}-={0}", c.as_str()))
            .collect();
        let extra: Vec<&str> = rules
            .iter()
            .flat_map(|rule| ["--fail-token", rule.as_str()])
            .collect();
        let h = spawn(&extra).await;
        for code in ErrorCode::ALL {
            let (status, body) = h
                .send(json!({"token": format!("bad-{}-device", code.as_str())}))
                .await;
            let (http, canonical) = code.http();
            assert_fcm_error(status, &body, http.as_u16(), canonical, Some(code.as_str()));
            assert_eq!(h.emulator.stats().rejected.get(code.as_str()), Some(&1));
        }
        assert_eq!(h.send(json!({"token": "good-device"})).await.0, 200);
    }

    #[tokio::test]
    async fn unregistered_prefix_answers_unregistered() {
        let h = spawn(&["--unregistered-prefix", "dead-"]).await;
        let (status, body) = h.send(json!({"token": "dead-1234"})).await;
        assert_fcm_error(status, &body, 404, "NOT_FOUND", Some("UNREGISTERED"));
        assert_eq!(h.send(json!({"token": "alive-1234"})).await.0, 200);
        assert_eq!(
            h.send(json!({"topic": "dead-topic"})).await.0,
            200,
            "topics have no token verdicts"
        );
        assert_eq!(h.emulator.stats().rejected.get("UNREGISTERED"), Some(&1));
    }

    #[tokio::test]
    async fn latency_delays_every_send() {
        let h = spawn(&["--latency-ms", "300"]).await;
        let token = h.token().await;
        let started = Instant::now();
        let response = h
            .post_send(
                "pushgate-emulator",
                Some(&token),
                &json!({"message": message("k")}),
            )
            .await;
        assert_eq!(response.status().as_u16(), 200);
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn bad_fault_arguments_are_refused() {
        assert!(parse_fail_token("dead-=UNREGISTERED").is_ok());
        assert!(parse_fail_token("dead-=NOT_A_CODE").is_err());
        assert!(parse_fail_token("=UNREGISTERED").is_err());
        assert!(Cli::try_parse_from(["emulator", "--fail-token", "x=BOGUS"]).is_err());
        let start = Emulator::start_with_key(
            args(&["--fail-503", "0.6", "--fail-429", "0.6"]),
            test_key(0),
        );
        assert_eq!(
            start.await.err().map(|e| e.kind()),
            Some(std::io::ErrorKind::InvalidInput)
        );
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
