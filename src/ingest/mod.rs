//! TCP ports: listeners and connectors, framing, character sets, message checks and acks.
//!
//! One connection runs as: read → decode every complete frame → route them off the
//! async runtime → hand them to the group-commit writer → ack each frame in order.
//! An ack is written only after its record is in Redis. This module never talks to
//! Redis itself: it goes through [`Committer`].

pub mod admission;
pub mod charset;
pub mod fixed;
pub mod frame;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::now_ms;
use crate::config::{Mode, Payload, PortConfig};
use crate::metrics::{labels, metrics};
use crate::push::fields::RESERVED_FIELDS;
use crate::push::{Decision, Status};
use crate::script::{CompiledRoute, RouteEngine};
use crate::store::{Committer, Fence, NewRecord, Stored};
use admission::{AllowList, PeerRefusal, RefusalLog, Slots};

const MAX_UNIQUE_KEY_BYTES: usize = 256;
/// How long writing acks to a peer may take before the connection is dropped.
const ACK_WRITE_LIMIT: Duration = Duration::from_secs(30);
/// A stopping connection takes what its peer sent until the socket is quiet this long…
const DRAIN_POLL: Duration = Duration::from_millis(20);
/// … and for no longer than this in all.
const DRAIN_LIMIT: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("binding {addr} for port {port}: {cause}")]
    Bind {
        port: String,
        addr: String,
        cause: std::io::Error,
    },
    #[error("port {port}: {cause}")]
    Allow {
        port: String,
        cause: admission::AllowEntryError,
    },
}

/// What a port shows the outside world while it runs; shared with the supervisor.
#[derive(Debug, Default)]
pub struct PortLive {
    pub connections: AtomicUsize,
    /// Frames acked ok (new records).
    pub stored: AtomicU64,
    /// Frames acked ok as repeats of a stored `uniqueKey`.
    pub duplicates: AtomicU64,
    /// Frames answered with an error ack.
    pub rejected: AtomicU64,
    /// Unix ms of the last frame, 0 = none yet.
    pub last_frame_ms: AtomicI64,
    /// The address actually bound (listen) or connected to (connect; None between
    /// connections).
    pub bound: Mutex<Option<SocketAddr>>,
    /// Connect mode: the upstream (as written in `addr`/`addrs`) connected to now.
    pub connected: Mutex<Option<String>>,
    /// Listen mode: connections refused at accept or closed for want of a first frame.
    pub refused: AtomicU64,
    /// Keeps refusals from flooding the log.
    pub refusal_log: RefusalLog,
    /// The last connection-level problem (refused connect, framing error, Redis down).
    pub last_error: Mutex<Option<String>>,
}

impl PortLive {
    fn note_error(&self, text: String) {
        if let Ok(mut slot) = self.last_error.lock() {
            *slot = Some(text);
        }
    }

    /// Connect mode: which upstream the port is connected to (None: none now).
    fn note_connected(&self, upstream: Option<(&str, SocketAddr)>) {
        if let Ok(mut bound) = self.bound.lock() {
            *bound = upstream.map(|(_, peer)| peer);
        }
        if let Ok(mut connected) = self.connected.lock() {
            *connected = upstream.map(|(name, _)| name.to_owned());
        }
    }
}

/// Everything a running port needs.
#[derive(Clone)]
pub struct PortContext {
    pub config: PortConfig,
    pub committer: Committer,
    pub engine: Arc<RouteEngine>,
    /// The compiled route; the supervisor swaps it on reload without restarting the port.
    pub route: Arc<RwLock<CompiledRoute>>,
    pub live: Arc<PortLive>,
    /// Connect mode: the port's lease, which every write must still hold.
    pub fence: Option<PortFence>,
}

/// A connect-mode port's lease as its writes carry it, and the token cancelled when
/// the lease turns out lost (the port then stops acting at once).
#[derive(Clone)]
pub struct PortFence {
    pub fence: Fence,
    pub lost: CancellationToken,
}

