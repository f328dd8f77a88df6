//! The counters behind `GET /stats`, read by tests that check exactly-once delivery and the
//! error classes the gateway met.

use std::collections::BTreeMap;
use std::sync::PoisonError;

use super::State;
use super::rejection::Rejection;

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Stats {
    /// Sends answered 200 (not validate_only).
    pub accepted: u64,
    /// validate_only sends answered 200.
    pub validated: u64,
    pub tokens_issued: u64,
    /// Every non-200 answer, by FcmError `errorCode` if it has one, else by `error.status`
    /// (`invalid_grant` for the token endpoint).
    pub rejected: BTreeMap<String, u64>,
    /// QUOTA_EXCEEDED answers (also in `rejected`) by the quota they named: `device` or
    /// `project`.
    #[serde(default)]
    pub quota: BTreeMap<String, u64>,
    /// data.uniqueKey -> times accepted, for exactly-once checks.
    pub by_key: BTreeMap<String, u64>,
}

impl State {
    pub(super) fn stats(&self) -> std::sync::MutexGuard<'_, Stats> {
        self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn reject(&self, key: &str) {
        *self.stats().rejected.entry(key.to_owned()).or_default() += 1;
    }

    /// Counts a refused send, and the quota it named.
    pub(super) fn refuse(&self, rejection: &Rejection) {
        let mut stats = self.stats();
        *stats
            .rejected
            .entry(rejection.stats_key().to_owned())
            .or_default() += 1;
        if let Some(quota) = &rejection.quota {
            *stats
                .quota
                .entry(quota.scope.name().to_owned())
                .or_default() += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::harness::*;
    use serde_json::json;

    #[tokio::test]
    async fn stats_endpoint_serves_the_counters_as_json() {
        let h = spawn(&[]).await;
        assert_eq!(h.send(message("a")).await.0, 200);
        assert_eq!(h.send(message("a")).await.0, 200);
        assert_eq!(h.send(json!({"topic": "/topics/x"})).await.0, 400);
        let stats: Stats = serde_json::from_value(h.stats_json().await).expect("Stats JSON");
        assert_eq!(stats, h.emulator.stats());
        assert_eq!((stats.accepted, stats.tokens_issued), (2, 3));
        assert_eq!(stats.by_key.get("a"), Some(&2));
        assert_eq!(stats.rejected.get("INVALID_ARGUMENT"), Some(&1));
        assert!(stats.quota.is_empty(), "{stats:?}");
    }

    #[tokio::test]
    async fn stats_count_quota_answers_by_the_quota_they_named() {
        let h = spawn(&["--device-rate", "1", "--fail-token", "busy-=QUOTA_EXCEEDED"]).await;
        assert_eq!(h.send(message("a")).await.0, 200);
        assert_eq!(
            h.send(message("b")).await.0,
            429,
            "device-1's second message"
        );
        assert_eq!(h.send(message("c")).await.0, 429, "and its third");
        assert_eq!(h.send(json!({"token": "busy-1"})).await.0, 429);
        let stats = h.stats_json().await;
        assert_eq!(stats["quota"], json!({"device": 2, "project": 1}));
        assert_eq!(stats["rejected"]["QUOTA_EXCEEDED"], 3);
        assert_eq!(stats["by_key"], json!({"a": 1}));
    }
}
