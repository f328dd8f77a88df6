//! A strict local stand-in for a Korean messaging gateway (KakaoTalk Alimtalk and
//! SMS/LMS), the far end of pushgate's `[[fallback]]` rungs.
//!
//! Routes: `POST /alimtalk`, `POST /sms` (one message each, a JSON object checked by
//! `check`), `GET /stats` (totals, and per idempotency key its channel, sends,
//! duplicates and refusals). HTTP/1.1 and h2c on one port.
//!
//! Idempotency, as real gateways keep it: every message carries a key header; the first
//! final answer (sent, or refused for good) is kept per key, and a repeat with the same
//! body gets that answer again and is counted as a duplicate, never as a second send; a
//! repeat with another body is refused (`IDEMPOTENCY_MISMATCH`). An injected 500 keeps
//! nothing, so the retry is a first try. Faults on demand: `--fail-500 P` (the share of
//! requests answered 500), `--fail-channel NAME` (that channel refuses every message
//! for good, 400 `CHANNEL_REFUSED`, as Alimtalk does for a customer without KakaoTalk).

mod check;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use check::Channel;
use check::{Invalid, check_body, check_key};

/// Far above any message; only stops a runaway client.
const MAX_BODY: usize = 64 * 1024;

#[derive(Debug, Clone, clap::Args)]
pub struct GatewayEmulatorArgs {
    /// Address to listen on (loopback), e.g. 127.0.0.1:0
    #[arg(long, default_value = "127.0.0.1:8950")]
    pub listen: SocketAddr,
    /// The header carrying each message's idempotency key.
    #[arg(long, default_value = "Idempotency-Key")]
    pub idempotency_header: String,
    /// Share of requests (0..=1) answered 500 before anything is kept.
    #[arg(long = "fail-500", default_value_t = 0.0)]
    pub fail_500: f64,
    /// A channel (alimtalk, sms) that refuses every message for good (400).
    #[arg(long = "fail-channel")]
    pub fail_channels: Vec<String>,
    /// Delay before each answer, after the message was taken: a client that dies while
    /// waiting leaves a sent message behind, as with a real gateway.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
}

impl Default for GatewayEmulatorArgs {
    fn default() -> Self {
        GatewayEmulatorArgs {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            idempotency_header: "Idempotency-Key".into(),
            fail_500: 0.0,
            fail_channels: Vec::new(),
            latency_ms: 0,
        }
    }
}

/// What the gateway has seen of one idempotency key.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct KeyStats {
    pub channel: String,
    /// Requests with this key, whatever their answer.
    pub requests: u64,
    /// Messages sent (at most 1: a repeat is a duplicate).
    pub sends: u64,
    /// Repeats answered with the kept answer.
    pub duplicates: u64,
    /// Answers that refused the message (4xx, injected 500s).
    pub refused: u64,
}

/// The counters behind `GET /stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct GatewayStats {
    pub requests: u64,
    pub sends: u64,
    pub duplicates: u64,
    pub refused: u64,
    /// Sends per channel.
    pub by_channel: BTreeMap<String, u64>,
    pub keys: BTreeMap<String, KeyStats>,
}

/// A kept final answer: the body it answered and what it said.
struct Kept {
    body: Bytes,
    status: StatusCode,
    answer: Value,
}

struct State {
    header: String,
    fail_500: f64,
    fail_channels: Vec<Channel>,
    latency: Duration,
    kept: Mutex<HashMap<String, Kept>>,
    stats: Mutex<GatewayStats>,
}

/// A running emulator.
pub struct GatewayEmulator {
    addr: SocketAddr,
    state: Arc<State>,
    cancel: CancellationToken,
    server: JoinHandle<()>,
}

