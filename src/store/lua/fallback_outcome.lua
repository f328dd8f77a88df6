-- Write the outcomes of fallback rung attempts, each only while its claim's lease still
-- holds the record in `fqinflight:{rung}` (fencing, as outcome.lua does for pushes). Sets
-- the record, moves its `bit:fallback:{rung}:{outcome}` bit, queues a retry on the same
-- rung or the push on its next rung (`fq:{next}`), in one atomic step.
-- ARGV[1] prefix
-- ARGV[2] n            outcomes in the batch
-- ARGV[3] now          unix ms: when a next rung is due
-- Then n outcomes, seven each:
--   id
--   lease              the lease the record was claimed under (unix ms)
--   rung               the rung's name
--   record             the whole record as it must now be stored (compact form)
--   outcome            sent | retrying | failed | expired
--   retry at           unix ms to try this rung again, "" = none
--   next rung          the rung to queue it on now, "" = none
-- Returns 1 (applied) or 0 (lease lost) per outcome, in input order.
local p, n, now = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local outcomes = {'sent', 'retrying', 'failed', 'expired'}
local out = {}
local i = 4
for r = 1, n do
  local id, lease, rung, rec = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local outcome, retry_at, next_rung = ARGV[i + 4], ARGV[i + 5], ARGV[i + 6]
  i = i + 7
  local inflight = p .. 'fqinflight:' .. rung
  local held = redis.call('ZSCORE', inflight, id)
  if held and tonumber(held) == tonumber(lease) then
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
  else
    out[#out + 1] = 0
  end
end
return out
