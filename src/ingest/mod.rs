//! TCP ports: what a running port is, and the rooms its work happens in.
//!
//! One connection runs as: read → decode every complete frame → route them off the
//! async runtime → hand them to the group-commit writer → ack each frame in order.
//! An ack is written only after its record is in Redis. This module never talks to
//! Redis itself: it goes through [`Committer`](crate::store::Committer).
//!
//! - `mod.rs`: [`PortLive`], [`PortContext`], [`run_port`]: what a running port is.
//! - `connection.rs`: listen, connect (upstream failover), serve one connection, drain.
//! - `message.rs`: a frame body decoded into a [`Message`], and the checks it passes.
//! - `ack.rs`: the answer to one frame ([`Ack`]) and its bytes on the wire.
//! - `pipeline.rs`: route + group commit ([`store_parsed`]), shared by ports and
//!   `POST /api/v1/pushes`.
//! - [`admission`], [`charset`], [`fixed`], [`frame`]: who may connect, and the wire
//!   contract's bytes (character sets, fixed-width telegrams, framing).

pub mod admission;
pub mod charset;
pub mod fixed;
pub mod frame;

mod ack;
mod connection;
mod message;
mod pipeline;

pub use ack::Ack;
pub use message::{
    MAX_UNIQUE_KEY_BYTES, Message, Refusal, check_message, json_kind, parse_message,
};
pub use pipeline::{Answered, Origin, decide, route_message, store_parsed};

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, RwLock};

use tokio_util::sync::CancellationToken;

use crate::config::{Mode, PortConfig};
use crate::script::{CompiledRoute, RouteEngine};
use crate::store::{Committer, Fence};
use admission::RefusalLog;

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
    /// The ad gate its pushes pass (and the consents it reads).
    pub ads: crate::ads::LiveGate,
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
        Mode::Listen => connection::listen(ctx, cancel, ready).await,
        Mode::Connect => {
            let _ = ready.send(());
            connection::connect(ctx, cancel).await;
            Ok(())
        }
    }
}
