//! The running apps: one [`Sender`] (with its credentials and token refresher) per
//! `[[app]]` or `[fcm]`, started at boot and added, changed or removed by a reload. A
//! removed or changed app stops claiming; its in-flight sends finish and their outcomes
//! are written (or, past 30 s, their leases return them to the queue) before a changed
//! one starts again with its new settings. Ingest's "records stored" signal wakes every
//! app's sender.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Client, Policy, Sender};
use crate::apns::{ApnsClient, ApnsSettings, ProviderKey};
use crate::config::{AppConfig, Config, Provider};
use crate::fcm::{self, ClientSettings, Credentials, FcmClient, ServiceAccount};
use crate::store::Store;

/// How long a stopping app's in-flight sends may take before they are left to their leases.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// One app's running sender.
struct Running {
    config: AppConfig,
    sender: Arc<Sender>,
    /// Woken when ingest stored records.
    wake: Arc<Notify>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    refresher: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn stop(self) {
        self.cancel.cancel();
        let mut task = self.task;
        if tokio::time::timeout(STOP_GRACE, &mut task).await.is_err() {
            tracing::warn!(
                app = %self.config.name,
                "sender did not finish within 30 s (Redis unreachable?); unwritten outcomes will be re-sent after their leases expire"
            );
            task.abort();
        }
        let _ = self.refresher.await;
    }
}

/// What a reload did to the apps.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AppChanges {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    /// Apps that could not start (their key file, say), with why.
    pub failed: Vec<(String, String)>,
}

pub struct Apps {
    store: Store,
    /// Where outcomes are written (waits for `ack_replicas`), shared by every app.
    outcomes: Store,
    zone: chrono_tz::Tz,
    running: RwLock<BTreeMap<String, Running>>,
    /// One change at a time.
    changing: tokio::sync::Mutex<()>,
    dry_run_ports: RwLock<Vec<String>>,
    cancel: CancellationToken,
    /// The ad gate every sender applies again to an ad when it comes due.
    ads: crate::ads::LiveGate,
}

impl Apps {
    /// Start every app of `config`; `stored` is ingest's signal that records were queued.
    pub async fn start(
        config: &Config,
        store: Store,
        stored: Arc<Notify>,
        ads: crate::ads::LiveGate,
    ) -> anyhow::Result<Arc<Apps>> {
        let outcomes = store.dedicated(
            config.redis.ack_replicas,
            config.redis.ack_replicas_timeout_ms,
        )?;
        if let Err(e) = store.adopt_legacy_queue().await {
            tracing::warn!(error = %e, "moving the first stage's `due` queue into the default app's");
        }
        let apps = Arc::new(Apps {
            store,
            outcomes,
            zone: config.zone(),
            running: RwLock::new(BTreeMap::new()),
            changing: tokio::sync::Mutex::new(()),
            dry_run_ports: RwLock::new(dry_run_ports(config)),
            cancel: CancellationToken::new(),
            ads,
        });
        for app in config.apps() {
            let running = apps.launch(config, app)?;
            apps.insert(running);
        }
        if config.apps().next().is_none() {
            tracing::warn!("no app ([fcm] or [[app]]): records are stored and routed but not sent");
        }
        tokio::spawn(fan_out(apps.clone(), stored));
        Ok(apps)
    }

    fn insert(&self, running: Running) {
        if let Ok(mut map) = self.running.write() {
            map.insert(running.config.name.clone(), running);
        }
    }

    fn launch(&self, config: &Config, app: &AppConfig) -> anyhow::Result<Running> {
        let client = client_for(config, app)?;
        let wake = Arc::new(Notify::new());
        let sender = Sender::new(
            self.store.clone(),
            self.outcomes.clone(),
            client,
            Policy::from_config(app),
            self.zone,
            wake.clone(),
            self.ads.clone(),
        );
        if let Ok(ports) = self.dry_run_ports.read() {
            sender.set_dry_run_ports(ports.iter().cloned());
        }
        let cancel = self.cancel.child_token();
        let refresher = sender.client().keep_fresh(cancel.clone());
        let task = tokio::spawn(sender.clone().run(cancel.clone()));
        tracing::info!(app = %app.name, provider = app.provider.as_str(), endpoint = %app.endpoint(), rate = ?app.rate, "sender started");
        Ok(Running {
            config: app.clone(),
            sender,
            wake,
            cancel,
            task,
            refresher,
        })
    }

    /// The running senders, by app name.
    pub fn senders(&self) -> Vec<Arc<Sender>> {
        self.running
            .read()
            .map(|m| m.values().map(|r| r.sender.clone()).collect())
            .unwrap_or_default()
    }

    pub fn sender(&self, app: &str) -> Option<Arc<Sender>> {
        self.running
            .read()
            .ok()
            .and_then(|m| m.get(app).map(|r| r.sender.clone()))
    }

