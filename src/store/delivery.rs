//! The delivery side of the store: claiming due records under a lease, writing each
//! send's outcome, and the list of dead registration tokens.
//!
//! Every push waits in the due queue of its app and lane (`due:{app}:{lane}`, a zset
//! scored by unix ms); one app's claim reads only its three queues. A record in
//! `inflight` (one zset for every app) belongs to the sender that claimed it until its
//! lease (the zset score, unix ms) expires; only that sender writes the record, and its
//! write is refused once the lease has moved on (fencing). An expired lease returns the
//! id to its queue, so a sender that dies mid-send loses nothing.

use std::time::Duration;

use crate::config::Bucket;
use crate::push::queue::{NORMAL_SHARE, SHARE_ROUND};
use crate::push::{Lane, Queue, Record};

use super::rebase::{APPLIED, CHANGED, RecordWrite};
use super::scripts::scripts;
use super::{Store, StoreError};
use crate::push::Status;

/// What one claim took, and when the app's bucket lets it claim more.
#[derive(Debug, Default)]
pub struct Claim {
    pub records: Vec<Claimed>,
    /// Set when the bucket held back pushes that are due: claim again after this.
    pub paced: Option<Duration>,
}

/// A queue's state, for the console's queue card.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct QueueDepth {
    pub app: String,
    pub lane: Lane,
    /// Ids due now.
    pub due: u64,
    /// Ids due later (reserved times, retries).
    pub scheduled: u64,
    /// How long the oldest due id has waited (ms), 0 when none is due.
    pub oldest_ms: i64,
}

/// A record taken from `due` for sending.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: u64,
    /// The lease this claim holds (unix ms); the outcome must name it.
    pub lease: i64,
    pub record: Record,
    /// The record as stored when it was claimed: its outcome replaces only this text.
    pub text: String,
}

/// What one send attempt changed on a record.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub id: u64,
    pub lease: i64,
    /// The stored record the attempt started from ([`Claimed::text`]). Written over only
    /// that: a record changed meanwhile (a legal hold, a fallback rung's outcome) gets the
    /// attempt applied to what it is now ([`Record::attempt_over`]).
    pub base: String,
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
    /// The fallback rung to queue it on in the same step (its ladder's first), when it
    /// ends unreached.
    pub fallback: Option<String>,
    /// Sent with a fallback ladder: wait for its receipt (`fallback:watch`) from `at_ms`.
    pub watch_receipt: bool,
}

/// A paced claim script's answer, `{wait ms, id, record, id, record, …}`: the wait and
/// the claimed (id, record) pairs.
pub(super) fn paced_claim(value: redis::Value) -> Result<(u64, Vec<(u64, String)>), StoreError> {
    let mut items = match value {
        redis::Value::Array(items) => items.into_iter(),
        other => {
            return Err(StoreError::Protocol(format!("claim returned {other:?}")));
        }
    };
    let wait: u64 = from_value(items.next().unwrap_or(redis::Value::Int(0)))?;
    let rest: Vec<redis::Value> = items.collect();
    Ok((wait, from_value(redis::Value::Array(rest))?))
}

impl RecordWrite for Outcome {
    fn id(&self) -> u64 {
        self.id
    }

    fn rebase(&mut self, current: Option<Record>, text: String) {
        if let Some(current) = current {
            self.record = self.record.attempt_over(current);
        }
        self.base = text;
    }

    async fn write(store: &Store, writes: &[&Self]) -> Result<Vec<i64>, StoreError> {
        store.finish_once(writes).await
    }
}