/// Run a port until `cancel`: in-flight frames are finished and acked before it returns.
/// `ready` fires once the port is listening (or dialling).
pub async fn run_port(
    ctx: PortContext,
    cancel: CancellationToken,
    ready: tokio::sync::oneshot::Sender<()>,
) -> Result<(), IngestError> {
    match ctx.config.mode {
        Mode::Listen => listen(ctx, cancel, ready).await,
        Mode::Connect => {
            let _ = ready.send(());
            connect(ctx, cancel).await;
            Ok(())
        }
    }
}

async fn listen(
    ctx: PortContext,
    cancel: CancellationToken,
    ready: tokio::sync::oneshot::Sender<()>,
) -> Result<(), IngestError> {
    // Validated at load; parsed here once, not per connection.
    let allow = AllowList::parse(&ctx.config.allow).map_err(|cause| IngestError::Allow {
        port: ctx.config.name.clone(),
        cause,
    })?;
    // A listen port has exactly one address (validation refuses `addrs` there).
    let addr = ctx.config.addresses_text();
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|cause| IngestError::Bind {
            port: ctx.config.name.clone(),
            addr,
            cause,
        })?;
    let local = listener.local_addr().ok();
    if let Ok(mut bound) = ctx.live.bound.lock() {
        *bound = local;
    }
    tracing::info!(port = %ctx.config.name, addr = ?local, "listening");
    let _ = ready.send(());
    let slots = Slots::new(
        ctx.config.max_connections,
        ctx.config.max_connections_per_addr,
    );
    let first_frame = ctx.config.first_frame_timeout();
    let tracker = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = cancel.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(port = %ctx.config.name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if !allow.permits(peer.ip()) {
            // Closed unread and unanswered: a stranger learns nothing about the port.
            turn_away(&ctx, peer, PeerRefusal::NotAllowed);
            drop(stream);
            continue;
        }
        let slot = match slots.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(why) => {
                let ctx = ctx.clone();
                let slots = slots.clone();
                tracker.spawn(async move { refuse(ctx, &slots, stream, peer, why).await });
                continue;
            }
        };
        let ctx = ctx.clone();
        let cancel = cancel.clone();
        tracker.spawn(async move {
            serve_connection(&ctx, stream, peer, first_frame, &cancel).await;
            drop(slot);
        });
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
    tracing::info!(port = %ctx.config.name, "stopped");
    Ok(())
}

/// An allowed peer over a connection cap: say which in an error ack (a real FEP's
/// operator needs to know), then close without reading.
async fn refuse(
    ctx: PortContext,
    slots: &Slots,
    mut stream: TcpStream,
    peer: SocketAddr,
    why: PeerRefusal,
) {
    turn_away(&ctx, peer, why);
    let text = match why {
        PeerRefusal::PerAddr => format!(
            "port {} allows max_connections_per_addr = {} from {}",
            ctx.config.name,
            slots.per_addr(),
            peer.ip()
        ),
        _ => format!(
            "port {} is at max_connections = {}",
            ctx.config.name,
            slots.max()
        ),
    };
    let mut out = Vec::new();
    encode_ack(&ctx.config, &Ack::error(None, text), &mut out);
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&out)).await;
}

/// Count a turned-away connection (metric and the port's `refused`) and warn about
/// it, at most once per [`admission::LOG_EVERY`] per reason.
fn turn_away(ctx: &PortContext, peer: SocketAddr, why: PeerRefusal) {
    let port = &ctx.config.name;
    ctx.live.refused.fetch_add(1, Ordering::Relaxed);
    metrics()
        .ingest_refused
        .get_or_create(&labels(&[("port", port), ("reason", why.as_str())]))
        .inc();
    if let Some(unlogged) = ctx
        .live
        .refusal_log
        .should_log(why, std::time::Instant::now())
    {
        tracing::warn!(
            port = %port,
            %peer,
            reason = why.as_str(),
            unlogged,
            "connection refused ({unlogged} more of this reason since the last such line)"
        );
    }
}

