//! The per-port counters the ingest and outcome scripts keep (`stats:{port}:{minute}`,
//! `stats:{port}:total`), and the receipts script's `delivered` / `opened`, as the
//! console reads them.

use super::{Store, StoreError};

impl Store {
    /// The console's counters of each port, in one round trip.
    pub async fn port_counts(&self, ports: &[String]) -> Result<Vec<PortCounts>, StoreError> {
        if ports.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for port in ports {
            pipe.cmd("HGETALL")
                .arg(self.key(&format!("stats:{port}:total")));
        }
        let all: Vec<std::collections::HashMap<String, u64>> = self.query_pipe(&pipe).await?;
        Ok(all
            .iter()
            .map(|totals| {
                let total = |k: &str| totals.get(k).copied().unwrap_or(0);
                PortCounts {
                    received: total("received"),
                    sent: total("sent"),
                    failed: total("failed"),
                    dropped: total("dropped") + total("script_error"),
                    delivered: total("delivered"),
                    opened: total("opened"),
                }
            })
            .collect())
    }

    /// Per-port totals since the store began (`received`, `queued`, `dup`, …).
    pub async fn port_totals(&self, port: &str) -> Result<Vec<(String, u64)>, StoreError> {
        self.query(redis::cmd("HGETALL").arg(self.key(&format!("stats:{port}:total"))))
            .await
    }

    /// Per-minute counters of a port for the last `minutes` minutes (oldest first).
    pub async fn minute_counts(
        &self,
        port: &str,
        field: &str,
        now_ms: i64,
        minutes: i64,
    ) -> Result<Vec<u64>, StoreError> {
        let now_minute = now_ms.div_euclid(60_000);
        let mut pipe = redis::pipe();
        for m in (now_minute - minutes + 1)..=now_minute {
            pipe.cmd("HGET")
                .arg(self.key(&format!("stats:{port}:{m}")))
                .arg(field);
        }
        let counts: Vec<Option<u64>> = self.query_pipe(&pipe).await?;
        Ok(counts.into_iter().map(|c| c.unwrap_or(0)).collect())
    }
}

/// What the console counts of a port since the store began (`dropped` includes
/// `script_error`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PortCounts {
    pub received: u64,
    pub sent: u64,
    pub failed: u64,
    pub dropped: u64,
    /// Pushes the app reported as reached the device (a `delivered` or `opened` receipt).
    pub delivered: u64,
    /// Pushes the app reported as opened.
    pub opened: u64,
}

impl PortCounts {
    /// Receipts per sent push, in percent (none before anything was sent). Receipts of
    /// pushes sent before the counters began can make it pass 100; it is capped there.
    pub fn receipt_rate(&self) -> Option<f64> {
        (self.sent > 0).then(|| (self.delivered as f64 * 100.0 / self.sent as f64).min(100.0))
    }
}
