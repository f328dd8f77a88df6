//! The delivery side of the store: claiming due records under a lease, writing each
//! send's outcome, and the list of dead registration tokens.
//!
//! A record in `inflight` belongs to the sender that claimed it until its lease
//! (the zset score, unix ms) expires; only that sender writes the record, and its
//! write is refused once the lease has moved on (fencing). An expired lease returns
//! the id to `due`, so a sender that dies mid-send loses nothing.

use crate::push::Record;

use super::scripts::scripts;
use super::{Store, StoreError};
use crate::push::Status;

/// A record taken from `due` for sending.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: u64,
    /// The lease this claim holds (unix ms); the outcome must name it.
    pub lease: i64,
    pub record: Record,
}

/// What one send attempt changed on a record.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub id: u64,
    pub lease: i64,
    /// The whole record as it must now be stored.
    pub record: Record,
    pub old_status: Status,
    pub new_status: Status,
    /// When to try again (unix ms), for `retrying`.
    pub retry_at_ms: Option<i64>,
    /// FCM accepted it: `fcm_send_yn` flips from N to Y.
    pub delivered: bool,
    pub port: String,
    pub at_ms: i64,
}

impl Store {
    /// Return expired leases to `due`, then move up to `max` ids due by `now_ms` from
    /// `due` to `inflight` with a lease until `lease_until_ms`, in one atomic step.
    pub async fn claim(
        &self,
        now_ms: i64,
        lease_until_ms: i64,
        max: usize,
    ) -> Result<Vec<Claimed>, StoreError> {
        let mut invocation = scripts().claim.prepare_invoke();
        invocation
            .arg(&self.prefix)
            .arg(now_ms)
            .arg(lease_until_ms)
            .arg(max);
        let pairs: Vec<(u64, String)> = self.invoke(&invocation).await?;
        let mut claimed = Vec::with_capacity(pairs.len());
        for (id, text) in pairs {
            let record = super::record::decode(&text)?;
            claimed.push(Claimed {
                id,
                lease: lease_until_ms,
                record,
            });
        }
        Ok(claimed)
    }

    /// Write outcomes in one atomic round trip. Returns, per outcome, whether it was
    /// applied (false = the lease had expired and another claim owns the record).
    pub async fn finish(&self, outcomes: &[Outcome]) -> Result<Vec<bool>, StoreError> {
        if outcomes.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = scripts().outcome.prepare_invoke();
        invocation
            .arg(&self.prefix)
            .arg(outcomes.len())
            .arg(self.stats_ttl_secs);
        for o in outcomes {
            let minute = o.at_ms.div_euclid(60_000);
            invocation
                .arg(o.id)
                .arg(o.lease)
                .arg(super::record::encode(&o.record))
                .arg(o.old_status.as_str())
                .arg(o.new_status.as_str())
                .arg(o.retry_at_ms.map(|ms| ms.to_string()).unwrap_or_default())
                .arg(u8::from(o.delivered))
                .arg(format!("stats:{}:{minute}", o.port))
                .arg(format!("stats:{}:total", o.port));
        }
        let applied: Vec<i64> = if self.ack_replicas == 0 {
            self.invoke(&invocation).await?
        } else {
            // With `ack_replicas`, an outcome counts only once replicas have it, so a
            // failover cannot forget that a push was sent (and send it again).
            let mut con = self.con().await?;
            self.invoke_replicated(&scripts().outcome, &invocation, &mut con)
                .await?
        };
        Ok(applied.into_iter().map(|a| a == 1).collect())
    }

    /// Remember registration tokens FCM called UNREGISTERED (token → unix ms).
    pub async fn remember_dead_token(&self, token: &str, at_ms: i64) -> Result<(), StoreError> {
        let _: i64 = self
            .query(
                redis::cmd("HSET")
                    .arg(self.key("deadTokens"))
                    .arg(token)
                    .arg(at_ms),
            )
            .await?;
        Ok(())
    }

    /// For each token, when it was found dead (if it was).
    pub async fn dead_tokens(&self, tokens: &[&str]) -> Result<Vec<Option<i64>>, StoreError> {
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        self.query(redis::cmd("HMGET").arg(self.key("deadTokens")).arg(tokens))
            .await
    }

    /// Ids waiting in `due` and in `inflight`.
    pub async fn queue_depths(&self) -> Result<(u64, u64), StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("ZCARD")
            .arg(self.key("due"))
            .cmd("ZCARD")
            .arg(self.key("inflight"));
        self.query_pipe(&pipe).await
    }
}