/// Dial the upstreams in order and serve the one connection made. When an upstream
/// refuses or drops the connection the next one is dialled at once; the backoff
/// (doubling, capped at `reconnect_max`) runs only after a whole round of them failed.
/// A connection that lasted longer than `reconnect_max` counts as a success: the
/// backoff starts over and so does the round. All of it runs under the port's one
/// lease (connect mode): moving between upstreams never gives the port up.
async fn connect(ctx: PortContext, cancel: CancellationToken) {
    let upstreams = ctx.config.addresses();
    let max = Duration::from_secs(ctx.config.reconnect_max);
    let mut backoff = Duration::from_millis(100);
    let mut next = 0;
    let mut failed_in_round = 0;
    while !cancel.is_cancelled() {
        let Some(upstream) = upstreams.get(next) else {
            // Validation keeps `addresses()` non-empty; never spin if it were not.
            ctx.live.note_error("no upstream address to dial".into());
            cancel.cancelled().await;
            return;
        };
        next = (next + 1) % upstreams.len();
        let dial = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(upstream));
        let attempt = tokio::select! {
            attempt = dial => attempt,
            _ = cancel.cancelled() => return,
        };
        failed_in_round += 1;
        match attempt {
            Ok(Ok(stream)) => {
                let peer = stream
                    .peer_addr()
                    .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
                ctx.live.note_connected(Some((upstream, peer)));
                tracing::info!(port = %ctx.config.name, %upstream, %peer, "connected");
                let started = tokio::time::Instant::now();
                serve_connection(&ctx, stream, peer, None, &cancel).await;
                ctx.live.note_connected(None);
                if started.elapsed() > max {
                    backoff = Duration::from_millis(100);
                    failed_in_round = 1;
                }
            }
            Ok(Err(e)) => {
                ctx.live
                    .note_error(format!("connecting to {upstream}: {e}"));
            }
            Err(_) => ctx
                .live
                .note_error(format!("connecting to {upstream}: timed out")),
        }
        if failed_in_round < upstreams.len() {
            tracing::debug!(port = %ctx.config.name, next = %upstreams[next], "trying the next upstream");
            continue;
        }
        failed_in_round = 0;
        let wait = jitter(backoff);
        tracing::debug!(port = %ctx.config.name, ?wait, "every upstream failed; reconnecting");
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = cancel.cancelled() => return,
        }
        backoff = (backoff * 2).min(max);
    }
}

/// Between 50% and 100% of `base`, so reconnecting peers spread out.
fn jitter(base: Duration) -> Duration {
    base.mul_f64(rand::random_range(0.5..=1.0))
}

/// Serve one connection until the peer closes, the framing breaks, it idles out, it
/// sends no complete frame within `first_frame` (from now), or `cancel`.
async fn serve_connection(
    ctx: &PortContext,
    mut stream: TcpStream,
    peer: SocketAddr,
    first_frame: Option<Duration>,
    cancel: &CancellationToken,
) {
    let name = &ctx.config.name;
    ctx.live.connections.fetch_add(1, Ordering::Relaxed);
    let _ = stream.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut acks: Vec<u8> = Vec::with_capacity(4 * 1024);
    // Counted from accept, not per read: a peer trickling bytes of a frame that never
    // completes holds the slot no longer than one that sends nothing.
    let mut first_frame_by = first_frame.map(|limit| tokio::time::Instant::now() + limit);
    let why_closed = loop {
        let (frames, broken) = process_buffer(ctx, &mut buf, &mut acks).await;
        if frames > 0 {
            first_frame_by = None;
        }
        if !acks.is_empty() {
            // A peer that stops reading its acks must not hold the connection forever.
            match tokio::time::timeout(ACK_WRITE_LIMIT, stream.write_all(&acks)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => break format!("writing acks: {e}"),
                Err(_) => break format!("peer did not take its acks within {ACK_WRITE_LIMIT:?}"),
            }
            acks.clear();
        }
        if let Some(e) = broken {
            ctx.live.note_error(format!("closed {peer}: {e}"));
            break format!("framing broken: {e}");
        }
        let no_first_frame = async {
            match first_frame_by {
                Some(by) => tokio::time::sleep_until(by).await,
                None => std::future::pending().await,
            }
        };
        let read = tokio::select! {
            read = read_some(&mut stream, &mut buf, ctx.config.idle_timeout()) => read,
            () = no_first_frame => {
                turn_away(ctx, peer, PeerRefusal::FirstFrameTimeout);
                break format!("no complete frame within {:?}", first_frame.unwrap_or_default());
            }
            _ = cancel.cancelled() => {
                // Stopping: take what the peer already sent, answer it, then close.
                drain_available(&stream, &mut buf, ctx.config.max_frame_bytes()).await;
                let _ = process_buffer(ctx, &mut buf, &mut acks).await;
                if !acks.is_empty() {
                    let _ = tokio::time::timeout(ACK_WRITE_LIMIT, stream.write_all(&acks)).await;
                }
                break "port stopping".to_owned();
            }
        };
        match read {
            Ok(0) if buf.is_empty() => break "peer closed".to_owned(),
            Ok(0) => break format!("peer closed mid-frame, {} bytes discarded", buf.len()),
            Ok(_) => {}
            Err(e) => break e,
        }
    };
    let _ = stream.shutdown().await;
    ctx.live.connections.fetch_sub(1, Ordering::Relaxed);
    tracing::debug!(port = %name, %peer, "connection closed: {why_closed}");
}

