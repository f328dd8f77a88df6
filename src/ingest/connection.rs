//! One port's connections: listen (accept, allow list, caps), connect (dial the
//! upstreams with failover and backoff), serve a connection (read frames, first-frame
//! and idle timeouts, write acks in order) and drain it when the port stops.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::ack::{Ack, encode_ack};
use super::admission::{AllowList, PeerRefusal, Slots};
use super::frame;
use super::message::{Message, Refusal, parse_message};
use super::pipeline::store_parsed;
use super::{IngestError, PortContext};
use crate::clock::now_ms;
use crate::metrics::{labels, metrics};

/// How long writing acks to a peer may take before the connection is dropped.
const ACK_WRITE_LIMIT: Duration = Duration::from_secs(30);
/// A stopping connection takes what its peer sent until the socket is quiet this long…
const DRAIN_POLL: Duration = Duration::from_millis(20);
/// … and for no longer than this in all, so one connection never holds up its port's
/// stop (the supervisor bounds the whole port's stop, far longer).
const CONNECTION_DRAIN: Duration = Duration::from_millis(250);

pub(super) async fn listen(
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
/// it, at most once per [`super::admission::LOG_EVERY`] per reason.
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
pub(super) async fn connect(ctx: PortContext, cancel: CancellationToken) {
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
/// for at most [`CONNECTION_DRAIN`] and `limit` bytes (a peer that keeps sending must not
/// hold a stop up). Readiness is polled rather than assumed: after the process was
/// stopped or busy, the kernel may hold bytes the runtime has not been told about, and
/// `try_read` alone would miss them.
async fn drain_available(stream: &TcpStream, buf: &mut Vec<u8>, limit: usize) {
    let mut chunk = [0u8; 16 * 1024];
    let until = tokio::time::Instant::now() + CONNECTION_DRAIN;
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
    let origin = super::Origin {
        source: ctx.config.name.clone(),
        queue: ctx.config.queue(),
        kind: ctx.config.kind,
    };
    let answered = store_parsed(
        &ctx.committer,
        &ctx.engine,
        &route,
        &ctx.ads,
        &origin,
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
