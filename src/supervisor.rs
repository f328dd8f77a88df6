//! Port lifecycle: start, stop, restart with backoff after a crash, and config reloads.
//!
//! Each port is one task running [`ingest::run_port`]. The supervisor keeps its
//! state (`stopped`, `starting`, `running`, `failed`), last error and restart
//! count, and applies a reload as a typed [`PortChanges`]: added ports start,
//! removed ones drain, changed ones restart, unchanged ones keep their connections
//! (only their compiled script may be swapped in place).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Mode, PortChanges, PortConfig};
use crate::ingest::{self, PortContext, PortFence, PortLive};
use crate::script::{CompileError, CompiledRoute, RouteEngine};
use crate::store::cluster::{Acquired, Wanted, holder_node};
use crate::store::{Committer, Store};

/// How long a stop waits for connections to finish their frames.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);
/// Stands in for a new port's script that did not compile; the port is not started
/// with it, and if an operator starts it anyway every record ends `script_error`.
const UNCOMPILED: &str =
    "fn route(msg) { throw \"this port's script did not compile; fix it and reload\" }";
const UNCOMPILED_PATH: &str = "<no compiled script>";
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortState {
    Stopped,
    Starting,
    Running,
    Failed,
    /// A connect-mode port waiting for its lease: another node runs it.
    Standby,
}

impl PortState {
    pub fn as_str(self) -> &'static str {
        match self {
            PortState::Stopped => "stopped",
            PortState::Starting => "starting",
            PortState::Running => "running",
            PortState::Failed => "failed",
            PortState::Standby => "standby",
        }
    }
}

/// This process among the nodes sharing one Redis.
pub struct Node {
    pub store: Store,
    /// Unique among the nodes (`[node] id`, default `{hostname}:{admin port}`).
    pub id: String,
    /// Unique to this process, so a restarted node can tell its own old lease.
    pub instance: String,
    pub lease: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("no port named {0:?}")]
    UnknownPort(String),
    #[error("{error} (port {port})")]
    Script { port: String, error: CompileError },
    #[error("port {0} has no compiled script; fix it and reload before starting the port")]
    NoScript(String),
    #[error("reading script {path}: {error}")]
    ReadScript { path: String, error: std::io::Error },
}

/// What `GET /api/v1/ports` shows of one port.
#[derive(Debug, Clone, Serialize)]
pub struct PortView {
    pub name: String,
    pub mode: crate::config::Mode,
    /// The configured address; in connect mode with `addrs`, the upstreams joined
    /// with ", " in the order they are dialled.
    pub addr: String,
    /// The address actually bound (listen) or connected to (connect).
    pub bound: Option<String>,
    /// Connect mode: the upstream (as configured) the port is connected to right now;
    /// None while it is not connected, and always in listen mode.
    pub connected: Option<String>,
    pub state: PortState,
    pub last_error: Option<String>,
    pub restarts: u32,
    /// Connect mode: the node holding the port's lease (this one when running).
    pub holder: Option<String>,
    /// Set when the script on disk does not compile; the port keeps the previous one.
    pub script_error: Option<String>,
    pub script: String,
    pub connections: usize,
    pub stored: u64,
    pub duplicates: u64,
    pub rejected: u64,
    /// Listen mode: connections refused at accept (`allow`, per-address cap, full)
    /// or closed without a first frame.
    pub refused: u64,
    pub last_frame_ms: Option<i64>,
}

/// The state machine of one port, shared with its task.
#[derive(Debug)]
struct Status {
    state: PortState,
    last_error: Option<String>,
    restarts: u32,
    holder: Option<String>,
    script_error: Option<String>,
}

struct Slot {
    config: PortConfig,
    status: Arc<Mutex<Status>>,
    route: Arc<RwLock<CompiledRoute>>,
    live: Arc<PortLive>,
    /// Present while the port's task runs.
    running: Option<Running>,
}