async fn read_some(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    idle: Option<Duration>,
) -> Result<usize, String> {
    buf.reserve(16 * 1024);
    let read = stream.read_buf(buf);
    match idle {
        Some(limit) => match tokio::time::timeout(limit, read).await {
            Ok(result) => result.map_err(|e| format!("reading: {e}")),
            Err(_) => Err(format!("idle for {limit:?}")),
        },
        None => read.await.map_err(|e| format!("reading: {e}")),
    }
}

/// Move what the socket already holds into `buf`: until it is quiet for [`DRAIN_POLL`],
/// for at most [`DRAIN_LIMIT`] and `limit` bytes (a peer that keeps sending must not
/// hold a stop up). Readiness is polled rather than assumed: after the process was
/// stopped or busy, the kernel may hold bytes the runtime has not been told about, and
/// `try_read` alone would miss them.
async fn drain_available(stream: &TcpStream, buf: &mut Vec<u8>, limit: usize) {
    let mut chunk = [0u8; 16 * 1024];
    let until = tokio::time::Instant::now() + DRAIN_LIMIT;
    while buf.len() < limit {
        let wait = until
            .saturating_duration_since(tokio::time::Instant::now())
            .min(DRAIN_POLL);
        if wait.is_zero()
            || !matches!(
                tokio::time::timeout(wait, stream.readable()).await,
                Ok(Ok(()))
            )
        {
            break;
        }
        match stream.try_read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => break,
        }
    }
}

/// Decode, route, store and ack every complete frame in `buf` (consuming them).
/// Returns how many frames were answered (ndjson's blank keep-alive lines are not
/// frames) and the framing error, if the stream broke, after acking the frames before it.
async fn process_buffer(
    ctx: &PortContext,
    buf: &mut Vec<u8>,
    acks: &mut Vec<u8>,
) -> (usize, Option<frame::FrameError>) {
    let framing = ctx.config.framing();
    let mut parsed = Vec::new();
    let mut start = 0;
    let mut broken = None;
    loop {
        match framing.decode(&buf[start..], ctx.config.max_frame_bytes()) {
            Ok(Some(f)) => {
                let body = &buf[start + f.body.start..start + f.body.end];
                if !body.is_empty() || !matches!(framing, frame::Framing::Ndjson) {
                    parsed.push(parse_message(&ctx.config, ctx.engine.zone(), body));
                }
                start += f.consumed;
            }
            Ok(None) => break,
            Err(e) => {
                broken = Some(e);
                break;
            }
        }
    }
    buf.drain(..start);
    let frames = parsed.len();
    if !parsed.is_empty() {
        ctx.live.last_frame_ms.store(now_ms(), Ordering::Relaxed);
        for ack in store_messages(ctx, parsed).await {
            match &ack {
                Ack::Stored { dup: false, .. } => ctx.live.stored.fetch_add(1, Ordering::Relaxed),
                Ack::Stored { dup: true, .. } => {
                    ctx.live.duplicates.fetch_add(1, Ordering::Relaxed)
                }
                Ack::Error { .. } => ctx.live.rejected.fetch_add(1, Ordering::Relaxed),
            };
            encode_ack(&ctx.config, &ack, acks);
        }
    }
    if let Some(e) = &broken {
        ctx.live.rejected.fetch_add(1, Ordering::Relaxed);
        record_reject(&ctx.config.name, "framing");
        encode_ack(&ctx.config, &Ack::error(None, e.to_string()), acks);
        buf.clear();
    }
    (frames, broken)
}

