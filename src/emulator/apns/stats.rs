//! The counters behind `GET /stats`, read by tests that check exactly-once delivery, the
//! reasons the gateway met and how it refreshed its provider token.

use std::collections::BTreeMap;

/// How many refresh intervals `Stats` keeps (the newest).
const INTERVALS_KEPT: usize = 1000;

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Stats {
    /// Requests answered 200.
    pub accepted: u64,
    /// Every non-200 answer, by its `reason`.
    pub rejected: BTreeMap<String, u64>,
    /// The payload's custom key `uniqueKey` → times accepted, for exactly-once checks.
    pub by_key: BTreeMap<String, u64>,
    /// Distinct provider tokens (JWTs) accepted.
    pub tokens_seen: u64,
    /// New tokens accepted after the first: the gateway's refreshes.
    pub token_updates: u64,
    /// For each refresh, how long after the previous new token it came, milliseconds (the
    /// newest 1,000), so a test can check that refreshes fall inside Apple's window.
    pub refresh_intervals_ms: Vec<u64>,
}

impl Stats {
    pub(super) fn reject(&mut self, reason: &str) {
        *self.rejected.entry(reason.to_owned()).or_default() += 1;
    }

    /// Counts a token accepted for the first time; `interval` is `None` for the key's first.
    pub(super) fn new_token(&mut self, interval: Option<std::time::Duration>) {
        self.tokens_seen += 1;
        if let Some(interval) = interval {
            self.token_updates += 1;
            if self.refresh_intervals_ms.len() >= INTERVALS_KEPT {
                self.refresh_intervals_ms.remove(0);
            }
            self.refresh_intervals_ms
                .push(u64::try_from(interval.as_millis()).unwrap_or(u64::MAX));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::apns::harness::*;
    use serde_json::json;

    #[tokio::test]
    async fn stats_endpoint_serves_the_counters_as_json() {
        let h = spawn(&["--unregistered-prefix", "dead"]).await;
        h.send(h.push()).await.assert_accepted();
        h.send(h.push()).await.assert_accepted();
        let other = h.push().body(payload("k2").to_string());
        h.send(other).await.assert_accepted();
        let anonymous = h.push().body(json!({"aps": {"badge": 2}}).to_string());
        h.send(anonymous).await.assert_accepted();
        h.assert_refused(h.push().to("dead01"), 410, "Unregistered")
            .await;
        h.assert_refused(h.push().to("xyz"), 400, "BadDeviceToken")
            .await;

        let json = h.stats_json().await;
        let stats: Stats = serde_json::from_value(json.clone()).expect("Stats JSON");
        assert_eq!(stats, h.emulator.stats());
        assert_eq!(json["accepted"], 4);
        assert_eq!(json["by_key"], json!({"k1": 2, "k2": 1}));
        assert_eq!(
            json["rejected"],
            json!({"BadDeviceToken": 1, "Unregistered": 1})
        );
        assert_eq!(
            (json["tokens_seen"].clone(), json["token_updates"].clone()),
            (json!(1), json!(0))
        );
        let keys: Vec<String> = (h.emulator.accepted_in_order().into_iter())
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, ["k1", "k1", "k2", ""]);
    }

    #[test]
    fn refresh_intervals_keep_the_newest_thousand() {
        let mut stats = Stats::default();
        stats.new_token(None);
        for ms in 1..=1001 {
            stats.new_token(Some(std::time::Duration::from_millis(ms)));
        }
        assert_eq!((stats.tokens_seen, stats.token_updates), (1002, 1001));
        assert_eq!(stats.refresh_intervals_ms.len(), 1000);
        assert_eq!(stats.refresh_intervals_ms.first(), Some(&2));
        assert_eq!(stats.refresh_intervals_ms.last(), Some(&1001));
    }
}
