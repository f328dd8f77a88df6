-- Write the outcomes of send attempts, each only while its claim's lease still holds
-- the record (its `inflight` score is still the lease): a sender whose lease expired
-- and whose record was claimed again writes nothing (fencing). The record is replaced
-- only if it is still the text the attempt was claimed with: a legal hold placed, or a
-- fallback rung's outcome written, while the push was in flight is not overwritten; the
-- caller applies its attempt to the new text and writes again. Moves the status and
-- fcm_send_yn bits, queues a retry, counts per port and minute, and, for a push that
-- ends unreached with a fallback ladder, queues it on the first rung in the same step (so
-- a crash cannot lose the fallback). Needs counters.lua before it.
-- ARGV[1] prefix
-- ARGV[2] n            outcomes in the batch
-- ARGV[3] stats ttl    seconds a per-minute counter lives
-- Then n outcomes, thirteen each:
--   id
--   lease              the lease the record was claimed under (unix ms)
--   base               the stored record the attempt was claimed with
--   record             the whole record's JSON as it must now be stored
--   old status, new status
--   retry at           unix ms to try again, "" = none
--   queue              its due queue under the prefix, `due:{app}:{lane}`
--   delivered          1 if FCM accepted it (fcm_send_yn N -> Y), else 0
--   minute key         `stats:{port}:{unix minute}`
--   total key          `stats:{port}:total`
--   fallback queue     `fq:{rung}` to queue it on now (its ladder's first rung), "" = none
--   watch at           unix ms it was sent, to wait for its receipt in `fallback:watch`,
--                      "" = not watched
-- Returns 1 (applied), 0 (lease lost) or 2 (the record changed since `base`: nothing
-- written, the lease still held) per outcome, in input order.
local p, n, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
local changed = {}
local i = 4
for r = 1, n do
  local id, lease, base, rec = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local old, new, retry_at, queue = ARGV[i + 4], ARGV[i + 5], ARGV[i + 6], ARGV[i + 7]
  local delivered, minute_key, total_key = ARGV[i + 8], ARGV[i + 9], ARGV[i + 10]
  local fallback_queue, watch_at = ARGV[i + 11], ARGV[i + 12]
  i = i + 13
  local held = redis.call('ZSCORE', p .. 'inflight', id)
  if not (held and tonumber(held) == tonumber(lease)) then
    out[#out + 1] = 0
  elseif redis.call('GET', p .. 'rec:' .. id) ~= base then
    out[#out + 1] = 2
  else
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
      redis.call('ZADD', p .. queue, retry_at, id)
    end
    if fallback_queue ~= '' then
      local t = redis.call('TIME')
      local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
      redis.call('ZADD', p .. fallback_queue, 'NX', string.format('%d', ms), id)
    end
    if watch_at ~= '' then
      redis.call('ZADD', p .. 'fallback:watch', watch_at, id)
    end
    count(minute_key, total_key, new)
    changed[#changed + 1] = id
    out[#out + 1] = 1
  end
end
flush(p, ttl, 'outcome', changed)
return out