fn record_reject(port: &str, reason: &str) {
    let m = metrics();
    m.frames
        .get_or_create(&labels(&[("port", port), ("result", "rejected")]))
        .inc();
    m.rejected
        .get_or_create(&labels(&[("port", port), ("reason", reason)]))
        .inc();
}

/// A frame's decoded message, or why it was refused (with its key when known).
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub unique_key: String,
    pub fields: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub key: Option<String>,
    pub error: String,
    /// A short fixed name for metrics (`json`, `charset`, `unique_key`, …).
    pub reason: &'static str,
}

fn refusal(key: Option<String>, reason: &'static str, error: String) -> Refusal {
    Refusal { key, error, reason }
}

/// Decode a frame body and check it: a JSON object (or fixed-width telegram) with a
/// `uniqueKey`, the port's required fields, no reserved field, a valid reserved time.
pub fn parse_message(
    port: &PortConfig,
    zone: chrono_tz::Tz,
    body: &[u8],
) -> Result<Message, Refusal> {
    let fields = match port.payload {
        Payload::Json => {
            let text = port
                .encoding
                .decode(body)
                .map_err(|e| refusal(None, "charset", e.to_string()))?;
            match serde_json::from_str::<Value>(&text) {
                Ok(Value::Object(map)) => map,
                Ok(other) => {
                    return Err(refusal(
                        None,
                        "json",
                        format!("frame is JSON {} but must be an object", json_kind(&other)),
                    ));
                }
                Err(e) => {
                    return Err(refusal(
                        None,
                        "json",
                        format!("frame is not valid JSON: {e}"),
                    ));
                }
            }
        }
        Payload::Fixed => fixed::decode_fixed(&port.fields, body, port.encoding)
            .map_err(|e| refusal(None, "fixed", e.to_string()))?,
    };
    check_message(fields, &port.required, zone)
}

/// The checks every message passes, whatever carried it (a port or the HTTP API).
pub fn check_message(
    mut fields: Map<String, Value>,
    required: &[String],
    zone: chrono_tz::Tz,
) -> Result<Message, Refusal> {
    // Numbers sent in the standard fields are kept as text, and the values pushgate
    // looks records up by (uniqueKey, the indexed fields) are kept trimmed: the record,
    // its index entries and retention's removal of them all see one spelling.
    for name in crate::push::fields::STANDARD_FIELDS {
        let keyed = name == "uniqueKey"
            || crate::push::fields::ZSET_FIELDS.contains(&name)
            || crate::push::fields::BITMAP_FIELDS.contains(&name);
        match fields.get_mut(name) {
            Some(v @ (Value::Number(_) | Value::Bool(_))) => *v = Value::String(v.to_string()),
            Some(Value::String(s)) if keyed && s.trim().len() != s.len() => {
                *s = s.trim().to_owned();
            }
            _ => {}
        }
    }
    let key = match fields.get("uniqueKey") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_owned(),
        Some(Value::String(_)) | None => {
            return Err(refusal(
                None,
                "unique_key",
                "uniqueKey is missing or empty".into(),
            ));
        }
        Some(other) => {
            return Err(refusal(
                None,
                "unique_key",
                format!("uniqueKey must be a string, got {}", json_kind(other)),
            ));
        }
    };
    if key.len() > MAX_UNIQUE_KEY_BYTES {
        return Err(refusal(
            None,
            "unique_key",
            format!(
                "uniqueKey is {} bytes, the limit is {MAX_UNIQUE_KEY_BYTES}",
                key.len()
            ),
        ));
    }
    let some_key = || Some(key.clone());
    if let Some(name) = RESERVED_FIELDS.iter().find(|f| fields.contains_key(**f)) {
        return Err(refusal(
            some_key(),
            "reserved_field",
            format!("field {name:?} is reserved for pushgate's own record fields"),
        ));
    }
    for name in required {
        let present = fields
            .get(name)
            .and_then(crate::store::scalar_text)
            .is_some_and(|t| !t.is_empty());
        if !present {
            return Err(refusal(
                some_key(),
                "required_field",
                format!("required field {name:?} is missing or empty"),
            ));
        }
    }
    if let Some(Value::String(reserved)) = fields.get("sndn_rsev_hour") {
        crate::script::parse_reserved_time(reserved, zone)
            .map_err(|e| refusal(some_key(), "reserved_time", e))?;
    }
    Ok(Message {
        unique_key: key,
        fields,
    })
}

