-- Claim due records for sending under a lease: first return expired leases (a sender
-- that died mid-send) to `due`, then move up to max ids due by now from `due` to
-- `inflight`, scored by the lease. A due id whose record is gone (retention) is
-- dropped from the queue.
-- ARGV[1] prefix
-- ARGV[2] now          unix ms
-- ARGV[3] lease until  unix ms; the claim's lease, which its outcome must name
-- ARGV[4] max          most ids to claim
-- Returns {id, record JSON, id, record JSON, ...} for the claimed records.
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