impl Store {
    /// Return expired leases to their queues, then move up to `max` of `app`'s ids due
    /// by `now_ms` to `inflight` with a lease until `lease_until_ms`, urgent first, normal
    /// and bulk sharing the rest, as many as `bucket` allows: one atomic step.
    pub async fn claim(
        &self,
        app: &str,
        now_ms: i64,
        lease_until_ms: i64,
        max: usize,
        bucket: Option<Bucket>,
    ) -> Result<Claim, StoreError> {
        let mut invocation = scripts().claim.prepare_invoke();
        let (rate, burst, reserve) =
            bucket.map_or((0, 0, 0), |b| (b.rate, b.burst, b.urgent_reserve));
        invocation
            .arg(&self.prefix)
            .arg(app)
            .arg(now_ms)
            .arg(lease_until_ms)
            .arg(max)
            .arg(rate)
            .arg(burst)
            .arg(reserve)
            .arg(NORMAL_SHARE)
            .arg(SHARE_ROUND);
        let (wait_ms, pairs) = paced_claim(self.invoke(&invocation).await?)?;
        let mut records = Vec::with_capacity(pairs.len());
        for (id, text) in pairs {
            let record = super::record::decode(&text)?;
            records.push(Claimed {
                id,
                lease: lease_until_ms,
                record,
                text,
            });
        }
        Ok(Claim {
            records,
            paced: (wait_ms > 0).then(|| Duration::from_millis(wait_ms)),
        })
    }

    /// Write outcomes in one atomic round trip. Returns, per outcome, whether it was
    /// applied (false = the lease had expired and another claim owns the record). An
    /// outcome whose record changed since it was claimed (a legal hold placed, a fallback
    /// rung's outcome written meanwhile) is applied to the record as it is now and
    /// written again ([`Store::write_rebasing`]), so neither change is lost.
    pub async fn finish(&self, outcomes: &[Outcome]) -> Result<Vec<bool>, StoreError> {
        let answers = self.write_rebasing(outcomes).await?;
        let changing = answers.iter().filter(|a| **a == CHANGED).count();
        if changing > 0 {
            // Still leased: the sender writes them again.
            return Err(StoreError::Protocol(format!(
                "{changing} records kept changing while their outcomes were written; writing again"
            )));
        }
        Ok(answers.into_iter().map(|a| a == APPLIED).collect())
    }