struct Running {
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

pub struct Supervisor {
    engine: Arc<RouteEngine>,
    committer: Committer,
    node: Arc<Node>,
    /// Handed to every port: the ad gate its pushes pass.
    ads: crate::ads::LiveGate,
    slots: tokio::sync::Mutex<BTreeMap<String, Slot>>,
    /// The `portctl` value of each port this node has already acted on.
    switches_seen: Mutex<HashMap<String, String>>,
}

/// Compile a port's script from disk.
pub fn compile_script(
    engine: &RouteEngine,
    config: &Config,
    port: &PortConfig,
) -> Result<CompiledRoute, SupervisorError> {
    let path = config.resolve(&port.script);
    let shown = path.display().to_string();
    let source = std::fs::read_to_string(&path).map_err(|error| SupervisorError::ReadScript {
        path: shown.clone(),
        error,
    })?;
    engine
        .compile(&shown, &source)
        .map_err(|error| SupervisorError::Script {
            port: port.name.clone(),
            error,
        })
}

impl Supervisor {
    pub fn new(
        engine: Arc<RouteEngine>,
        committer: Committer,
        node: Arc<Node>,
        ads: crate::ads::LiveGate,
    ) -> Supervisor {
        Supervisor {
            engine,
            committer,
            ads,
            node,
            slots: tokio::sync::Mutex::new(BTreeMap::new()),
            switches_seen: Mutex::new(Default::default()),
        }
    }

    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Add every port of `config` (scripts must compile) and start the ones to run:
    /// what an operator last asked of the port (on any node), else `autostart`.
    pub async fn install(&self, config: &Config) -> Result<(), SupervisorError> {
        let mut compiled = Vec::new();
        for port in &config.ports {
            compiled.push((port.clone(), compile_script(&self.engine, config, port)?));
        }
        let wanted = self.switches().await;
        let mut slots = self.slots.lock().await;
        for (port, route) in compiled {
            let run = self.should_run(&port, &wanted);
            let name = port.name.clone();
            slots.insert(name.clone(), self.new_slot(port, route));
            if run {
                self.start_slot(slots.get_mut(&name));
            }
        }
        Ok(())
    }

    /// Tell every node (through Redis) what an operator asked of a port. If Redis
    /// cannot take it, this node still acts and the others keep what they do.
    async fn publish_wanted(&self, name: &str, wanted: Wanted) {
        match self
            .node
            .store
            .set_wanted(name, wanted, &self.node.id)
            .await
        {
            Ok(value) => {
                self.saw_switch(name, &value);
            }
            Err(e) => {
                tracing::warn!(port = %name, error = %e, "cannot record the port switch in redis; other nodes will not follow it")
            }
        }
    }

    /// Remember a switch as acted on; false if it was already, or if a later one was
    /// (a read of `portctl` that raced this node's own switch must not undo it).
    fn saw_switch(&self, port: &str, value: &str) -> bool {
        /// `run 1732512345123 node-a` → 1732512345123.
        fn made_at(value: &str) -> i64 {
            value
                .split(' ')
                .nth(1)
                .and_then(|ms| ms.parse().ok())
                .unwrap_or(0)
        }
        let mut seen = self.switches_seen.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(last) = seen.get(port)
            && (last == value || made_at(last) >= made_at(value))
        {
            return false;
        }
        seen.insert(port.to_owned(), value.to_owned());
        true
    }

    /// What to do with a port at start or reload: what an operator last asked (on any
    /// node), else `autostart`. The switch counts as seen.
    fn should_run(&self, port: &PortConfig, wanted: &HashMap<String, (Wanted, String)>) -> bool {
        match wanted.get(&port.name) {
            Some((w, value)) => {
                self.saw_switch(&port.name, value);
                *w == Wanted::Run
            }
            None => port.autostart,
        }
    }

