//! Wiring: config → (managed) Redis → store writer → sender → script engine → supervisor → admin.
//! `serve` runs it until a signal; tests start it in-process and drive it directly.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, AdminState};
use crate::config::{Config, PortChanges};
use crate::script::{CompiledRoute, Limits, RouteEngine};
use crate::sender::{AppChanges, Apps};
use crate::signals::Signal;
use crate::store::bitmaps::Admission;
use crate::store::managed::ManagedRedis;
use crate::store::{Committer, RedisTarget, Store};
use crate::supervisor::{Node, Supervisor};

/// A running pushgate.
pub struct App {
    pub config_path: PathBuf,
    /// Held while a reload applies, so two SIGHUPs cannot interleave.
    reloading: tokio::sync::Mutex<()>,
    pub admin_addr: SocketAddr,
    pub store: Store,
    pub supervisor: Arc<Supervisor>,
    admin_state: Arc<AdminState>,
    admin_cancel: CancellationToken,
    admin_task: tokio::task::JoinHandle<()>,
    writer_task: tokio::task::JoinHandle<()>,
    node_task: tokio::task::JoinHandle<()>,
    apps: Arc<Apps>,
    /// The fallback rungs' senders and the receipt-timeout scan; replaced whole when a
    /// reload changes `[[fallback]]`.
    fallback: tokio::sync::Mutex<crate::fallback::RungSenders>,
    retention: tokio::task::JoinHandle<()>,
    managed: Option<ManagedRedis>,
}

/// Compile the route script of every ingest API key.
pub fn compile_api_routes(
    engine: &RouteEngine,
    config: &Config,
) -> anyhow::Result<HashMap<String, CompiledRoute>> {
    let mut routes = HashMap::new();
    for key in &config.api_keys {
        if let Some(script) = &key.script {
            let path = config.resolve(script);
            let shown = path.display().to_string();
            let source = std::fs::read_to_string(&path).with_context(|| {
                format!("reading the script of API key {:?}: {shown}", key.name)
            })?;
            let route = engine
                .compile(&shown, &source)
                .map_err(|e| anyhow::anyhow!("{e} (API key {:?})", key.name))?;
            routes.insert(key.name.clone(), route);
        }
    }
    Ok(routes)
}