/// "a string", "an array", … for messages about a JSON value.
pub fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The answer to one frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Ack {
    Stored { key: String, id: u64, dup: bool },
    Error { key: Option<String>, error: String },
}

impl Ack {
    fn error(key: Option<String>, error: String) -> Ack {
        Ack::Error { key, error }
    }

    /// The ack body, fields in the documented order: `ok`, `key`, then `id` and `dup`
    /// or `error`.
    pub fn to_json(&self) -> String {
        #[derive(serde::Serialize)]
        struct Body<'a> {
            ok: bool,
            key: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            id: Option<String>,
            #[serde(skip_serializing_if = "std::ops::Not::not")]
            dup: bool,
            #[serde(skip_serializing_if = "Option::is_none")]
            error: Option<&'a str>,
        }
        let body = match self {
            Ack::Stored { key, id, dup } => Body {
                ok: true,
                key: Some(key),
                id: Some(id.to_string()),
                dup: *dup,
                error: None,
            },
            Ack::Error { key, error } => Body {
                ok: false,
                key: key.as_deref(),
                id: None,
                dup: false,
                error: Some(error),
            },
        };
        serde_json::to_string(&body)
            .unwrap_or_else(|_| r#"{"ok":false,"key":null,"error":"ack"}"#.into())
    }
}

fn encode_ack(port: &PortConfig, ack: &Ack, out: &mut Vec<u8>) {
    let text = ack.to_json();
    let body = port.encoding.encode(&text);
    if let Err(e) = port.framing().encode(&body, out) {
        // Only an ascii-len header too short for a long error text gets here.
        let short = Ack::error(None, e.to_string()).to_json();
        let _ = port.framing().encode(short.as_bytes(), out);
    }
}

/// Route the good messages (off the runtime), store them in one group commit, and
/// return one ack per parsed frame, in order.
async fn store_messages(ctx: &PortContext, parsed: Vec<Result<Message, Refusal>>) -> Vec<Ack> {
    let Some(route) = ctx.route.read().map(|r| r.clone()).ok() else {
        return parsed
            .into_iter()
            .map(|p| {
                Ack::error(
                    p.ok().map(|m| m.unique_key),
                    "route script unavailable".into(),
                )
            })
            .collect();
    };
    let answered = store_parsed(
        &ctx.committer,
        &ctx.engine,
        &route,
        &ctx.config.name,
        ctx.fence.as_ref().map(|f| &f.fence),
        parsed,
    )
    .await;
    if let Some(error) = answered.unstored {
        ctx.live.note_error(error);
    }
    if answered.fenced
        && let Some(f) = &ctx.fence
    {
        ctx.live
            .note_error("this node lost the port's lease; another node runs it".into());
        f.lost.cancel();
    }
    answered.acks
}

/// The answers to a batch of messages.
pub struct Answered {
    /// One per message, in order.
    pub acks: Vec<Ack>,
    /// Why nothing was stored, when the write itself failed (Redis down, …).
    pub unstored: Option<String>,
    /// The fence refused the records: another node holds the port now.
    pub fenced: bool,
}