    /// Operators' switches as Redis has them, or none (with a warning) if it cannot say.
    async fn switches(&self) -> HashMap<String, (Wanted, String)> {
        self.node.store.wanted().await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the operators' port switches from redis; using autostart");
            HashMap::new()
        })
    }

    /// Apply each switch an operator made on another node, once (called every second).
    /// Acting on new switches only means a restart or reload here is never undone by
    /// an old switch, nor a switch here by one Redis did not get. Never waits on the
    /// port table (a drain may hold it) nor on a drain: stops run as tasks of their own.
    pub async fn follow_operators(self: &Arc<Self>) {
        let Ok(wanted) = self.node.store.wanted().await else {
            return;
        };
        let mut to_stop = Vec::new();
        {
            let Ok(mut slots) = self.slots.try_lock() else {
                return;
            };
            for (name, slot) in slots.iter_mut() {
                let Some((want, value)) = wanted.get(name) else {
                    continue;
                };
                if !self.saw_switch(name, value) {
                    continue;
                }
                match want {
                    Wanted::Run if slot.running.is_none() && startable(slot).is_ok() => {
                        tracing::info!(port = %name, "started, as an operator asked on another node");
                        lock(&slot.status).restarts = 0;
                        self.start_slot(Some(slot));
                    }
                    Wanted::Stop if slot.running.is_some() => to_stop.push(name.clone()),
                    _ => {}
                }
            }
        }
        for name in to_stop {
            tracing::info!(port = %name, "stopping, as an operator asked on another node");
            let this = self.clone();
            tokio::spawn(async move { this.stop_here(&name).await });
        }
    }

    fn new_slot(&self, config: PortConfig, route: CompiledRoute) -> Slot {
        Slot {
            config,
            status: Arc::new(Mutex::new(Status {
                state: PortState::Stopped,
                last_error: None,
                restarts: 0,
                holder: None,
                script_error: None,
            })),
            route: Arc::new(RwLock::new(route)),
            live: Arc::new(PortLive::default()),
            running: None,
        }
    }

    fn start_slot(&self, slot: Option<&mut Slot>) {
        let Some(slot) = slot else { return };
        if slot.running.is_some() {
            return;
        }
        let cancel = CancellationToken::new();
        let ctx = PortContext {
            config: slot.config.clone(),
            committer: self.committer.clone(),
            engine: self.engine.clone(),
            route: slot.route.clone(),
            live: slot.live.clone(),
            fence: None,
            ads: self.ads.clone(),
        };
        set_state(&slot.status, PortState::Starting, None);
        let task = tokio::spawn(keep_running(
            ctx,
            slot.status.clone(),
            cancel.clone(),
            self.node.clone(),
        ));
        slot.running = Some(Running { cancel, task });
    }

    /// Start a port here and on every other node (a connect-mode port runs where its
    /// lease is, and waits in standby elsewhere).
    pub async fn start(&self, name: &str) -> Result<PortView, SupervisorError> {
        let mut slots = self.slots.lock().await;
        let slot = slots
            .get_mut(name)
            .ok_or_else(|| SupervisorError::UnknownPort(name.to_owned()))?;
        if slot.running.is_none() {
            startable(slot)?;
            lock(&slot.status).restarts = 0;
        }
        self.publish_wanted(name, Wanted::Run).await;
        self.start_slot(Some(slot));
        Ok(view(slot))
    }

    /// Stop a port here and on every other node.
    pub async fn stop(&self, name: &str) -> Result<PortView, SupervisorError> {
        if self.slots.lock().await.contains_key(name) {
            self.publish_wanted(name, Wanted::Stop).await;
        }
        self.stop_here(name).await
    }

    /// Stop a port on this node. Its drain (up to DRAIN_LIMIT) runs without holding
    /// the port table, so the console and the API keep answering meanwhile.
    async fn stop_here(&self, name: &str) -> Result<PortView, SupervisorError> {
        let (running, status, live) = {
            let mut slots = self.slots.lock().await;
            let slot = slots
                .get_mut(name)
                .ok_or_else(|| SupervisorError::UnknownPort(name.to_owned()))?;
            (slot.running.take(), slot.status.clone(), slot.live.clone())
        };
        if let Some(running) = running {
            drain(name, running).await;
            mark_stopped(&status, &live);
        }
        self.port(name)
            .await
            .ok_or_else(|| SupervisorError::UnknownPort(name.to_owned()))
    }

    pub async fn restart(&self, name: &str) -> Result<PortView, SupervisorError> {
        let mut slots = self.slots.lock().await;
        let slot = slots
            .get_mut(name)
            .ok_or_else(|| SupervisorError::UnknownPort(name.to_owned()))?;
        startable(slot)?;
        stop_slot(slot).await;
        self.start_slot(Some(slot));
        Ok(view(slot))
    }

    /// The compiled route a port uses now (None if it has none that compiled).
    pub async fn route_of(&self, name: &str) -> Option<CompiledRoute> {
        let slots = self.slots.lock().await;
        let slot = slots.get(name)?;
        startable(slot).ok()?;
        slot.route.read().ok().map(|r| r.clone())
    }

    pub async fn ports(&self) -> Vec<PortView> {
        self.slots.lock().await.values().map(view).collect()
    }

    pub async fn port(&self, name: &str) -> Option<PortView> {
        self.slots.lock().await.get(name).map(view)
    }

    /// Apply a reloaded config. A script that does not compile keeps the old one
    /// and is reported on the port; a new port whose script fails is left stopped.
    pub async fn reload(&self, old: &Config, new: &Config) -> PortChanges {
        let changes = PortChanges::between(old, new);
        let wanted = self.switches().await;
        let mut slots = self.slots.lock().await;
        for name in &changes.removed {
            if let Some(mut slot) = slots.remove(name) {
                tracing::info!(port = %name, "reload: port removed, draining");
                stop_slot(&mut slot).await;
            }
        }
        for port in changes.changed.iter().chain(&changes.unchanged) {
            let Some(slot) = slots.get_mut(&port.name) else {
                continue;
            };
            let mut restart = slot.config != *port;
            match compile_script(&self.engine, new, port) {
                Ok(route) => {
                    // A port left stopped because its script never compiled starts now.
                    if startable(slot).is_err() && self.should_run(port, &wanted) {
                        restart = true;
                    }
                    if let Ok(mut current) = slot.route.write() {
                        *current = route;
                    }
                    lock(&slot.status).script_error = None;
                }
                Err(e) => {
                    tracing::error!(port = %port.name, error = %e, "reload: script does not compile; keeping the previous one");
                    lock(&slot.status).script_error = Some(e.to_string());
                }
            }
            if restart {
                tracing::info!(port = %port.name, "reload: port changed, restarting");
                let was_running = slot.running.is_some();
                stop_slot(slot).await;
                slot.config = port.clone();
                // Never run a port on the stand-in for a script that did not compile.
                if (was_running || self.should_run(port, &wanted)) && startable(slot).is_ok() {
                    self.start_slot(Some(slot));
                }
            }
        }
        for port in &changes.added {
            tracing::info!(port = %port.name, "reload: port added");
            match compile_script(&self.engine, new, port) {
                Ok(route) => {
                    slots.insert(port.name.clone(), self.new_slot(port.clone(), route));
                    if self.should_run(port, &wanted) {
                        self.start_slot(slots.get_mut(&port.name));
                    }
                }
                Err(e) => {
                    tracing::error!(port = %port.name, error = %e, "reload: new port's script does not compile; not started");
                    let Ok(placeholder) = self.engine.compile(UNCOMPILED_PATH, UNCOMPILED) else {
                        continue;
                    };
                    let slot = self.new_slot(port.clone(), placeholder);
                    {
                        let mut status = lock(&slot.status);
                        status.state = PortState::Failed;
                        status.script_error = Some(e.to_string());
                        status.last_error = Some(e.to_string());
                    }
                    slots.insert(port.name.clone(), slot);
                }
            }
        }
        changes
    }

    /// Recompile one port's script from disk and swap it in (the console's Save).
    /// A port that never had a compiled script starts now if it autostarts.
    pub async fn reload_script(&self, config: &Config, name: &str) -> Result<(), SupervisorError> {
        let mut slots = self.slots.lock().await;
        let slot = slots
            .get_mut(name)
            .ok_or_else(|| SupervisorError::UnknownPort(name.to_owned()))?;
        let route = match compile_script(&self.engine, config, &slot.config) {
            Ok(route) => route,
            Err(e) => {
                lock(&slot.status).script_error = Some(e.to_string());
                return Err(e);
            }
        };
        let was_uncompiled = startable(slot).is_err();
        if let Ok(mut current) = slot.route.write() {
            *current = route;
        }
        lock(&slot.status).script_error = None;
        if was_uncompiled && slot.config.autostart {
            self.start_slot(Some(slot));
        }
        Ok(())
    }

    /// Stop every port at once, letting each finish and ack what it received.
    pub async fn shutdown(&self) {
        let mut slots = self.slots.lock().await;
        for slot in slots.values() {
            if let Some(running) = &slot.running {
                running.cancel.cancel();
            }
        }
        for slot in slots.values_mut() {
            stop_slot(slot).await;
        }
    }
}

