//! The delivery side of the store: claiming due records under a lease, writing each
//! send's outcome, and the list of dead registration tokens.
//!
//! A record in `inflight` belongs to the sender that claimed it until its lease
//! (the zset score, unix ms) expires; only that sender writes the record, and its
//! write is refused once the lease has moved on (fencing). An expired lease returns
//! the id to `due`, so a sender that dies mid-send loses nothing.

use serde_json::Value;

use super::{Store, StoreError};
use crate::push::Status;

/// A record taken from `due` for sending.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: u64,
    /// The lease this claim holds (unix ms); the outcome must name it.
    pub lease: i64,
    pub record: Value,
}

/// What one send attempt changed on a record.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub id: u64,
    pub lease: i64,
    /// The whole record as it must now be stored.
    pub record: Value,
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
        let mut invocation = self.claim.prepare_invoke();
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
        let mut invocation = self.finish.prepare_invoke();
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
        let applied: Vec<i64> = self.invoke(&invocation).await?;
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

/// ARGV: prefix, now, lease_until, max. Returns id, record JSON pairs.
/// A due id whose record is gone (retention) is dropped from the queue.
pub(super) const CLAIM_LUA: &str = r#"
local p, now, lease, max = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local expired = redis.call('ZRANGE', p .. 'inflight', '-inf', now, 'BYSCORE', 'LIMIT', 0, 1000)
for _, id in ipairs(expired) do
  redis.call('ZREM', p .. 'inflight', id)
  redis.call('ZADD', p .. 'due', now, id)
end
local out = {}
local ids = redis.call('ZRANGE', p .. 'due', '-inf', now, 'BYSCORE', 'LIMIT', 0, max)
for _, id in ipairs(ids) do
  redis.call('ZREM', p .. 'due', id)
  local rec = redis.call('GET', p .. 'rec:' .. id)
  if rec then
    redis.call('ZADD', p .. 'inflight', lease, id)
    out[#out + 1] = id
    out[#out + 1] = rec
  end
end
return out
"#;

/// ARGV: prefix, n, stats ttl; per outcome: id, lease, record JSON, old status,
/// new status, retry-at ("" = none), delivered (0/1), minute stats key, total stats key.
/// Returns 1 (applied) or 0 (lease lost) per outcome. Counters are summed per batch
/// (one HINCRBY per key and status, one EXPIRE per minute key), not per outcome.
pub(super) const FINISH_LUA: &str = concat!(
    counters_lua!(),
    r#"
local p, n, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
local changed = {}
local i = 4
for r = 1, n do
  local id, lease, rec = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local old, new, retry_at, delivered = ARGV[i + 3], ARGV[i + 4], ARGV[i + 5], ARGV[i + 6]
  local minute_key, total_key = ARGV[i + 7], ARGV[i + 8]
  i = i + 9
  local held = redis.call('ZSCORE', p .. 'inflight', id)
  if held and tonumber(held) == tonumber(lease) then
    redis.call('SET', p .. 'rec:' .. id, rec)
    redis.call('ZREM', p .. 'inflight', id)
    if old ~= new then
      redis.call('SETBIT', p .. 'bit:status:' .. old, id, 0)
      redis.call('SETBIT', p .. 'bit:status:' .. new, id, 1)
    end
    if delivered == '1' then
      redis.call('SETBIT', p .. 'bit:fcm_send_yn:N', id, 0)
      redis.call('SETBIT', p .. 'bit:fcm_send_yn:Y', id, 1)
    end
    if retry_at ~= '' then
      redis.call('ZADD', p .. 'due', retry_at, id)
    end
    count(minute_key, total_key, new)
    changed[#changed + 1] = id
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
flush(p, ttl, 'outcome', changed)
return out
"#
);
