-- Write the outcomes of fallback rung attempts, each only while its claim's lease still
-- holds the record in `fqinflight:{rung}` (fencing, as outcome.lua does for pushes). Sets
-- the record, moves its `bit:fallback:{rung}:{outcome}` bit, queues a retry on the same
-- rung or the push on its next rung (`fq:{next}`), in one atomic step. The record is
-- replaced only if it is still the text the attempt started from: a push resent by an
-- operator (or given a receipt) meanwhile is not overwritten; the caller applies its
-- attempt to the new text and writes again.
-- ARGV[1] prefix
-- ARGV[2] n            outcomes in the batch
-- ARGV[3] now          unix ms: when a next rung is due
-- Then n outcomes, eight each:
--   id
--   lease              the lease the record was claimed under (unix ms)
--   rung               the rung's name
--   base               the stored record the attempt started from (compact form)
--   record             the whole record as it must now be stored (compact form)
--   outcome            sent | retrying | failed | expired
--   retry at           unix ms to try this rung again, "" = none
--   next rung          the rung to queue it on now, "" = none
-- Returns 1 (applied), 0 (lease lost) or 2 (the record changed since `base`: nothing
-- written, the lease still held) per outcome, in input order.
local p, n, now = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local outcomes = {'sent', 'retrying', 'failed', 'expired'}
local out = {}
local i = 4
for r = 1, n do
  local id, lease, rung, base = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local rec, outcome, retry_at, next_rung = ARGV[i + 4], ARGV[i + 5], ARGV[i + 6], ARGV[i + 7]
  i = i + 8
  local inflight = p .. 'fqinflight:' .. rung
  local held = redis.call('ZSCORE', inflight, id)
  if not (held and tonumber(held) == tonumber(lease)) then
    out[#out + 1] = 0
  elseif redis.call('GET', p .. 'rec:' .. id) ~= base then
    out[#out + 1] = 2
  else
    redis.call('SET', p .. 'rec:' .. id, rec)
    redis.call('ZREM', inflight, id)
    for _, o in ipairs(outcomes) do
      redis.call('SETBIT', p .. 'bit:fallback:' .. rung .. ':' .. o, id, o == outcome and 1 or 0)
    end
    if retry_at ~= '' then
      redis.call('ZADD', p .. 'fq:' .. rung, retry_at, id)
    end
    if next_rung ~= '' then
      redis.call('ZADD', p .. 'fq:' .. next_rung, 'NX', now, id)
    end
    out[#out + 1] = 1
  end
end
return out