/// A port can run once it has a script that compiled.
fn startable(slot: &Slot) -> Result<(), SupervisorError> {
    if slot.route.read().is_ok_and(|r| r.path == UNCOMPILED_PATH) {
        return Err(SupervisorError::NoScript(slot.config.name.clone()));
    }
    Ok(())
}

async fn stop_slot(slot: &mut Slot) {
    if let Some(running) = slot.running.take() {
        drain(&slot.config.name, running).await;
        mark_stopped(&slot.status, &slot.live);
    }
}

/// Cancel a port task and wait (bounded) for it to finish what it received.
async fn drain(name: &str, running: Running) {
    running.cancel.cancel();
    let mut task = running.task;
    if tokio::time::timeout(DRAIN_LIMIT, &mut task).await.is_err() {
        tracing::warn!(port = %name, "did not drain within {DRAIN_LIMIT:?}; aborting");
        task.abort();
    }
}

fn mark_stopped(status: &Mutex<Status>, live: &PortLive) {
    set_state(status, PortState::Stopped, None);
    lock(status).holder = None;
    if let Ok(mut bound) = live.bound.lock() {
        *bound = None;
    }
    if let Ok(mut connected) = live.connected.lock() {
        *connected = None;
    }
}

/// Run the port; when it fails, mark it failed and start it again after a backoff.
/// A connect-mode port first waits (in standby) for its lease, and stops acting the
/// moment the lease is lost, then waits for it again.
async fn keep_running(
    mut ctx: PortContext,
    status: Arc<Mutex<Status>>,
    cancel: CancellationToken,
    node: Arc<Node>,
) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let mut renewer = None;
        let run_cancel = if ctx.config.mode == Mode::Connect {
            let Some((fence, asked_at)) =
                wait_for_lease(&ctx.config.name, &status, &node, &cancel).await
            else {
                return;
            };
            let lost = cancel.child_token();
            renewer = Some(tokio::spawn(keep_lease(
                node.clone(),
                ctx.config.name.clone(),
                fence.clone(),
                asked_at + node.lease,
                lost.clone(),
                status.clone(),
            )));
            ctx.fence = Some(PortFence {
                fence,
                lost: lost.clone(),
            });
            lost
        } else {
            cancel.clone()
        };
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let watch_ready = {
            let status = status.clone();
            async move {
                if ready_rx.await.is_ok() {
                    set_state(&status, PortState::Running, None);
                }
            }
        };
        let run = ingest::run_port(ctx.clone(), run_cancel.clone(), ready_tx);
        // Once cancelled (stopped, or the lease lost), the port gets DRAIN_LIMIT to
        // answer what it read; then its connections are dropped.
        let bounded = async {
            let mut run = std::pin::pin!(run);
            tokio::select! {
                result = &mut run => result,
                () = async {
                    run_cancel.cancelled().await;
                    tokio::time::sleep(DRAIN_LIMIT).await;
                } => {
                    tracing::warn!(port = %ctx.config.name, "did not drain within {DRAIN_LIMIT:?}; dropping its connections");
                    Ok(())
                }
            }
        };
        let (result, ()) = tokio::join!(bounded, watch_ready);
        if let Some(task) = renewer {
            task.abort();
            let _ = task.await;
        }
        let lost = run_cancel.is_cancelled() && !cancel.is_cancelled();
        if let Some(PortFence { fence, .. }) = ctx.fence.take() {
            // Given up early (see keep_lease), the lease may still be ours: hand it on.
            match node.store.release_port(&ctx.config.name, &fence).await {
                Ok(true) if !lost => lease_event(&ctx.config.name, "released"),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(port = %ctx.config.name, error = %e, "releasing the port lease; it expires by itself")
                }
            }
        }
        if cancel.is_cancelled() {
            return;
        }
        if lost {
            // The lease was lost (found by the renewer, or by a fenced write): back to
            // standby, without counting a failure.
            lease_event(&ctx.config.name, "lost");
            let mut s = lock(&status);
            s.state = PortState::Standby;
            s.holder = None;
            continue;
        }
        match result {
            Ok(()) => set_state(&status, PortState::Failed, Some("port task ended".into())),
            Err(e) => {
                tracing::error!(port = %ctx.config.name, error = %e, retry_in = ?backoff, "port failed");
                set_state(&status, PortState::Failed, Some(e.to_string()));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = cancel.cancelled() => return,
        }
        backoff = (backoff * 2).min(RESTART_BACKOFF_MAX);
        {
            let mut s = lock(&status);
            s.restarts += 1;
            s.state = PortState::Starting;
        }
    }
}

