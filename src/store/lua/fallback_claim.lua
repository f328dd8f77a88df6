-- Claim one fallback rung's due records for sending, under a lease: the same discipline
-- as claim.lua for pushes. First the rung's expired leases (a sender that died mid-send)
-- go back to its queue `fq:{rung}`; then up to `max` ids due by `now` move to
-- `fqinflight:{rung}`, scored by the lease. A due id whose record is gone is dropped.
-- ARGV[1] prefix
-- ARGV[2] rung         the rung's name
-- ARGV[3] now          unix ms
-- ARGV[4] lease until  unix ms; the claim's lease, which its outcome must name
-- ARGV[5] max          most ids to claim
-- Returns {id, record, id, record, ...}.
local p, rung, now, lease, max = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local q, inflight = p .. 'fq:' .. rung, p .. 'fqinflight:' .. rung
for _, id in ipairs(redis.call('ZRANGE', inflight, '-inf', now, 'BYSCORE', 'LIMIT', 0, 1000)) do
  redis.call('ZREM', inflight, id)
  redis.call('ZADD', q, now, id)
end
local out = {}
if max <= 0 then return out end
for _, id in ipairs(redis.call('ZRANGE', q, '-inf', now, 'BYSCORE', 'LIMIT', 0, max)) do
  redis.call('ZREM', q, id)
  local rec = redis.call('GET', p .. 'rec:' .. id)
  if rec then
    redis.call('ZADD', inflight, lease, id)
    out[#out + 1] = id
    out[#out + 1] = rec
  end
end
return out
