//! The counters behind `GET /stats`, read by tests that check exactly-once delivery and the
//! error classes the gateway met, and the accepted sends in order behind
//! `GET /stats/accepted`, read by benchmarks of latency and pace.

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

    /// `GET /stats/accepted?since=N`: the accepted sends numbered N and later (the first
    /// accepted is 0), as `{"first": F, "next": M, "accepted": [[uniqueKey, unix ms], ...]}`
    /// for sends F to M - 1. F is above N when older sends are no longer kept (only the last
    /// [`super::ACCEPTED_KEPT`] are); a poller passes `next` back as `since`.
    pub(super) fn accepted_since(&self, since: u64) -> serde_json::Value {
        // The same lock order as a send, which counts and appends under the stats lock, so
        // the count and the list agree.
        let stats = self.stats();
        let order = self.accepted.lock().unwrap_or_else(PoisonError::into_inner);
        let next = stats.accepted;
        let kept_from = next - order.len() as u64;
        let first = since.clamp(kept_from, next);
        let sends: Vec<serde_json::Value> = (order.iter())
            .skip((first - kept_from) as usize)
            .map(|(key, at)| serde_json::json!([key, at]))
            .collect();
        serde_json::json!({"first": first, "next": next, "accepted": sends})
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
    async fn accepted_since_lists_the_accepted_sends_from_the_nth_on_in_order() {
        let h = spawn(&[]).await;
        for key in ["a", "b", "c"] {
            assert_eq!(h.send(message(key)).await.0, 200);
        }
        assert_eq!(h.send(json!({"topic": "/topics/x"})).await.0, 400);
        let get = |query: &'static str| {
            let request = h.http.get(h.url(&format!("/stats/accepted{query}")));
            async move { read(request.send().await.expect("GET /stats/accepted")).await }
        };
        let (status, all) = get("").await;
        assert_eq!(status, 200, "{all}");
        assert_eq!((&all["first"], &all["next"]), (&json!(0), &json!(3)));
        let keys: Vec<&str> = (all["accepted"].as_array().expect("a list").iter())
            .map(|s| s[0].as_str().expect("a key"))
            .collect();
        assert_eq!(keys, ["a", "b", "c"], "only accepted sends, in order");
        let times: Vec<i64> = (all["accepted"].as_array().expect("a list").iter())
            .map(|s| s[1].as_i64().expect("unix ms"))
            .collect();
        let now = crate::clock::now_ms();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
        assert!(
            times.iter().all(|t| (now - 60_000..=now).contains(t)),
            "{times:?}"
        );

        let (_, rest) = get("?since=2").await;
        assert_eq!(rest["accepted"], json!([["c", times[2]]]));
        assert_eq!((&rest["first"], &rest["next"]), (&json!(2), &json!(3)));
        let (_, none) = get("?since=7").await;
        assert_eq!(none["accepted"], json!([]));
        assert_eq!(
            none["next"], 3,
            "a poller ahead of the count waits for send 3"
        );
        let (status, bad) = get("?since=soon").await;
        assert_fcm_error(status, &bad, 400, "INVALID_ARGUMENT", None);
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
