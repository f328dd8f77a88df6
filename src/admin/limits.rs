//! What one caller can hold on the admin listener, bounded: connections (in all and per
//! address), password checks running at once, live event streams per session, and how
//! often `/readyz` may write to Redis. Each slot is a guard that gives itself back on
//! drop, so no path can leak one.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Config;

/// How long one `/readyz` answer about Redis is reused, so a flood of probes makes at
/// most one write a second.
const READY_FOR: Duration = Duration::from_secs(1);

pub struct Limits {
    /// Open admin connections: in all, and per peer address.
    connections: Arc<Mutex<Counts<IpAddr>>>,
    /// Open event streams per session token.
    streams: Arc<Mutex<Counts<String>>>,
    /// Password checks running at once (argon2id takes 19 MiB each).
    password_checks: Arc<Semaphore>,
    /// The last `/readyz` look at Redis; the lock also makes concurrent probes share one.
    ready: tokio::sync::Mutex<Option<(Instant, Result<(), String>)>>,
}

/// Counts by key, and their sum.
struct Counts<K> {
    by_key: HashMap<K, usize>,
    total: usize,
}

impl<K: std::hash::Hash + Eq + Clone> Counts<K> {
    fn new() -> Self {
        Counts {
            by_key: HashMap::new(),
            total: 0,
        }
    }

    fn take(&mut self, key: &K, max_total: usize, max_per_key: usize) -> bool {
        let held = self.by_key.get(key).copied().unwrap_or(0);
        if self.total >= max_total || held >= max_per_key {
            return false;
        }
        self.by_key.insert(key.clone(), held + 1);
        self.total += 1;
        true
    }

    fn give_back(&mut self, key: &K) {
        if let Some(held) = self.by_key.get_mut(key) {
            *held -= 1;
            if *held == 0 {
                self.by_key.remove(key);
            }
            self.total -= 1;
        }
    }
}

/// A slot held while its connection or stream lives.
pub struct Slot<K: std::hash::Hash + Eq + Clone> {
    counts: Arc<Mutex<Counts<K>>>,
    key: K,
}

impl<K: std::hash::Hash + Eq + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.give_back(&self.key);
    }
}

fn take<K: std::hash::Hash + Eq + Clone>(
    counts: &Arc<Mutex<Counts<K>>>,
    key: K,
    max_total: usize,
    max_per_key: usize,
) -> Option<Slot<K>> {
    let mut held = counts.lock().unwrap_or_else(|p| p.into_inner());
    held.take(&key, max_total, max_per_key).then(|| Slot {
        counts: counts.clone(),
        key,
    })
}

/// Why a password check did not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

impl Limits {
    pub fn new(config: &Config) -> Limits {
        Limits {
            connections: Arc::new(Mutex::new(Counts::new())),
            streams: Arc::new(Mutex::new(Counts::new())),
            password_checks: Arc::new(Semaphore::new(config.console.login_concurrency)),
            ready: tokio::sync::Mutex::new(None),
        }
    }

    /// A connection slot for `peer`, unless the listener or that address is full.
    pub fn connection(&self, peer: IpAddr, config: &Config) -> Option<Slot<IpAddr>> {
        take(
            &self.connections,
            peer,
            config.admin.max_connections,
            config.admin.max_connections_per_addr,
        )
    }

    /// A stream slot for the session `token`, unless it holds its share already.
    pub fn stream(&self, token: &str, config: &Config) -> Option<Slot<String>> {
        take(
            &self.streams,
            token.to_owned(),
            usize::MAX,
            config.console.streams_per_session,
        )
    }

    /// A password-check slot, waiting at most `[console] login_queue_ms` for one.
    pub async fn password_check(&self, config: &Config) -> Result<OwnedSemaphorePermit, Busy> {
        let wait = Duration::from_millis(config.console.login_queue_ms);
        match tokio::time::timeout(wait, self.password_checks.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(Busy),
        }
    }

    /// Redis's readiness, looked at (by `check`) at most once a second.
    pub async fn ready<F, Fut>(&self, check: F) -> Result<(), String>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        let mut last = self.ready.lock().await;
        if let Some((at, answer)) = last.as_ref()
            && at.elapsed() < READY_FOR
        {
            return answer.clone();
        }
        let answer = check().await;
        *last = Some((Instant::now(), answer.clone()));
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_in_all_and_per_key_and_come_back_on_drop() {
        let counts = Arc::new(Mutex::new(Counts::new()));
        let a1 = take(&counts, "a", 3, 2).expect("first of a");
        let _a2 = take(&counts, "a", 3, 2).expect("second of a");
        assert!(take(&counts, "a", 3, 2).is_none(), "a over its share");
        let _b1 = take(&counts, "b", 3, 2).expect("first of b");
        assert!(take(&counts, "c", 3, 2).is_none(), "listener full");
        drop(a1);
        assert!(take(&counts, "c", 3, 2).is_some(), "a slot came back");
        assert_eq!(counts.lock().unwrap().by_key.get("a"), Some(&1));
    }
}
