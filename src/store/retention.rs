//! Retention: records older than the cut-off leave Redis with every index entry that
//! points at them, in small batches (one short Lua call each), oldest first. A record
//! with `legal_hold: true` stays. A bitmap left without a set bit is deleted at the end
//! of the pass (its size is the highest id / 8 however empty it is).

use serde_json::Value;

use super::{Store, StoreError};
use crate::push::fields::{MESSAGE_BITMAP_FIELDS, OWN_BITMAP_FIELDS, ZSET_FIELDS};

/// What one pass removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub removed: u64,
    pub held: u64,
    /// Bitmaps deleted because no record is left in them.
    pub emptied_bitmaps: u64,
}

impl Store {
    /// Remove records received before `cutoff_ms`, at most `batch` ids per round trip,
    /// until none is left. Ids below `retention:next` have been looked at already.
    pub async fn prune(&self, cutoff_ms: i64, batch: u64) -> Result<Pruned, StoreError> {
        let last_old = self.id_window(None, Some(cutoff_ms - 1)).await?.hi;
        let mut total = Pruned::default();
        loop {
            let mut invocation = self.prune.prepare_invoke();
            invocation
                .arg(&self.prefix)
                .arg(last_old)
                .arg(batch)
                .arg(ZSET_FIELDS.join(","))
                .arg(OWN_BITMAP_FIELDS.join(","))
                .arg(MESSAGE_BITMAP_FIELDS.join(","));
            let (removed, held, more): (u64, u64, u8) = self.invoke(&invocation).await?;
            total.removed += removed;
            total.held += held;
            if more == 0 {
                // Also finishes what an interrupted pass left in `retention:touched`.
                total.emptied_bitmaps = self.drop_emptied_bitmaps().await?;
                return Ok(total);
            }
        }
    }

    /// Set or clear `legal_hold` on a record (retrying while the sender changes it).
    /// Returns the record as stored, or None when there is no such record.
    pub async fn set_hold(&self, id: u64, hold: bool) -> Result<Option<Value>, StoreError> {
        for _ in 0..10 {
            let Some((text, mut record)) = self.record_text(id).await? else {
                return Ok(None);
            };
            if let Some(map) = record.as_object_mut() {
                if hold {
                    map.insert("legal_hold".into(), true.into());
                } else {
                    map.remove("legal_hold");
                }
            }
            let mut invocation = self.swap.prepare_invoke();
            invocation
                .arg(self.key(&format!("rec:{id}")))
                .arg(&text)
                .arg(super::record::encode(&record));
            let applied: i64 = self.invoke(&invocation).await?;
            if applied == 1 {
                return Ok(Some(record));
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Err(StoreError::Protocol(format!(
            "record {id} kept changing; try again"
        )))
    }
}

/// ARGV: record key, expected JSON, new JSON. Replaces only an unchanged record.
pub(super) const SWAP_LUA: &str = r#"
if redis.call('GET', ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('SET', ARGV[1], ARGV[3])
return 1
"#;

/// ARGV: prefix, last id to prune, batch, zset fields (comma list), pushgate's own
/// bitmap fields, message bitmap fields (in a bitmap or a zset, see `bitmaps`).
/// Walks ids from `retention:next`; removes each record and its index entries unless
/// held, and adds the bitmaps it cleared bits in to `retention:touched`. Returns
/// removed, held, more (1 when ids are left below the limit).
/// Reading a record with cjson is safe here: nothing is written back from it.
pub(super) const PRUNE_LUA: &str = r#"
local p, last, batch = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local zfields, bfields, afields = {}, {}, {}
for f in string.gmatch(ARGV[4], '[^,]+') do zfields[#zfields + 1] = f end
for f in string.gmatch(ARGV[5], '[^,]+') do bfields[#bfields + 1] = f end
for f in string.gmatch(ARGV[6], '[^,]+') do afields[#afields + 1] = f end
local next_id = tonumber(redis.call('GET', p .. 'retention:next') or '1')
local removed, held = 0, 0
local touched = {}
local stop = math.min(last, next_id + batch - 1)
local function unindex(f, v, id)
  redis.call('ZREM', p .. 'idx:' .. f .. ':' .. v, id)
  local bucket = p .. 'ix:' .. f .. ':' .. string.sub(redis.sha1hex(v), 1, 4)
  if redis.call('HGET', bucket, v) == tostring(id) then
    redis.call('HDEL', bucket, v)
  end
end
-- Only an existing bitmap: SETBIT on a missing key would create id/8 zero bytes.
local function unset(f, v, id)
  local suffix = 'bit:' .. f .. ':' .. v
  if redis.call('EXISTS', p .. suffix) == 1 then
    redis.call('SETBIT', p .. suffix, id, 0)
    touched[suffix] = true
  end
end
for id = next_id, stop do
  local text = redis.call('GET', p .. 'rec:' .. id)
  if text then
    local ok, rec = pcall(cjson.decode, text)
    if ok and rec['legal_hold'] == true then
      held = held + 1
    elseif ok then
      for _, f in ipairs(zfields) do
        local v = rec[f]
        if type(v) == 'string' and v ~= '' then unindex(f, v, id) end
      end
      -- The compact form leaves fcm_send_yn out while it is N.
      if rec['fcm_send_yn'] == nil then rec['fcm_send_yn'] = 'N' end
      for _, f in ipairs(bfields) do
        local v = rec[f]
        if type(v) == 'string' and v ~= '' then unset(f, v, id) end
      end
      for _, f in ipairs(afields) do
        local v = rec[f]
        if type(v) == 'string' and v ~= '' then
          unset(f, v, id)
          unindex(f, v, id)
        end
      end
      if type(rec['uniqueKey']) == 'string' then
        redis.call('HDEL', p .. 'keyIndex', rec['uniqueKey'])
      end
      redis.call('ZREM', p .. 'due', id)
      redis.call('ZREM', p .. 'inflight', id)
      redis.call('DEL', p .. 'rec:' .. id)
      removed = removed + 1
    end
  end
end
if stop >= next_id then
  redis.call('SET', p .. 'retention:next', stop + 1)
end
for suffix, _ in pairs(touched) do
  redis.call('SADD', p .. 'retention:touched', suffix)
end
local more = 0
if stop < last then more = 1 end
return {removed, held, more}
"#;
