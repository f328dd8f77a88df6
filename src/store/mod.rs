//! Every Redis command pushgate sends, and the key layout. Only this module talks to
//! Redis; every Lua script it runs is a file in `lua/`, registered in `scripts.rs`.
//!
//! Layout of the module:
//! - `mod.rs`: [`Store`] (the handle), key building, the query / invoke plumbing every
//!   room uses, and the small reads (a record, ids, bits, counts).
//! - `error.rs`: [`StoreError`], and which failures are worth trying again.
//! - `link.rs`: the connection to the master, fixed ([`RedisTarget::Direct`]) or
//!   followed through Sentinel.
//! - `scripts.rs` and `lua/`: the Lua scripts, one file each, built once.
//! - `commit.rs`: writing new records (dedupe, ids, indexes, fences) and the
//!   group-commit writer ([`Committer`]).
//! - `record.rs`: the compact form of a stored record (`rec:{id}`).
//! - `delivery.rs`: claiming due records under a lease, writing outcomes, dead tokens.
//! - `fallback.rs`: the fallback rungs' queues (claim, outcome, the receipt-timeout scan).
//! - `log.rs`: the push log as the console reads and searches it; resend; flush.
//! - `bitmaps.rs`: which message field values earn a bitmap index.
//! - `retention.rs`: removing old records with their index entries; legal hold.
//! - `receipts.rs`: delivery receipts (the `receipts` hash every record read overlays).
//! - `stats.rs`: per-port counters. `audit.rs`: the audit stream.
//! - `console.rs`: console sessions and the sign-in throttle.
//! - `consent.rs`: the customers' ad consents and the index by consent date.
//! - `cluster.rs`: port leases, node heartbeats, operators' port switches, topology.
//! - `managed.rs`: the `redis-server` pushgate starts itself (`[redis] managed`).
//!
//! Key layout (all under the configured prefix):
//! - `seq`: record id counter; ids are dense and grow with arrival.
//! - `rec:{id}`: the record as one compact JSON string.
//! - `keyIndex`: hash `uniqueKey` → id, the idempotency check.
//! - `idx:{field}:{value}`: zset of ids (score = id) for a high-cardinality field's value
//!   held by two records or more; a value held by one record is a field of the hash
//!   `ix:{field}:{bucket}` (value → id, bucket = first 4 hex digits of its SHA-1), which
//!   costs a fraction of a key of its own. The rule is written once, in `lua/bucket.lua`.
//! - `bit:{field}:{value}`: bitmap with bit `id` set, for low-cardinality fields; a
//!   message field's value gets one only once admitted (see [`bitmaps`]), and is indexed
//!   like a high-cardinality value (`ix:`, `idx:`) until then.
//! - `bitvals:{field}`: set of the values of a message field that earned a bitmap (the cap).
//! - `retention:next`: the lowest id retention has not looked at; `retention:touched`:
//!   bitmaps it cleared bits in, to delete those left empty.
//! - `due`: zset of ids to send, scored by unix ms; `inflight`: zset of claimed ids,
//!   scored by their lease's end (unix ms).
//! - `receipts`: hash `{id}:delivered` / `{id}:opened` → unix ms, the first receipt
//!   of each event; `bit:receipt:delivered` (either receipt came) and
//!   `bit:receipt:opened` index them for the log.
//! - `fq:{rung}`: zset of ids due on a fallback rung (unix ms); `fqinflight:{rung}`: its
//!   claimed ids, scored by their lease's end; `fallback:watch`: ids sent with a fallback
//!   ladder, scored by when, until their receipt timeout; `bit:fallback:{rung}:{outcome}`:
//!   where each push stands on each rung; `fpace:{rung}`: the rung's token bucket.
//! - `pace:{app}`: an app's token bucket (tokens, when, and the normal/bulk turn).
//! - `stats:{port}:{unix minute}` / `stats:{port}:total`: counters for the console.
//! - `events`: pub/sub channel announcing stored ids.
//! - `consent`: hash csno → `ad|night` consents; `consent:ad`: zset of csno with ad
//!   consent given, scored by when (unix ms). A flush keeps both.
//!
//! Nothing here reads a whole list or scans keys: each operation is O(log N + page).

mod audit;
pub mod bitmaps;
pub mod cluster;
mod commit;
pub mod consent;
pub mod console;
pub mod delivery;
mod error;
pub mod fallback;
mod link;
pub mod log;
pub mod managed;
mod rebase;
pub mod receipts;
pub mod record;
pub mod retention;
mod scripts;
mod stats;

use std::sync::Arc;
use std::time::Duration;

use crate::push::Record;
use link::Link;
use redis::aio::ConnectionManager;
use scripts::scripts;

pub use commit::{Committer, Fence, NewRecord, Stored, scalar_text};
pub use error::StoreError;
pub use link::RedisTarget;
pub use stats::PortCounts;