/// Remove records past `retention_days` once a minute, in small batches.
async fn retention_loop(store: Store, retention_days: u64, cancel: CancellationToken) {
    if retention_days == 0 {
        return;
    }
    let keep_ms = (retention_days * 86_400_000) as i64;
    loop {
        let cutoff = crate::clock::now_ms() - keep_ms;
        match store.prune(cutoff, 500).await {
            Ok(p) if p.removed > 0 || p.held > 0 => {
                crate::metrics::metrics()
                    .retention_removed
                    .inc_by(p.removed);
                tracing::info!(
                    removed = p.removed,
                    held = p.held,
                    retention_days,
                    "retention removed old records"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "retention pass failed; retrying in a minute"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
            _ = cancel.cancelled() => return,
        }
    }
}

/// This machine's name, for the default node id.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

pub fn engine_for(config: &Config) -> RouteEngine {
    let limits = Limits {
        max_operations: config.script.max_operations,
        deadline: Duration::from_millis(config.script.deadline_ms),
        ..Limits::default()
    };
    let engine = RouteEngine::new(limits, config.zone());
    engine.set_apps(config.apps().map(|a| a.name.clone()));
    engine.set_rungs(config.fallbacks.iter().map(|r| r.name.clone()));
    engine
}

impl App {
    /// Start everything the config describes; fails if a script does not compile,
    /// the admin address cannot be bound, or a managed Redis does not come up.
    pub async fn start(config: Config, config_path: &Path) -> anyhow::Result<App> {
        let managed = if config.redis.managed {
            let dir = config.resolve(config.redis.dir.as_deref().unwrap_or(Path::new("redis")));
            Some(
                ManagedRedis::start(
                    &config.redis.server_bin,
                    &dir,
                    config.redis.managed_port,
                    config.redis.appendfsync,
                )
                .await?,
            )
        } else {
            None
        };
        let url = managed
            .as_ref()
            .map_or(config.redis.url.clone(), |m| m.url().to_owned());
        let target = if config.redis.sentinels.is_empty() {
            RedisTarget::Direct(url.clone())
        } else {
            RedisTarget::Sentinel {
                sentinels: config.redis.sentinels.clone(),
                master_name: config.redis.master_name.clone().unwrap_or_default(),
                url: url.clone(),
            }
        };
        let shown = match &target {
            RedisTarget::Direct(url) => crate::config::redact(url),
            RedisTarget::Sentinel { master_name, .. } => {
                format!("master {master_name:?} via Sentinel")
            }
        };
        let store = Store::open_target(
            target,
            &config.redis.prefix,
            Duration::from_millis(config.redis.timeout_ms),
            config.store.stats_ttl_hours * 3600,
        )
        .with_context(|| format!("opening redis at {shown}"))?
        .with_admission(Admission::from_config(&config.store));
        if let Err(e) = store.ping().await {
            // Not fatal: ports answer with error acks until Redis is back.
            tracing::error!(redis = %shown, error = %e, "redis is not reachable yet");
        }
        let stored = Arc::new(Notify::new());
        // The writer has a connection of its own: its WAITs must not hold up others.
        let writer_store = store.dedicated(
            config.redis.ack_replicas,
            config.redis.ack_replicas_timeout_ms,
        )?;
        let (committer, writer_task) = Committer::spawn(
            writer_store,
            config.store.max_batch,
            config.redis.commit_retry(),
            stored.clone(),
        );
        let ads = crate::ads::LiveGate::new(&config, store.clone());
        let apps = Apps::start(&config, store.clone(), stored, ads.clone()).await?;
        let fallback = crate::fallback::RungSenders::start(
            store.clone(),
            &config.fallbacks,
            &config.base_dir,
            config
                .receipts
                .as_ref()
                .map(|r| Duration::from_secs(r.timeout_secs)),
        )
        .map_err(|e| anyhow::anyhow!(e))?;
        let engine = Arc::new(engine_for(&config));
        let listener = tokio::net::TcpListener::bind(config.admin.listen)
            .await
            .with_context(|| format!("binding the admin listener {}", config.admin.listen))?;
        let admin_addr = listener.local_addr()?;
        let tls = admin::tls::acceptor(&config)?;
        let node = Arc::new(Node {
            store: store.clone(),
            id: config
                .node
                .id
                .clone()
                .unwrap_or_else(|| format!("{}:{}", hostname(), admin_addr.port())),
            instance: format!("{:08x}", rand::random::<u32>()),
            lease: Duration::from_millis(config.node.port_lease_ms),
        });
        tracing::info!(node = %node.id, instance = %node.instance, "this node");
        let supervisor = Arc::new(Supervisor::new(
            engine.clone(),
            committer.clone(),
            node,
            ads.clone(),
        ));
        let api_routes = compile_api_routes(&engine, &config)?;
        supervisor.install(&config).await?;
        tracing::info!(%admin_addr, "admin API listening");
        let admin_cancel = CancellationToken::new();
        let admin_state = Arc::new(AdminState {
            supervisor: supervisor.clone(),
            store: store.clone(),
            engine,
            config: RwLock::new(Arc::new(config.clone())),
            shutdown: admin_cancel.clone(),
            admin_addr,
            apps: apps.clone(),
            committer,
            script_saves: tokio::sync::Mutex::new(()),
            flushing: std::sync::atomic::AtomicBool::new(false),
            api_routes: RwLock::new(api_routes),
            limits: admin::Limits::new(&config),
            ads,
            tls,
        });
        let retention = tokio::spawn(retention_loop(
            store.clone(),
            config.store.retention_days,
            admin_cancel.clone(),
        ));
        let node_task = tokio::spawn(
            supervisor
                .clone()
                .node_loop(admin_addr.to_string(), admin_cancel.clone()),
        );
        let admin_task = tokio::spawn(admin::serve(
            listener,
            admin_state.clone(),
            admin_cancel.clone(),
        ));
        Ok(App {
            config_path: config_path.to_owned(),
            reloading: tokio::sync::Mutex::new(()),
            admin_addr,
            store,
            supervisor,
            admin_state,
            admin_cancel,
            admin_task,
            writer_task,
            node_task,
            apps,
            fallback: tokio::sync::Mutex::new(fallback),
            retention,
            managed,
        })
    }

    /// The running apps' senders.
    pub fn apps(&self) -> &Arc<Apps> {
        &self.apps
    }

    /// Receipts on (no receipt within `timeout` after `sent` starts a push's fallback
    /// ladder) or off: `[receipts] timeout_secs`, at start and on every reload.
    pub async fn set_receipt_timeout(&self, timeout: Option<Duration>) {
        self.fallback.lock().await.set_receipt_timeout(timeout);
    }

    /// The fallback rungs running now, in config order.
    pub async fn fallback_rungs(&self) -> Vec<String> {
        self.fallback.lock().await.names()
    }

    /// The config as currently running.
    pub fn config_snapshot(&self) -> Arc<Config> {
        self.admin_state.config()
    }

    /// Re-read the config file and scripts and apply the difference. A config that
    /// does not load changes nothing.
    pub async fn reload(&self) -> anyhow::Result<PortChanges> {
        let mut new = Config::load(&self.config_path)?;
        let _one_reload_at_a_time = self.reloading.lock().await;
        let current = self.admin_state.config();
        // The clock is not in the file: a test's shifted clock stays in force.
        new.clock = current.clock.clone();
        self.admin_state.ads.reload(&new);
        if new.redis != current.redis || new.admin != current.admin || new.store != current.store {
            tracing::warn!(
                "reload: [redis], [admin] and [store] changes take effect at the next restart"
            );
        }
        let apps = self.apps.apply(&new).await;
        if apps != AppChanges::default() {
            tracing::info!(added = ?apps.added, removed = ?apps.removed, changed = ?apps.changed, failed = ?apps.failed, "reload: apps");
        }
        self.admin_state
            .engine
            .set_apps(new.apps().map(|a| a.name.clone()));
        if new.fallbacks != current.fallbacks {
            self.reload_fallback(&new).await;
        }
        if new.receipts != current.receipts {
            self.set_receipt_timeout(
                new.receipts
                    .as_ref()
                    .map(|r| Duration::from_secs(r.timeout_secs)),
            )
            .await;
        }
        if new.script != current.script || new.zone != current.zone {
            tracing::warn!("reload: script limits and zone take effect at the next restart");
        }
        let changes = self.supervisor.reload(&current, &new).await;
        if let Ok(mut running) = self.admin_state.config.write() {
            *running = Arc::new(new.clone());
        }
        match compile_api_routes(&self.admin_state.engine, &new) {
            Ok(routes) => {
                if let Ok(mut slot) = self.admin_state.api_routes.write() {
                    *slot = routes;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "reload: an API key's script does not compile; keeping the previous ones")
            }
        }
        tracing::info!(
            added = changes.added.len(),
            removed = changes.removed.len(),
            changed = changes.changed.len(),
            unchanged = changes.unchanged.len(),
            "reloaded {}",
            self.config_path.display()
        );
        Ok(changes)
    }

    /// Start the new `[[fallback]]` rungs, then stop the old ones (their claims are
    /// leased, so both running for a moment sends nothing twice); the engine then
    /// accepts the new names. Rungs that do not start leave the old ones running.
    async fn reload_fallback(&self, new: &Config) {
        let mut running = self.fallback.lock().await;
        match crate::fallback::RungSenders::start(
            self.store.clone(),
            &new.fallbacks,
            &new.base_dir,
            running.receipt_timeout(),
        ) {
            Ok(fresh) => {
                let old = std::mem::replace(&mut *running, fresh);
                old.stop().await;
                self.admin_state
                    .engine
                    .set_rungs(new.fallbacks.iter().map(|r| r.name.clone()));
                tracing::info!(rungs = ?running.names(), "reload: fallback rungs");
            }
            Err(e) => {
                tracing::error!(error = %e, "reload: the new [[fallback]] rungs do not start; keeping the previous ones")
            }
        }
    }

    /// Stop accepting, let every port finish and ack what it received, then stop.
    pub async fn shutdown(self) {
        self.admin_cancel.cancel();
        let _ = self.node_task.await;
        self.supervisor.shutdown().await;
        // Every port has awaited its own commits, so the writer holds nothing now.
        self.writer_task.abort();
        self.retention.abort();
        self.apps.stop().await;
        self.fallback.into_inner().stop().await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.admin_task).await;
        if let Some(managed) = self.managed {
            managed.shutdown().await;
        }
        tracing::info!("stopped");
    }

    /// Serve until SIGTERM/SIGINT, reloading on SIGHUP.
    pub async fn run_until_signalled(self) -> anyhow::Result<()> {
        let mut signals = crate::signals::listen().context("installing signal handlers")?;
        while let Some(signal) = signals.recv().await {
            match signal {
                Signal::Reload => {
                    let result = self.reload().await;
                    let outcome = if result.is_ok() { "applied" } else { "failed" };
                    crate::metrics::metrics()
                        .reloads
                        .get_or_create(&crate::metrics::labels(&[("result", outcome)]))
                        .inc();
                    if let Err(e) = result {
                        tracing::error!(error = %format!("{e:#}"), "reload failed; keeping the running config");
                    }
                }
                Signal::Terminate => break,
            }
        }
        tracing::info!("draining");
        self.shutdown().await;
        Ok(())
    }
}
