-- Claim one fallback rung's due records for sending, under a lease: the same discipline
-- as claim.lua for pushes. First the rung's expired leases (a sender that died mid-send)
-- go back to its queue `fq:{rung}`; then up to `max` ids due by `now` move to
-- `fqinflight:{rung}`, scored by the lease, as many as the rung's token bucket holds
-- (`fpace:{rung}`, shared by every node: the rung's `rate` holds for the cluster). A due
-- id whose record is gone is dropped. Needs pace.lua before it.
-- ARGV[1] prefix
-- ARGV[2] rung         the rung's name
-- ARGV[3] now          unix ms
-- ARGV[4] lease until  unix ms; the claim's lease, which its outcome must name
-- ARGV[5] max          most ids to claim
-- ARGV[6] rate         sends a second, 0 = no bucket
-- ARGV[7] burst        the bucket's capacity
-- Returns {wait ms, id, record, id, record, ...}: wait > 0 when the bucket held back ids
-- that are due (claim again after that long), else 0.
local p, rung, now, lease, max = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local rate, burst = tonumber(ARGV[6]), tonumber(ARGV[7])
local q, inflight = p .. 'fq:' .. rung, p .. 'fqinflight:' .. rung
for _, id in ipairs(redis.call('ZRANGE', inflight, '-inf', now, 'BYSCORE', 'LIMIT', 0, 1000)) do
  redis.call('ZREM', inflight, id)
  redis.call('ZADD', q, now, id)
end
local out = {0}
if max <= 0 then return out end
local pace, tokens, clock = p .. 'fpace:' .. rung, max, 0
if rate > 0 then tokens, clock = bucket_read(pace, rate, burst) end
local got = 0
for _, id in ipairs(redis.call('ZRANGE', q, '-inf', now, 'BYSCORE', 'LIMIT', 0, math.min(max, math.floor(tokens)))) do
  redis.call('ZREM', q, id)
  local rec = redis.call('GET', p .. 'rec:' .. id)
  if rec then
    redis.call('ZADD', inflight, lease, id)
    out[#out + 1] = id
    out[#out + 1] = rec
    got = got + 1
  end
end
if rate > 0 then
  tokens = tokens - got
  bucket_write(pace, tokens, clock, rate, burst)
  if got < max and math.floor(tokens) < 1
      and #redis.call('ZRANGE', q, '-inf', now, 'BYSCORE', 'LIMIT', 0, 1) > 0 then
    out[1] = math.max(1, math.ceil((1 - tokens) * 1000 / rate))
  end
end
return out
