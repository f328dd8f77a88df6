//! FCM's per-device message quota (fcm-v1.md: 240 messages a minute to one Android device),
//! so a sender that hammers one token meets the device-quota 429 it would meet at Google.
//!
//! Invariant: a token gets at most `rate` messages at once and `rate` a minute on average
//! (a bucket of `rate` that refills `rate` a minute, kept as GCRA: one instant per token, the
//! time its next message is on schedule). Memory is bounded: tokens are kept by a keyed
//! 64-bit hash, never more than `max_tracked` of them; a token whose bucket is full again is
//! idle and dropped when the table fills, and while it is full of busy tokens a new token
//! goes uncounted (lenient, never a false 429).

use std::collections::HashMap;
use std::hash::{BuildHasher as _, RandomState};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Enough for every token of a busy benchmark's last minute, in a few MiB.
const MAX_TRACKED: usize = 1 << 17;
/// How often a full table of busy tokens is searched for idle ones again.
const PURGE_EVERY: Duration = Duration::from_secs(1);

pub(super) struct DeviceQuota {
    /// Messages a minute to one token (at least 1).
    rate: u32,
    /// The steady spacing of messages: a minute / `rate`.
    interval: Duration,
    /// How far a token's schedule may run ahead of now: the bucket's `rate` - 1 messages.
    burst: Duration,
    max_tracked: usize,
    /// Hashes token strings (up to ~160 bytes each) to 8 bytes; keyed per emulator.
    hasher: RandomState,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    /// Token hash → when its next message is on schedule.
    due: HashMap<u64, Instant>,
    last_purge: Option<Instant>,
}

impl DeviceQuota {
    /// `rate` messages a minute per token; `None` for 0 (no quota).
    pub(super) fn per_minute(rate: u32) -> Option<DeviceQuota> {
        Self::with_capacity(rate, MAX_TRACKED)
    }

    fn with_capacity(rate: u32, max_tracked: usize) -> Option<DeviceQuota> {
        let interval = Duration::from_secs(60).checked_div(rate)?;
        Some(DeviceQuota {
            rate,
            interval,
            burst: interval * (rate - 1),
            max_tracked,
            hasher: RandomState::new(),
            table: Mutex::default(),
        })
    }

    pub(super) fn rate(&self) -> u32 {
        self.rate
    }

    /// Counts one message to `token` at `now`; `Err(wait)` when the token is over its quota
    /// and nothing is counted: `wait` is how long until one more message fits.
    pub(super) fn admit(&self, token: &str, now: Instant) -> Result<(), Duration> {
        let key = self.hasher.hash_one(token);
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        let due = match table.due.get(&key).copied() {
            Some(due) => due.max(now),
            None if table.due.len() < self.max_tracked || table.purge(now) < self.max_tracked => {
                now
            }
            None => return Ok(()),
        };
        let ahead = due - now;
        if ahead > self.burst {
            return Err(ahead - self.burst);
        }
        table.due.insert(key, due + self.interval);
        Ok(())
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .due
            .len()
    }
}

impl Table {
    /// Drops idle tokens (at most once per `PURGE_EVERY`); returns how many remain.
    fn purge(&mut self, now: Instant) -> usize {
        if self
            .last_purge
            .is_none_or(|at| now.saturating_duration_since(at) >= PURGE_EVERY)
        {
            self.last_purge = Some(now);
            self.due.retain(|_, due| *due > now);
        }
        self.due.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_gets_its_rate_at_once_then_one_message_per_interval() {
        let quota = DeviceQuota::per_minute(240).expect("on");
        let t0 = Instant::now();
        for n in 0..240 {
            assert_eq!(quota.admit("dev-a", t0), Ok(()), "message {n}");
        }
        let interval = Duration::from_millis(250);
        assert_eq!(quota.admit("dev-a", t0), Err(interval));
        assert_eq!(quota.admit("dev-a", t0 + interval / 2), Err(interval / 2));
        assert_eq!(quota.admit("dev-a", t0 + interval), Ok(()));
        assert_eq!(quota.admit("dev-a", t0 + interval), Err(interval));
        // Other devices are not slowed by it.
        assert_eq!(quota.admit("dev-b", t0), Ok(()));
        // A minute later the bucket is full again.
        let later = t0 + Duration::from_secs(61);
        for n in 0..240 {
            assert_eq!(
                quota.admit("dev-a", later),
                Ok(()),
                "message {n} a minute later"
            );
        }
        assert!(quota.admit("dev-a", later).is_err());
    }

    #[test]
    fn a_steady_rate_at_the_quota_is_never_refused() {
        let quota = DeviceQuota::per_minute(6).expect("on");
        let t0 = Instant::now();
        for n in 0..100u32 {
            assert_eq!(
                quota.admit("dev", t0 + Duration::from_secs(10) * n),
                Ok(()),
                "message {n}"
            );
        }
    }

    #[test]
    fn rate_zero_is_no_quota() {
        assert!(DeviceQuota::per_minute(0).is_none());
    }

    #[test]
    fn idle_tokens_are_dropped_and_the_table_never_grows_past_its_cap() {
        let quota = DeviceQuota::with_capacity(2, 4).expect("on");
        let t0 = Instant::now();
        for n in 0..4 {
            quota
                .admit(&format!("busy-{n}"), t0)
                .expect("first message");
        }
        // The table is full of busy tokens: a new one goes uncounted, never refused.
        for _ in 0..5 {
            assert_eq!(quota.admit("newcomer", t0), Ok(()));
        }
        assert_eq!(quota.tracked(), 4);
        // Past their schedule the busy tokens are idle: the next newcomer takes a place.
        let later = t0 + Duration::from_secs(31);
        assert_eq!(quota.admit("newcomer", later), Ok(()));
        assert_eq!(quota.admit("newcomer", later), Ok(()));
        assert!(quota.admit("newcomer", later).is_err(), "now counted");
        assert_eq!(quota.tracked(), 1);
    }
}
