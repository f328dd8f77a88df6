//! The fallback rungs' durable queues: a push waits on a rung in `fq:{rung}` (scored by
//! unix ms), is claimed into `fqinflight:{rung}` under a lease, and only the claim that
//! still holds the lease writes its outcome (fencing), as pushes do in `delivery.rs`. The
//! next rung is queued in the same atomic step as the outcome; the first rung in the same
//! step as the push's own final outcome (`outcome.lua`). A lease that expires returns the
//! id to its rung's queue, so a node killed mid-send loses nothing and sends again at most
//! what it had in flight.

use std::time::Duration;

use crate::push::{Record, RungAttempt, RungOutcome};

use super::rebase::{APPLIED, CHANGED, RecordWrite};
use super::scripts::scripts;
use super::{Store, StoreError};

/// The queue of `rung`, under the prefix.
pub fn queue_key(rung: &str) -> String {
    format!("fq:{rung}")
}

/// A record taken from a rung's queue.
#[derive(Debug, Clone)]
pub struct RungClaim {
    pub id: u64,
    /// The lease this claim holds (unix ms); the outcome must name it.
    pub lease: i64,
    pub record: Record,
    /// The stored text it was read from: the outcome replaces only this text.
    pub text: String,
}

/// A rung outcome with the time its next rung is due.
#[derive(Clone)]
struct Stamped(RungResult, i64);

impl RecordWrite for Stamped {
    fn id(&self) -> u64 {
        self.0.id
    }

    fn rebase(&mut self, current: Option<Record>, text: String) {
        if let Some(mut current) = current {
            if let Some(added) = &self.0.added {
                current.remember_rung(added.clone());
            }
            self.0.record = current;
        }
        self.0.base = text;
    }

    async fn write(store: &Store, writes: &[&Self]) -> Result<Vec<i64>, StoreError> {
        let Some(first) = writes.first() else {
            return Ok(Vec::new());
        };
        let mut invocation = scripts().fallback_outcome.prepare_invoke();
        invocation.arg(&store.prefix).arg(writes.len()).arg(first.1);
        for Stamped(r, _) in writes {
            invocation
                .arg(r.id)
                .arg(r.lease)
                .arg(&r.rung)
                .arg(&r.base)
                .arg(super::record::encode(&r.record))
                .arg(r.outcome.as_str())
                .arg(r.retry_at_ms.map(|ms| ms.to_string()).unwrap_or_default())
                .arg(r.next_rung.as_deref().unwrap_or_default());
        }
        store.invoke(&invocation).await
    }
}

/// What a rung's claim took.
#[derive(Debug)]
pub struct RungClaims {
    pub records: Vec<RungClaim>,
    /// Set when the rung's token bucket held back records that are due: claim again
    /// after this.
    pub paced: Option<Duration>,
}

/// A rung's bucket capacity for `rate` sends a second: a tenth of a second's worth, at
/// least one.
pub fn rung_burst(rate: u32) -> u32 {
    rate.div_ceil(10).max(1)
}

/// What became of one rung outcome written by [`Store::finish_rungs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RungWrite {
    Applied,
    /// The lease had expired and another claim owns the record: nothing written.
    LeaseLost,
    /// The record kept changing while the attempt was written again on it: nothing
    /// written, the lease left to expire (the rung is claimed again, and the gateway
    /// sees the same idempotency key).
    Changed,
}

/// What one rung attempt changed.
#[derive(Debug, Clone)]
pub struct RungResult {
    pub id: u64,
    pub lease: i64,
    pub rung: String,
    /// The stored text the attempt started from.
    pub base: String,
    /// The whole record as it must now be stored (with the attempt remembered).
    pub record: Record,
    /// The attempt added to `record`, to add again to a record that changed meanwhile.
    pub added: Option<RungAttempt>,
    pub outcome: RungOutcome,
    /// When to try this rung again (unix ms), for `retrying`.
    pub retry_at_ms: Option<i64>,
    /// The rung to queue it on now (a `failed` or `expired` rung's successor).
    pub next_rung: Option<String>,
}

impl Store {
    /// Return `rung`'s expired leases to its queue, then move up to `max` ids due by
    /// `now_ms` to its `fqinflight` with a lease until `lease_until_ms`, as many as the
    /// rung's token bucket (`rate` a second, shared by every node) holds: one atomic step.
    pub async fn claim_rung(
        &self,
        rung: &str,
        now_ms: i64,
        lease_until_ms: i64,
        max: usize,
        rate: Option<u32>,
    ) -> Result<RungClaims, StoreError> {
        let mut invocation = scripts().fallback_claim.prepare_invoke();
        invocation
            .arg(&self.prefix)
            .arg(rung)
            .arg(now_ms)
            .arg(lease_until_ms)
            .arg(max)
            .arg(rate.unwrap_or(0))
            .arg(rate.map_or(0, rung_burst));
        let (wait_ms, pairs) = super::delivery::paced_claim(self.invoke(&invocation).await?)?;
        let records = pairs
            .into_iter()
            .map(|(id, text)| {
                Ok(RungClaim {
                    id,
                    lease: lease_until_ms,
                    record: super::record::decode(&text)?,
                    text,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(RungClaims {
            records,
            paced: (wait_ms > 0).then(|| Duration::from_millis(wait_ms)),
        })
    }

    /// Write rung outcomes in one atomic round trip; each replaces its record only if
    /// the lease still holds and the record is still its `base`. A record changed
    /// meanwhile (an operator's resend, the push's own outcome) gets the attempt added to
    /// it as it is now and is written again ([`Store::write_rebasing`]).
    pub async fn finish_rungs(
        &self,
        results: &[RungResult],
        now_ms: i64,
    ) -> Result<Vec<RungWrite>, StoreError> {
        let stamped: Vec<Stamped> = results.iter().map(|r| Stamped(r.clone(), now_ms)).collect();
        Ok(self
            .write_rebasing(&stamped)
            .await?
            .into_iter()
            .map(|a| match a {
                APPLIED => RungWrite::Applied,
                CHANGED => RungWrite::Changed,
                _ => RungWrite::LeaseLost,
            })
            .collect())
    }

    /// One step of the receipt-timeout scan: up to `max` pushes sent at or before
    /// `until_ms` leave `fallback:watch`; with `trigger`, those still without a receipt
    /// are queued on their first rung (due `now_ms`). Returns how many left the watch
    /// list (`max` means more may be waiting) and how many were queued.
    pub async fn scan_receipt_timeouts(
        &self,
        until_ms: i64,
        now_ms: i64,
        max: usize,
        trigger: bool,
    ) -> Result<(u64, u64), StoreError> {
        let mut invocation = scripts().fallback_watch.prepare_invoke();
        invocation
            .arg(&self.prefix)
            .arg(until_ms)
            .arg(now_ms)
            .arg(max)
            .arg(u8::from(trigger));
        self.invoke(&invocation).await
    }

    /// Ids waiting on `rung` (due now or later) and claimed from it.
    pub async fn rung_depth(&self, rung: &str) -> Result<(u64, u64), StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("ZCARD").arg(self.key(&queue_key(rung)));
        pipe.cmd("ZCARD")
            .arg(self.key(&format!("fqinflight:{rung}")));
        self.query_pipe(&pipe).await
    }
}