/// Handle to Redis. Cheap to clone: clones share one multiplexed connection that
/// reconnects by itself after Redis restarts (and follows Sentinel to a new master).
#[derive(Clone)]
pub struct Store {
    link: Arc<Link>,
    prefix: String,
    timeout: Duration,
    stats_ttl_secs: u64,
    /// Writes wait for `WAIT ack_replicas` (0 = do not wait).
    ack_replicas: u32,
    ack_replicas_timeout_ms: u64,
    /// When a message field's value gets a bitmap.
    admission: Arc<bitmaps::Admission>,
}

impl Store {
    /// Connect to one Redis (lazily: a Redis that is down at start-up is retried on
    /// first use).
    pub fn open(
        url: &str,
        prefix: &str,
        timeout: Duration,
        stats_ttl_secs: u64,
    ) -> Result<Store, StoreError> {
        Store::open_target(
            RedisTarget::Direct(url.to_owned()),
            prefix,
            timeout,
            stats_ttl_secs,
        )
    }

    /// Connect to a fixed address or through Sentinel (lazily, either way).
    pub fn open_target(
        target: RedisTarget,
        prefix: &str,
        timeout: Duration,
        stats_ttl_secs: u64,
    ) -> Result<Store, StoreError> {
        let link = Arc::new(Link::new(target, timeout)?);
        link.watch();
        Ok(Store {
            link,
            prefix: prefix.to_owned(),
            timeout,
            stats_ttl_secs,
            ack_replicas: 0,
            ack_replicas_timeout_ms: 0,
            admission: Arc::new(bitmaps::Admission::default()),
        })
    }

    /// Where this store's Redis is.
    pub fn target(&self) -> &RedisTarget {
        self.link.target()
    }

    /// The master's address as last connected (no password), if known.
    pub fn master(&self) -> Option<String> {
        self.link.master()
    }

    /// The same store on a connection of its own (the group-commit writer's, so that
    /// its `WAIT`s hold up nobody else), acking only once `replicas` confirm a write.
    pub fn dedicated(&self, replicas: u32, timeout_ms: u64) -> Result<Store, StoreError> {
        let link = Arc::new(self.link.fresh(self.timeout)?);
        link.watch();
        Ok(Store {
            link,
            ack_replicas: replicas,
            ack_replicas_timeout_ms: timeout_ms,
            ..self.clone()
        })
    }

    /// A script and `WAIT ack_replicas` in one pipeline, so both run on one connection:
    /// `WAIT` then covers this write (on a new connection it would cover nothing). Too
    /// few replicas within the timeout is an error: the write may be lost in a failover.
    async fn invoke_replicated<T: redis::FromRedisValue>(
        &self,
        script: &redis::Script,
        invocation: &redis::ScriptInvocation<'_>,
        con: &mut ConnectionManager,
    ) -> Result<T, StoreError> {
        let mut pipe = redis::pipe();
        pipe.invoke_script(invocation)
            .cmd("WAIT")
            .arg(self.ack_replicas)
            .arg(self.ack_replicas_timeout_ms);
        let mut answer: Result<(T, u32), StoreError> = self.run(pipe.query_async(con)).await;
        if let Err(StoreError::Redis(e)) = &answer
            && e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
        {
            let _: String = self.run(script.load_async(con)).await?;
            answer = self.run(pipe.query_async(con)).await;
        }
        let (value, reached) = answer?;
        if reached < self.ack_replicas {
            crate::metrics::metrics().replication_timeouts.inc();
            return Err(StoreError::NotReplicated {
                reached,
                wanted: self.ack_replicas,
                timeout_ms: self.ack_replicas_timeout_ms,
            });
        }
        Ok(value)
    }

    async fn con(&self) -> Result<ConnectionManager, StoreError> {
        if let Some(con) = self.link.known() {
            return Ok(con);
        }
        tokio::time::timeout(self.timeout, self.link.connection())
            .await
            .map_err(|_| StoreError::Timeout(self.timeout))?
    }