    /// One round trip of `outcome.lua`: per outcome 1 applied, 0 lease lost, 2 the record
    /// changed since its `base`.
    async fn finish_once(&self, outcomes: &[&Outcome]) -> Result<Vec<i64>, StoreError> {
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
                .arg(&o.base)
                .arg(super::record::encode(&o.record))
                .arg(o.old_status.as_str())
                .arg(o.new_status.as_str())
                .arg(o.retry_at_ms.map(|ms| ms.to_string()).unwrap_or_default())
                .arg(o.record.queue().due_key())
                .arg(u8::from(o.delivered))
                .arg(format!("stats:{}:{minute}", o.port))
                .arg(format!("stats:{}:total", o.port))
                .arg(
                    o.fallback
                        .as_deref()
                        .map(super::fallback::queue_key)
                        .unwrap_or_default(),
                )
                .arg(if o.watch_receipt {
                    o.at_ms.to_string()
                } else {
                    String::new()
                });
        }
        if self.ack_replicas == 0 {
            self.invoke(&invocation).await
        } else {
            // With `ack_replicas`, an outcome counts only once replicas have it, so a
            // failover cannot forget that a push was sent (and send it again).
            let mut con = self.con().await?;
            self.invoke_replicated(&scripts().outcome, &invocation, &mut con)
                .await
        }
    }

    /// The hash of `app`'s dead tokens: a token is dead for the app whose provider said so
    /// (APNs: DeviceTokenNotForTopic is about this app's bundle only). The default app's is
    /// the first stage's `deadTokens`.
    fn dead_tokens_key(&self, app: &str) -> String {
        if app == crate::push::DEFAULT_APP {
            self.key("deadTokens")
        } else {
            self.key(&format!("deadTokens:{app}"))
        }
    }

    /// Remember a token `app`'s provider called dead (token → unix ms it was dead as of).
    pub async fn remember_dead_token(
        &self,
        app: &str,
        token: &str,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        let _: i64 = self
            .query(
                redis::cmd("HSET")
                    .arg(self.dead_tokens_key(app))
                    .arg(token)
                    .arg(at_ms),
            )
            .await?;
        Ok(())
    }

    /// For each token, when `app`'s provider found it dead (if it did).
    pub async fn dead_tokens(
        &self,
        app: &str,
        tokens: &[&str],
    ) -> Result<Vec<Option<i64>>, StoreError> {
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        self.query(
            redis::cmd("HMGET")
                .arg(self.dead_tokens_key(app))
                .arg(tokens),
        )
        .await
    }

    /// Ids waiting in every due queue, and in `inflight`.
    pub async fn queue_depths(&self) -> Result<(u64, u64), StoreError> {
        let queues = self.queues(&[], now_ms_for_depths()).await?;
        let waiting = queues.iter().map(|q| q.due + q.scheduled).sum();
        let inflight: u64 = self
            .query(redis::cmd("ZCARD").arg(self.key("inflight")))
            .await?;
        Ok((waiting, inflight))
    }

    /// Every queue in use or belonging to `apps`, with its depth and oldest due id's age:
    /// one round trip, O(log N) per queue.
    pub async fn queues(&self, apps: &[&str], now_ms: i64) -> Result<Vec<QueueDepth>, StoreError> {
        let registered: Vec<String> = self
            .query(redis::cmd("SMEMBERS").arg(self.key("queues")))
            .await?;
        let mut queues: std::collections::BTreeSet<Queue> = registered
            .iter()
            .filter_map(|key| parse_due_key(key))
            .collect();
        for app in apps {
            for lane in Lane::ALL {
                queues.insert(Queue::new(app, lane));
            }
        }
        if queues.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for q in &queues {
            let key = self.key(&q.due_key());
            pipe.cmd("ZCOUNT").arg(&key).arg("-inf").arg(now_ms);
            pipe.cmd("ZCOUNT")
                .arg(&key)
                .arg(format!("({now_ms}"))
                .arg("+inf");
            pipe.cmd("ZRANGE").arg(&key).arg(0).arg(0).arg("WITHSCORES");
        }
        let answers: Vec<redis::Value> = self.query_pipe(&pipe).await?;
        let mut out = Vec::with_capacity(queues.len());
        for (q, chunk) in queues.into_iter().zip(answers.chunks(3)) {
            let due: u64 = from_value(chunk[0].clone())?;
            let scheduled: u64 = from_value(chunk[1].clone())?;
            let first: Vec<(String, f64)> = from_value(chunk[2].clone())?;
            let oldest_ms = match first.first() {
                Some((_, score)) if due > 0 => (now_ms - *score as i64).max(0),
                _ => 0,
            };
            out.push(QueueDepth {
                app: q.app,
                lane: q.lane,
                due,
                scheduled,
                oldest_ms,
            });
        }
        Ok(out)
    }

    /// Move what the first stage queued (one `due` zset) into the default app's normal
    /// queue: run once at start, harmless when there is nothing to move.
    pub async fn adopt_legacy_queue(&self) -> Result<u64, StoreError> {
        let mut invocation = scripts().legacy_queue.prepare_invoke();
        invocation.arg(&self.prefix);
        self.invoke(&invocation).await
    }
}

fn now_ms_for_depths() -> i64 {
    crate::clock::now_ms()
}

/// `due:{app}:{lane}` back to its queue; anything else (a foreign key) is skipped.
fn parse_due_key(key: &str) -> Option<Queue> {
    let rest = key.strip_prefix("due:")?;
    let (app, lane) = rest.rsplit_once(':')?;
    Some(Queue::new(app, Lane::parse(lane)?))
}

fn from_value<T: redis::FromRedisValue>(value: redis::Value) -> Result<T, StoreError> {
    redis::from_redis_value(value).map_err(|e| StoreError::Protocol(e.to_string()))
}