    /// Bring the running apps to `config`'s: start new ones, stop removed ones, restart
    /// changed ones. An app that cannot start is reported and the others still change.
    pub async fn apply(&self, config: &Config) -> AppChanges {
        let _one_at_a_time = self.changing.lock().await;
        let ports = dry_run_ports(config);
        if let Ok(mut slot) = self.dry_run_ports.write() {
            *slot = ports.clone();
        }
        let mut changes = AppChanges::default();
        let wanted: BTreeMap<&str, &AppConfig> =
            config.apps().map(|a| (a.name.as_str(), a)).collect();
        let mut stopping = Vec::new();
        if let Ok(mut map) = self.running.write() {
            let names: Vec<String> = map.keys().cloned().collect();
            for name in names {
                match wanted.get(name.as_str()) {
                    None => changes.removed.push(name.clone()),
                    Some(app) if **app != map[&name].config => changes.changed.push(name.clone()),
                    Some(_) => {
                        map[&name].sender.set_dry_run_ports(ports.iter().cloned());
                        continue;
                    }
                }
                if let Some(running) = map.remove(&name) {
                    stopping.push(running);
                }
            }
        }
        for running in &stopping {
            tracing::info!(app = %running.config.name, "reload: stopping the app's sender");
            running.cancel.cancel();
        }
        for running in stopping {
            running.stop().await;
        }
        for (name, app) in wanted {
            if self.sender(name).is_some() {
                continue;
            }
            match self.launch(config, app) {
                Ok(running) => {
                    self.insert(running);
                    if !changes.changed.iter().any(|c| c == name) {
                        changes.added.push(name.to_owned());
                    }
                }
                Err(e) => {
                    tracing::error!(app = %name, error = %format!("{e:#}"), "reload: the app cannot start");
                    changes.changed.retain(|c| c != name);
                    changes.failed.push((name.to_owned(), format!("{e:#}")));
                }
            }
        }
        changes
    }

    /// Stop every app: in-flight sends finish and their outcomes are written.
    pub async fn stop(&self) {
        let _one_at_a_time = self.changing.lock().await;
        let all: Vec<Running> = match self.running.write() {
            Ok(mut map) => std::mem::take(&mut *map).into_values().collect(),
            Err(_) => Vec::new(),
        };
        // Every app stops claiming at once; then each is awaited.
        for running in &all {
            running.cancel.cancel();
        }
        for running in all {
            running.stop().await;
        }
        self.cancel.cancel();
    }
}

/// Every app's sender is woken when ingest stored records.
async fn fan_out(apps: Arc<Apps>, stored: Arc<Notify>) {
    loop {
        tokio::select! {
            _ = stored.notified() => {}
            _ = apps.cancel.cancelled() => return,
        }
        if let Ok(map) = apps.running.read() {
            for running in map.values() {
                running.wake.notify_one();
            }
        }
    }
}

/// The provider client an app's config describes: its key read, its HTTP client built
/// (pooled, HTTP/2, through `proxy`, trusting `ca_file`).
pub fn client_for(config: &Config, app: &AppConfig) -> anyhow::Result<Client> {
    let http = fcm::http_client(&ClientSettings {
        endpoint: app.endpoint().to_owned(),
        connect_timeout: Duration::from_millis(app.connect_timeout_ms),
        request_timeout: Duration::from_millis(app.request_timeout_ms),
        proxy: app.proxy.clone(),
        ca_file: app.ca_file.as_deref().map(|p| config.resolve(p)),
    })?;
    let missing = |key: &str| anyhow::anyhow!("app {:?} has no {key}", app.name);
    Ok(match app.provider {
        Provider::Fcm => {
            let path = app
                .service_account
                .as_deref()
                .ok_or_else(|| missing("service_account"))?;
            let account = ServiceAccount::load(&config.resolve(path))?;
            let credentials = Arc::new(Credentials::new(account, http.clone()));
            Client::Fcm(Arc::new(FcmClient::new(http, app.endpoint(), credentials)))
        }
        Provider::Apns => {
            let path = app.key_file.as_deref().ok_or_else(|| missing("key_file"))?;
            let key = ProviderKey::load(&config.resolve(path))?;
            let settings = ApnsSettings {
                endpoint: app.endpoint().to_owned(),
                topic: app.topic.clone().ok_or_else(|| missing("topic"))?,
                key_id: app.key_id.clone().ok_or_else(|| missing("key_id"))?,
                team_id: app.team_id.clone().ok_or_else(|| missing("team_id"))?,
                token_refresh: Duration::from_secs(app.token_refresh_secs),
            };
            Client::Apns(Arc::new(ApnsClient::new(http, settings, key)))
        }
    })
}

fn dry_run_ports(config: &Config) -> Vec<String> {
    config
        .ports
        .iter()
        .filter(|p| p.dry_run)
        .map(|p| p.name.clone())
        .collect()
}