    pub fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    async fn run<T, F>(&self, fut: F) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                self.link.failed();
                Err(e.into())
            }
            Err(_) => {
                self.link.failed();
                Err(StoreError::Timeout(self.timeout))
            }
        }
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        let mut con = self.con().await?;
        self.run(cmd.query_async(&mut con)).await
    }

    async fn query_pipe<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, StoreError> {
        let mut con = self.con().await?;
        self.run(pipe.query_async(&mut con)).await
    }

    /// Run a Lua script (EVALSHA, loading it first if Redis does not have it).
    async fn invoke<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        let mut con = self.con().await?;
        self.run(invocation.invoke_async(&mut con)).await
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        let _: String = self.query(&redis::cmd("PING")).await?;
        Ok(())
    }

    /// One record by id, as stored.
    pub async fn record(&self, id: u64) -> Result<Option<Record>, StoreError> {
        Ok(self.record_text(id).await?.map(|(_, record)| record))
    }

    /// Several records by id in one round trip (missing ones are skipped).
    pub async fn records(&self, ids: &[u64]) -> Result<Vec<Record>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids
            .iter()
            .map(|id| self.key(&format!("rec:{id}")))
            .collect();
        let mut pipe = redis::pipe();
        pipe.cmd("MGET")
            .arg(keys)
            .add_command(self.receipts_cmd(ids));
        let (texts, times): (Vec<Option<String>>, Vec<Option<i64>>) =
            self.query_pipe(&pipe).await?;
        texts
            .into_iter()
            .zip(receipts::receipts_from(&times))
            .filter_map(|(text, receipt)| Some((text?, receipt)))
            .map(|(text, receipt)| {
                let mut record = record::decode(&text)?;
                receipts::overlay(&mut record, receipt);
                Ok(record)
            })
            .collect()
    }

    pub async fn id_for_key(&self, unique_key: &str) -> Result<Option<u64>, StoreError> {
        self.query(redis::cmd("HGET").arg(self.key("keyIndex")).arg(unique_key))
            .await
    }

    /// The one record holding a value not (yet) shared by another (the `ix:` hash).
    pub async fn single_id(&self, field: &str, value: &str) -> Result<Option<u64>, StoreError> {
        let mut invocation = scripts().single.prepare_invoke();
        invocation.arg(&self.prefix).arg(field).arg(value);
        self.invoke(&invocation).await
    }

    /// Is record `id` indexed under the bitmap field `field == value`? Read from the
    /// value's bitmap, or from its zset/`ix:` index while it has not earned a bitmap.
    pub async fn has_bit(&self, field: &str, value: &str, id: u64) -> Result<bool, StoreError> {
        if bitmaps::is_message_bitmap_field(field) && !self.has_bitmap(field, value).await? {
            let score: Option<f64> = self
                .query(
                    redis::cmd("ZSCORE")
                        .arg(self.key(&format!("idx:{field}:{value}")))
                        .arg(id),
                )
                .await?;
            return Ok(score.is_some() || self.single_id(field, value).await? == Some(id));
        }
        self.bit_at(&self.key(&format!("bit:{field}:{value}")), id)
            .await
    }

    /// Records indexed under the bitmap field `field == value`: its bitmap's bits (O(N/8)
    /// bytes), or its zset/`ix:` index's size while it has not earned a bitmap.
    pub async fn count_bits(&self, field: &str, value: &str) -> Result<u64, StoreError> {
        if bitmaps::is_message_bitmap_field(field) && !self.has_bitmap(field, value).await? {
            let shared: u64 = self
                .query(redis::cmd("ZCARD").arg(self.key(&format!("idx:{field}:{value}"))))
                .await?;
            if shared > 0 {
                return Ok(shared);
            }
            return Ok(u64::from(self.single_id(field, value).await?.is_some()));
        }
        self.query(redis::cmd("BITCOUNT").arg(self.key(&format!("bit:{field}:{value}"))))
            .await
    }

    /// When record `id` is due (unix ms), if it is in its queue.
    pub async fn due_at(&self, id: u64) -> Result<Option<i64>, StoreError> {
        let Some((_, record)) = self.record_text(id).await? else {
            return Ok(None);
        };
        let score: Option<f64> = self
            .query(
                redis::cmd("ZSCORE")
                    .arg(self.key(&record.queue().due_key()))
                    .arg(id),
            )
            .await?;
        Ok(score.map(|s| s as i64))
    }

    /// The highest id handed out so far (0 when empty).
    pub async fn last_id(&self) -> Result<u64, StoreError> {
        let seq: Option<u64> = self.query(redis::cmd("GET").arg(self.key("seq"))).await?;
        Ok(seq.unwrap_or(0))
    }

    /// The record's stored text (what compare-and-set compares) and its parsed value.
    pub async fn record_text(&self, id: u64) -> Result<Option<(String, Record)>, StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("GET")
            .arg(self.key(&format!("rec:{id}")))
            .add_command(self.receipts_cmd(&[id]));
        let (text, times): (Option<String>, Vec<Option<i64>>) = self.query_pipe(&pipe).await?;
        let receipt = receipts::receipts_from(&times).pop().flatten();
        text.map(|t| {
            let mut value = record::decode(&t)?;
            receipts::overlay(&mut value, receipt);
            Ok((t, value))
        })
        .transpose()
    }

    /// Stored records (the `keyIndex` size).
    pub async fn record_count(&self) -> Result<u64, StoreError> {
        self.query(redis::cmd("HLEN").arg(self.key("keyIndex")))
            .await
    }

    /// Redis `INFO` for `sections`, as a map of its `key:value` lines.
    pub async fn info(
        &self,
        sections: &[&str],
    ) -> Result<std::collections::HashMap<String, String>, StoreError> {
        let text: String = self.query(redis::cmd("INFO").arg(sections)).await?;
        Ok(text
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
            .collect())
    }
}
