//! The connection to the Redis master: a fixed address, or whichever master Sentinel
//! names now. Behind Sentinel, the link asks again every [`WATCH_EVERY`] and after a
//! failed command (at most every [`LOOKUP_EVERY`], in the background, never on the
//! command's own time), and once Sentinel names a new master, later commands go there.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use redis::IntoConnectionInfo;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};

use super::StoreError;

const LOOKUP_EVERY: Duration = Duration::from_millis(200);
/// Asked even while commands succeed: a connection that reconnected by itself to an old
/// master restarted as a standalone master must not stay there.
const WATCH_EVERY: Duration = Duration::from_secs(1);
/// One Sentinel lookup (connect, ask, check the master's role) may take this long.
const LOOKUP_LIMIT: Duration = Duration::from_secs(2);

/// Where the master is.
#[derive(Debug, Clone, PartialEq)]
pub enum RedisTarget {
    Direct(String),
    /// Sentinel addresses, the master's name, and a URL whose password and db the
    /// master needs (its host is not used).
    Sentinel {
        sentinels: Vec<String>,
        master_name: String,
        url: String,
    },
}

pub(super) struct Link {
    target: RedisTarget,
    settings: ConnectionManagerConfig,
    /// The master's address (no password) and a connection to it.
    current: RwLock<Option<(String, ConnectionManager)>>,
    sentinel: Option<tokio::sync::Mutex<SentinelClient>>,
    /// When the last lookup ended.
    last_lookup: Mutex<Option<Instant>>,
    /// A background lookup is under way.
    looking: AtomicBool,
}

impl Link {
    pub(super) fn new(target: RedisTarget, timeout: Duration) -> Result<Link, StoreError> {
        let settings = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout.min(Duration::from_secs(1))))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let (current, sentinel) = match &target {
            RedisTarget::Direct(url) => {
                let client = redis::Client::open(url.as_str())?;
                let shown = client.get_connection_info().addr().to_string();
                let con = ConnectionManager::new_lazy_with_config(client, settings.clone())?;
                (Some((shown, con)), None)
            }
            RedisTarget::Sentinel {
                sentinels,
                master_name,
                url,
            } => {
                let info = url.as_str().into_connection_info()?;
                let node = SentinelNodeConnectionInfo::default()
                    .set_redis_connection_info(info.redis_settings().clone());
                let client = SentinelClient::build(
                    sentinels.clone(),
                    master_name.clone(),
                    Some(node),
                    SentinelServerType::Master,
                )?;
                (None, Some(tokio::sync::Mutex::new(client)))
            }
        };
        Ok(Link {
            target,
            settings,
            current: RwLock::new(current),
            sentinel,
            last_lookup: Mutex::new(None),
            looking: AtomicBool::new(false),
        })
    }

    /// A second, independent connection to the same place.
    pub(super) fn fresh(&self, timeout: Duration) -> Result<Link, StoreError> {
        Link::new(self.target.clone(), timeout)
    }

    pub(super) fn target(&self) -> &RedisTarget {
        &self.target
    }

    /// The master's address as last known (no password).
    pub(super) fn master(&self) -> Option<String> {
        self.current
            .read()
            .ok()
            .and_then(|c| c.as_ref().map(|(shown, _)| shown.clone()))
    }

    /// Behind Sentinel, ask it every [`WATCH_EVERY`] for as long as the link lives.
    pub(super) fn watch(self: &Arc<Self>) {
        if self.sentinel.is_none() || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let link: Weak<Link> = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(WATCH_EVERY).await;
                let Some(link) = link.upgrade() else { return };
                if let Err(e) = link.lookup().await {
                    tracing::debug!(error = %e, "asking Sentinel for the master");
                }
            }
        });
    }

    /// A connection to the master, asking Sentinel first if none is known yet.
    pub(super) async fn connection(&self) -> Result<ConnectionManager, StoreError> {
        if let Some(con) = self.known() {
            return Ok(con);
        }
        self.lookup().await?;
        self.known().ok_or(StoreError::NoMaster)
    }

    pub(super) fn known(&self) -> Option<ConnectionManager> {
        self.current
            .read()
            .ok()
            .and_then(|c| c.as_ref().map(|(_, con)| con.clone()))
    }

    /// After a failed command: behind Sentinel, ask (in the background) where the
    /// master is now.
    pub(super) fn failed(self: &Arc<Self>) {
        // One background lookup at a time, however many commands fail meanwhile.
        if self.sentinel.is_some() && !self.looking.swap(true, Ordering::AcqRel) {
            let link = self.clone();
            tokio::spawn(async move {
                if let Err(e) = link.lookup().await {
                    tracing::debug!(error = %e, "asking Sentinel for the master");
                }
                link.looking.store(false, Ordering::Release);
            });
        }
    }

    /// Ask Sentinel for the master and switch to it if it moved. While a master is
    /// known, at most once every [`LOOKUP_EVERY`] after the previous lookup ended
    /// (callers meanwhile use what it found); while none is, every caller asks.
    async fn lookup(&self) -> Result<(), StoreError> {
        let Some(sentinel) = &self.sentinel else {
            return Ok(());
        };
        let mut sentinel = sentinel.lock().await;
        let recent = self
            .last_lookup
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|at| at.elapsed() < LOOKUP_EVERY);
        if recent && self.known().is_some() {
            return Ok(());
        }
        let asked = tokio::time::timeout(LOOKUP_LIMIT, sentinel.async_get_client()).await;
        *self.last_lookup.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        let client = asked.map_err(|_| StoreError::Timeout(LOOKUP_LIMIT))??;
        let shown = client.get_connection_info().addr().to_string();
        if self.master().as_deref() == Some(shown.as_str()) {
            return Ok(());
        }
        let con = ConnectionManager::new_lazy_with_config(client, self.settings.clone())?;
        match self.master() {
            Some(old) => {
                tracing::warn!(master = %shown, %old, "Sentinel names a new Redis master; switching to it");
                crate::metrics::metrics().master_switches.inc();
            }
            None => tracing::info!(master = %shown, "Sentinel names the Redis master"),
        }
        if let Ok(mut current) = self.current.write() {
            *current = Some((shown, con));
        }
        Ok(())
    }
}
