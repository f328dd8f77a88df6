-- Shared piece, prepended to the claim scripts that pace by a token bucket (claim.lua for
-- an app, fallback_claim.lua for a fallback rung): the bucket lives in a hash (`tokens`,
-- `at`), refills at `rate` a second up to `burst` on Redis's clock (TIME), so every node
-- claiming draws on one bucket: over any T seconds at most burst + rate * T are claimed.

-- The tokens in the bucket at `key` now, and Redis's clock (unix ms).
local function bucket_read(key, rate, burst)
  local t = redis.call('TIME')
  local clock = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local held = redis.call('HMGET', key, 'tokens', 'at')
  local tokens = tonumber(held[1]) or burst
  local at = tonumber(held[2]) or clock
  if clock > at then tokens = math.min(burst, tokens + (clock - at) * rate / 1000) end
  return tokens, clock
end
-- Keep `tokens` left at `clock`; an idle bucket refills within burst / rate seconds, and
-- the hash is kept a little longer.
local function bucket_write(key, tokens, clock, rate, burst)
  redis.call('HSET', key, 'tokens', string.format('%.4f', tokens), 'at', clock)
  redis.call('PEXPIRE', key, math.ceil(burst * 1000 / rate) + 60000)
end