impl GatewayEmulator {
    /// Check the arguments, bind, and serve.
    pub async fn start(args: GatewayEmulatorArgs) -> std::io::Result<GatewayEmulator> {
        let invalid = |msg: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, msg);
        if !(0.0..=1.0).contains(&args.fail_500) {
            return Err(invalid(format!(
                "--fail-500 must be in 0..=1, got {}",
                args.fail_500
            )));
        }
        let fail_channels = args
            .fail_channels
            .iter()
            .map(|name| {
                Channel::parse(name).ok_or_else(|| {
                    invalid(format!(
                        "--fail-channel {name:?}: the channels are alimtalk and sms"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let listener = TcpListener::bind(args.listen).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            header: args.idempotency_header,
            fail_500: args.fail_500,
            fail_channels,
            latency: Duration::from_millis(args.latency_ms),
            kept: Mutex::new(HashMap::new()),
            stats: Mutex::new(GatewayStats::default()),
        });
        let cancel = CancellationToken::new();
        let server = tokio::spawn(super::server::serve(
            "gateway emulator",
            listener,
            None,
            state.clone(),
            cancel.clone(),
        ));
        Ok(GatewayEmulator {
            addr,
            state,
            cancel,
            server,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn stats(&self) -> GatewayStats {
        self.state
            .stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Stop accepting, let in-flight requests finish (bounded), and wait for the server.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        let _ = (&mut self.server).await;
    }
}

impl Drop for GatewayEmulator {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Run until `shutdown` resolves: start, print the address on stdout, serve.
pub async fn run(
    args: GatewayEmulatorArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let listen = args.listen;
    let emulator = GatewayEmulator::start(args)
        .await
        .with_context(|| format!("starting the gateway emulator on {listen}"))?;
    println!(
        "gateway emulator listening on {} (POST /alimtalk, POST /sms, GET /stats)",
        emulator.base_url()
    );
    shutdown.await;
    emulator.shutdown().await;
    Ok(())
}

fn answer(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn refusal(status: StatusCode, code: &str, message: &str) -> (StatusCode, Value) {
    (status, json!({"code": code, "message": message}))
}

impl super::server::Handler for State {
    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().trim_start_matches('/').to_owned();
        if req.method() == Method::GET && path == "stats" {
            let stats = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
            return answer(
                StatusCode::OK,
                &serde_json::to_value(&*stats).unwrap_or_default(),
            );
        }
        let Some(channel) = Channel::parse(&path) else {
            let (s, b) = refusal(StatusCode::NOT_FOUND, "NOT_FOUND", "no such route");
            return answer(s, &b);
        };
        if req.method() != Method::POST {
            let (s, b) = refusal(
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                "messages are POSTed",
            );
            return answer(s, &b);
        }
        let key = req
            .headers()
            .get(self.header.as_str())
            .map(|v| v.to_str().unwrap_or("\u{fffd}").to_owned());
        let json_type = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => {
                let (s, b) = refusal(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "TOO_LARGE",
                    "the body is too large",
                );
                return answer(s, &b);
            }
        };
        let (status, body) = self.message(channel, key.as_deref(), json_type, body);
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        answer(status, &body)
    }
}

impl State {
    /// One message: checked, deduplicated by its key, sent or refused.
    fn message(
        &self,
        channel: Channel,
        key: Option<&str>,
        json_type: bool,
        body: Bytes,
    ) -> (StatusCode, Value) {
        let mut stats = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
        stats.requests += 1;
        let key = match check_key(key, &self.header) {
            Ok(key) => key,
            Err(Invalid { code, message }) => {
                stats.refused += 1;
                return refusal(StatusCode::BAD_REQUEST, code, &message);
            }
        };
        let entry = stats.keys.entry(key.clone()).or_default();
        entry.channel = channel.as_str().to_owned();
        entry.requests += 1;
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(first) = kept.get(&key) {
            if first.body != body {
                entry.refused += 1;
                stats.refused += 1;
                return refusal(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "IDEMPOTENCY_MISMATCH",
                    "this key was used with another body",
                );
            }
            entry.duplicates += 1;
            stats.duplicates += 1;
            return (first.status, first.answer.clone());
        }
        if self.fail_500 > 0.0 && rand::random_bool(self.fail_500) {
            entry.refused += 1;
            stats.refused += 1;
            return refusal(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                "injected failure",
            );
        }
        let (status, answer) = if !json_type {
            refusal(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "INVALID_CONTENT_TYPE",
                "Content-Type must be application/json",
            )
        } else if let Err(Invalid { code, message }) = check_body(channel, &body) {
            refusal(StatusCode::BAD_REQUEST, code, &message)
        } else if self.fail_channels.contains(&channel) {
            refusal(
                StatusCode::BAD_REQUEST,
                "CHANNEL_REFUSED",
                &format!("{} refused the message (injected)", channel.as_str()),
            )
        } else {
            let id = stats.sends + 1;
            (
                StatusCode::OK,
                json!({"status": "accepted", "channel": channel.as_str(), "message_id": format!("m-{id}")}),
            )
        };
        let entry = stats.keys.entry(key.clone()).or_default();
        if status == StatusCode::OK {
            entry.sends += 1;
            stats.sends += 1;
            *stats
                .by_channel
                .entry(channel.as_str().to_owned())
                .or_default() += 1;
        } else {
            entry.refused += 1;
            stats.refused += 1;
        }
        kept.insert(
            key,
            Kept {
                body,
                status,
                answer: answer.clone(),
            },
        );
        (status, answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(fail_channels: Vec<Channel>) -> State {
        State {
            header: "Idempotency-Key".into(),
            fail_500: 0.0,
            fail_channels,
            latency: Duration::ZERO,
            kept: Mutex::new(HashMap::new()),
            stats: Mutex::new(GatewayStats::default()),
        }
    }

    const SMS: &str = r#"{"to":"01012345678","from":"15881234","text":"x"}"#;

    #[test]
    fn a_repeated_key_gets_the_first_answer_and_counts_as_a_duplicate_not_a_send() {
        let gw = state(Vec::new());
        let body = Bytes::from_static(SMS.as_bytes());
        let first = gw.message(Channel::Sms, Some("K:sms"), true, body.clone());
        let again = gw.message(Channel::Sms, Some("K:sms"), true, body);
        assert_eq!(first.0, StatusCode::OK);
        assert_eq!(again, first);
        let other = gw.message(
            Channel::Sms,
            Some("K:sms"),
            true,
            Bytes::from_static(br#"{"to":"01012345678","from":"15881234","text":"y"}"#),
        );
        assert_eq!(other.0, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(other.1["code"], "IDEMPOTENCY_MISMATCH");
        let stats = gw.stats.lock().unwrap().clone();
        assert_eq!((stats.sends, stats.duplicates, stats.requests), (1, 1, 3));
        let key = &stats.keys["K:sms"];
        assert_eq!(
            (key.requests, key.sends, key.duplicates, key.refused),
            (3, 1, 1, 1)
        );
    }

    #[test]
    fn a_failed_channel_refuses_for_good_and_a_message_without_a_key_is_refused() {
        let gw = state(vec![Channel::Alimtalk]);
        let body = Bytes::from_static(
            br#"{"to":"01012345678","sender_key":"s","template_code":"T","text":"x"}"#,
        );
        let (status, answer) = gw.message(Channel::Alimtalk, Some("K:a"), true, body.clone());
        assert_eq!(
            (status, answer["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("CHANNEL_REFUSED"))
        );
        let (status, answer) = gw.message(Channel::Alimtalk, None, true, body.clone());
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(answer["code"], "MISSING_IDEMPOTENCY_KEY");
        let (status, _) = gw.message(
            Channel::Sms,
            Some("K:s"),
            false,
            Bytes::from_static(SMS.as_bytes()),
        );
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(gw.stats.lock().unwrap().sends, 0);
    }
}