fn lease_event(port: &str, event: &str) {
    crate::metrics::metrics()
        .port_leases
        .get_or_create(&crate::metrics::labels(&[("port", port), ("event", event)]))
        .inc();
}

/// Try for the port's lease every tenth of the lease time until it is ours (None if
/// cancelled first). Meanwhile the port is in standby and shows who holds it.
async fn wait_for_lease(
    port: &str,
    status: &Mutex<Status>,
    node: &Node,
    cancel: &CancellationToken,
) -> Option<(crate::store::Fence, tokio::time::Instant)> {
    let ttl = node.lease.as_millis() as u64;
    loop {
        let asked_at = tokio::time::Instant::now();
        match node
            .store
            .acquire_port(port, &node.id, &node.instance, ttl)
            .await
        {
            Ok(Acquired::Ours(fence)) => {
                tracing::info!(port, token = %fence.token, "took the port's lease");
                lease_event(port, "acquired");
                let mut s = lock(status);
                s.holder = Some(node.id.clone());
                return Some((fence, asked_at));
            }
            Ok(Acquired::Held(holder)) => {
                let mut s = lock(status);
                s.state = PortState::Standby;
                s.holder = Some(holder_node(&holder).to_owned());
            }
            Err(e) => {
                let mut s = lock(status);
                s.state = PortState::Standby;
                s.holder = None;
                s.last_error = Some(format!("cannot take the port's lease: {e}"));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(node.lease / 10) => {}
            _ = cancel.cancelled() => return None,
        }
    }
}

/// Renew the lease every third of its time until `lost` is cancelled. Give up (say
/// why on the port, cancel `lost`) once another node holds it, or once it may have run
/// out without a renewal getting through (Redis unreachable or slow): from then on
/// another node may run the port, so this one must not. `valid_until` counts from
/// when the acquire (then each renewal) was sent, so it is never later than Redis's.
async fn keep_lease(
    node: Arc<Node>,
    port: String,
    fence: crate::store::Fence,
    mut valid_until: tokio::time::Instant,
    lost: CancellationToken,
    status: Arc<Mutex<Status>>,
) {
    let ttl = node.lease.as_millis() as u64;
    let margin = node.lease / 5;
    let ran_out = "could not renew the port's lease before it ran out";
    let why = loop {
        let give_up = valid_until - margin;
        tokio::select! {
            _ = tokio::time::sleep(node.lease / 3) => {}
            _ = tokio::time::sleep_until(give_up) => break ran_out.to_owned(),
            _ = lost.cancelled() => return,
        }
        let sent_at = tokio::time::Instant::now();
        match tokio::time::timeout_at(give_up, node.store.renew_port(&port, &fence, ttl)).await {
            Ok(Ok(true)) => valid_until = sent_at + node.lease,
            Ok(Ok(false)) => break "another node holds the port's lease now".to_owned(),
            Ok(Err(e)) => {
                tracing::warn!(port = %port, error = %e, "renewing the port's lease; trying again")
            }
            Err(_) => break format!("{ran_out}: redis did not answer"),
        }
    };
    tracing::warn!(port = %port, "{why}; this node stops acting on the port");
    lock(&status).last_error = Some(why);
    lost.cancel();
}

fn lock(status: &Mutex<Status>) -> std::sync::MutexGuard<'_, Status> {
    status
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn set_state(status: &Mutex<Status>, state: PortState, error: Option<String>) {
    let mut s = lock(status);
    s.state = state;
    if error.is_some() {
        s.last_error = error;
    }
}

fn view(slot: &Slot) -> PortView {
    let status = lock(&slot.status);
    let live = &slot.live;
    let last_frame = live.last_frame_ms.load(Ordering::Relaxed);
    let port_error = live.last_error.lock().ok().and_then(|e| e.clone());
    PortView {
        name: slot.config.name.clone(),
        mode: slot.config.mode,
        addr: slot.config.addresses_text(),
        bound: live
            .bound
            .lock()
            .ok()
            .and_then(|b| b.map(|a| a.to_string())),
        connected: live.connected.lock().ok().and_then(|c| c.clone()),
        state: status.state,
        last_error: status.last_error.clone().or(port_error),
        restarts: status.restarts,
        holder: status.holder.clone(),
        script_error: status.script_error.clone(),
        script: slot.config.script.display().to_string(),
        connections: live.connections.load(Ordering::Relaxed),
        stored: live.stored.load(Ordering::Relaxed),
        duplicates: live.duplicates.load(Ordering::Relaxed),
        rejected: live.rejected.load(Ordering::Relaxed),
        refused: live.refused.load(Ordering::Relaxed),
        last_frame_ms: (last_frame > 0).then_some(last_frame),
    }
}

/// A node's heartbeat lives this long without a renewal: longer than a port's drain
/// (which holds up the heartbeat), so a node restarting a port does not look gone.
const HEARTBEAT_TTL_MS: u64 = 15_000;

/// What the console shows of one node, from its heartbeat.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct NodeBeat {
    pub id: String,
    pub console: String,
    pub started_ms: i64,
    pub version: String,
    pub ports: Vec<NodePort>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct NodePort {
    pub name: String,
    pub state: PortState,
}

impl Supervisor {
    /// Every second until `cancel`: publish this node's heartbeat (its ports and their
    /// states) and apply what operators asked of the ports on other nodes.
    pub async fn node_loop(self: Arc<Self>, console: String, cancel: CancellationToken) {
        let started_ms = crate::clock::now_ms();
        let mut ports: Vec<NodePort> = Vec::new();
        loop {
            // A reload or restart may hold the port table through drains; the heartbeat
            // goes on meanwhile with the states last read (a draining port still counts
            // as running, which is what flush must see).
            if let Ok(slots) = self.slots.try_lock() {
                ports = slots
                    .values()
                    .map(|slot| NodePort {
                        name: slot.config.name.clone(),
                        state: lock(&slot.status).state,
                    })
                    .collect();
            }
            let beat = NodeBeat {
                id: self.node.id.clone(),
                console: console.clone(),
                started_ms,
                version: env!("CARGO_PKG_VERSION").to_owned(),
                ports: ports.clone(),
            };
            let body = serde_json::to_string(&beat).unwrap_or_default();
            if let Err(e) = self
                .node
                .store
                .heartbeat(&self.node.id, &body, HEARTBEAT_TTL_MS)
                .await
            {
                tracing::debug!(error = %e, "node heartbeat");
            }
            self.follow_operators().await;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = cancel.cancelled() => return,
            }
        }
    }
}