/// Route, store and answer checked messages for `source` (a port, or `api:<key>`):
/// the one path every message takes into Redis. Records metrics on the way.
pub async fn store_parsed(
    committer: &Committer,
    engine: &Arc<RouteEngine>,
    route: &CompiledRoute,
    source: &str,
    fence: Option<&Fence>,
    parsed: Vec<Result<Message, Refusal>>,
) -> Answered {
    let m = metrics();
    // The messages go to routing; each answer needs only its key (or its refusal).
    let mut messages = Vec::new();
    let parsed: Vec<Result<String, Refusal>> = parsed
        .into_iter()
        .map(|p| {
            p.map(|message| {
                let key = message.unique_key.clone();
                messages.push(message);
                key
            })
        })
        .collect();
    let records = if messages.is_empty() {
        Ok(Vec::new())
    } else {
        let engine = engine.clone();
        let route = route.clone();
        let port = source.to_owned();
        tokio::task::spawn_blocking(move || {
            messages
                .into_iter()
                .map(|m| route_message(&engine, &route, &port, m).compacted())
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| format!("routing task failed: {e}"))
    };
    let stored = match records {
        Ok(records) if records.is_empty() => Ok(Vec::new()),
        Ok(records) => {
            // Counted per batch, not per frame: a label lookup costs more than a frame.
            let mut by_status: Vec<(&'static str, u64)> = Vec::new();
            for r in &records {
                match by_status.iter_mut().find(|(s, _)| *s == r.status.as_str()) {
                    Some((_, n)) => *n += 1,
                    None => by_status.push((r.status.as_str(), 1)),
                }
            }
            for (status, n) in by_status {
                m.decisions
                    .get_or_create(&labels(&[("port", source), ("status", status)]))
                    .inc_by(n);
            }
            committer
                .commit(records, fence.cloned())
                .await
                .map_err(|e| format!("not stored, send again: {e}"))
        }
        Err(e) => Err(e),
    };
    let unstored = stored.as_ref().err().cloned();
    let mut stored = stored.map(Vec::into_iter);
    let (mut new, mut dups, mut fenced) = (0u64, 0u64, false);
    let mut rejects: Vec<&'static str> = Vec::new();
    let acks: Vec<Ack> = parsed
        .into_iter()
        .map(|p| match (p, &mut stored) {
            (Err(refusal), _) => {
                rejects.push(refusal.reason);
                Ack::error(refusal.key, refusal.error)
            }
            (Ok(key), Ok(results)) => match results.next() {
                Some(Stored::New { id }) => {
                    new += 1;
                    Ack::Stored {
                        key,
                        id,
                        dup: false,
                    }
                }
                Some(Stored::Duplicate { id }) => {
                    dups += 1;
                    Ack::Stored {
                        key,
                        id,
                        dup: true,
                    }
                }
                Some(Stored::Fenced) => {
                    fenced = true;
                    rejects.push("fenced");
                    Ack::error(
                        Some(key),
                        format!("not stored, send again: this node no longer holds port {source} (another node took it over)"),
                    )
                }
                None => {
                    rejects.push("store");
                    Ack::error(
                        Some(key),
                        "store returned too few results".into(),
                    )
                }
            },
            (Ok(key), Err(e)) => {
                rejects.push("store");
                Ack::error(Some(key), e.clone())
            }
        })
        .collect();
    let frames = |result: &str, n: u64| {
        if n > 0 {
            m.frames
                .get_or_create(&labels(&[("port", source), ("result", result)]))
                .inc_by(n);
        }
    };
    frames("stored", new);
    frames("duplicate", dups);
    frames("rejected", rejects.len() as u64);
    for reason in rejects {
        m.rejected
            .get_or_create(&labels(&[("port", source), ("reason", reason)]))
            .inc();
    }
    Answered {
        acks,
        unstored,
        fenced,
    }
}

/// Run the route script on one message and turn its decision into a record.
pub fn route_message(
    engine: &RouteEngine,
    route: &CompiledRoute,
    port: &str,
    message: Message,
) -> NewRecord {
    let now = now_ms();
    let mut record = NewRecord {
        unique_key: message.unique_key,
        port: port.to_owned(),
        received_at_ms: now,
        fields: Map::new(),
        status: Status::Received,
        due_ms: None,
        decision: None,
        error: None,
    };
    match engine.route(route, &message.fields, now) {
        Ok(decision) => {
            (record.status, record.due_ms) = match &decision {
                Decision::Send { .. } => (Status::Queued, Some(now)),
                Decision::Later { at_ms, .. } => (Status::Scheduled, Some(*at_ms)),
                Decision::Drop { .. } => (Status::Dropped, None),
            };
            record.decision = serde_json::to_value(&decision).ok();
        }
        Err(e) => {
            record.status = Status::ScriptError;
            record.error = Some(format!("{}:{e}", route.path));
        }
    }
    record.fields = message.fields;
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_follow_the_wire_contract_field_order() {
        let ok = Ack::Stored {
            key: "K1".into(),
            id: 42,
            dup: false,
        };
        assert_eq!(ok.to_json(), r#"{"ok":true,"key":"K1","id":"42"}"#);
        let dup = Ack::Stored {
            key: "K1".into(),
            id: 42,
            dup: true,
        };
        assert_eq!(
            dup.to_json(),
            r#"{"ok":true,"key":"K1","id":"42","dup":true}"#
        );
        let err = Ack::error(None, "frame is not valid JSON".into());
        assert_eq!(
            err.to_json(),
            r#"{"ok":false,"key":null,"error":"frame is not valid JSON"}"#
        );
    }

    fn port(extra: &str) -> PortConfig {
        let text = format!(
            "[[port]]\nname = \"p\"\naddr = \"127.0.0.1:0\"\nscript = \"s.rhai\"\n{extra}\n"
        );
        crate::config::Config::parse(&text, std::path::Path::new("t.toml"), ".".into())
            .expect("valid")
            .ports
            .remove(0)
    }

    #[test]
    fn message_checks_refuse_with_a_precise_reason_and_the_key_when_known() {
        let zone = chrono_tz::Asia::Seoul;
        let json = port("required = [\"device_id\"]");
        let cases: &[(&[u8], Option<&str>, &str)] = &[
            (b"{\"uniqueKey\": 5", None, "not valid JSON"),
            (b"\"text\"", None, "JSON a string but must be an object"),
            (b"{\"uniqueKey\": \"  \"}", None, "uniqueKey is missing or empty"),
            (b"{\"uniqueKey\": [1]}", None, "uniqueKey must be a string"),
            (b"{\"uniqueKey\": \"A\"}", Some("A"), "required field \"device_id\""),
            (b"{\"uniqueKey\": \"A\", \"device_id\": \"t\", \"result\": 1}", Some("A"), "\"result\" is reserved"),
            (b"{\"uniqueKey\": \"A\", \"device_id\": \"t\", \"sndn_rsev_hour\": \"20261399000000\"}", Some("A"), "sndn_rsev_hour"),
        ];
        for (body, key, why) in cases {
            let refusal = parse_message(&json, zone, body).expect_err(why);
            assert_eq!(refusal.key.as_deref(), *key, "{why}");
            assert!(refusal.error.contains(why), "{why}: {}", refusal.error);
        }
        let long = format!(
            "{{\"uniqueKey\": \"{}\", \"device_id\": \"t\"}}",
            "k".repeat(300)
        );
        assert!(
            parse_message(&json, zone, long.as_bytes())
                .unwrap_err()
                .error
                .contains("limit is 256")
        );
    }

    #[test]
    fn numeric_standard_fields_become_text_and_other_fields_are_kept() {
        let json = port("");
        let body = br#"{"uniqueKey": 12345, "csno": 77, "amount": 10000, "vip": true}"#;
        let m = parse_message(&json, chrono_tz::Asia::Seoul, body).expect("valid");
        assert_eq!(m.unique_key, "12345");
        assert_eq!(m.fields["csno"], "77");
        assert_eq!(m.fields["amount"], 10000);
        assert_eq!(m.fields["vip"], true);
    }

    #[test]
    fn keyed_fields_are_stored_trimmed_and_text_is_left_as_sent() {
        let json = port("");
        let body = br#"{"uniqueKey": " k1 ", "csno": " 123", "D_servicename": "TRF ", "msg_title": " hi "}"#;
        let m = parse_message(&json, chrono_tz::Asia::Seoul, body).expect("valid");
        assert_eq!(m.unique_key, "k1");
        // What retention reads back to remove index entries is what ingest indexed.
        assert_eq!(m.fields["uniqueKey"], "k1");
        assert_eq!(m.fields["csno"], "123");
        assert_eq!(m.fields["D_servicename"], "TRF");
        assert_eq!(m.fields["msg_title"], " hi ");
    }
}
