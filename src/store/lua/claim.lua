-- Claim due records of one app for sending, under a lease, paced by the app's token
-- bucket. First expired leases (a sender that died mid-send) go back to their queues.
-- Then: urgent ids first, as many as the bucket holds; normal and bulk ids share what is
-- left above the urgent reserve, normal taking `share` of every `round` slots while both
-- have ids due (the turn is kept in `pace:{app}`, so single-slot claims keep the ratio);
-- a lane with nothing due leaves its slots to the other. A due id whose record is gone
-- (retention) is dropped from its queue. Needs queue.lua and pace.lua (the bucket, shared
-- by every node claiming for the app) before it.
-- ARGV[1] prefix
-- ARGV[2] app
-- ARGV[3] now          unix ms (this node's clock; due scores are unix ms)
-- ARGV[4] lease until  unix ms; the claim's lease, which its outcome must name
-- ARGV[5] max          most ids to claim
-- ARGV[6] rate         tokens a second, 0 = no bucket
-- ARGV[7] burst        the bucket's capacity
-- ARGV[8] reserve      tokens normal and bulk leave for urgent
-- ARGV[9] share        normal's slots...
-- ARGV[10] round       ...of every round
-- Returns {wait ms, id, record, id, record, ...}: wait > 0 when the bucket held back ids
-- that are due (claim again after that long), else 0.
local p, app, now, lease = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local max, rate, burst, reserve = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local share, round = tonumber(ARGV[9]), tonumber(ARGV[10])
local q = p .. 'due:' .. app .. ':'
local expired = redis.call('ZRANGE', p .. 'inflight', '-inf', now, 'BYSCORE', 'LIMIT', 0, 1000)
for _, id in ipairs(expired) do
  redis.call('ZREM', p .. 'inflight', id)
  local text = redis.call('GET', p .. 'rec:' .. id)
  if text then
    local ok, rec = pcall(cjson.decode, text)
    redis.call('ZADD', queue_of(p, ok and rec or nil), now, id)
  end
end
local out = {0}
local function take(lane, n)
  if n <= 0 then return 0 end
  local got = 0
  local key = q .. lane
  for _, id in ipairs(redis.call('ZRANGE', key, '-inf', now, 'BYSCORE', 'LIMIT', 0, n)) do
    redis.call('ZREM', key, id)
    local rec = redis.call('GET', p .. 'rec:' .. id)
    if rec then
      redis.call('ZADD', p .. 'inflight', lease, id)
      out[#out + 1] = id
      out[#out + 1] = rec
      got = got + 1
    end
  end
  return got
end
local function waiting(lane)
  return #redis.call('ZRANGE', q .. lane, '-inf', now, 'BYSCORE', 'LIMIT', 0, 1) > 0
end
local pace = p .. 'pace:' .. app
local tokens, clock = max, 0
if rate > 0 then tokens, clock = bucket_read(pace, rate, burst) end
local urgent = take('urgent', math.min(max, math.floor(tokens)))
local budget = max - urgent
if rate > 0 then budget = math.min(budget, math.floor(tokens - urgent - reserve)) end
local turn = tonumber(redis.call('HGET', pace, 'turn') or '0')
local want_normal, want_bulk = 0, 0
for slot = 0, budget - 1 do
  if (turn + slot) % round < share then
    want_normal = want_normal + 1
  else
    want_bulk = want_bulk + 1
  end
end
local normal = take('normal', want_normal)
local bulk = take('bulk', want_bulk + want_normal - normal)
if bulk < want_bulk and normal == want_normal then
  normal = normal + take('normal', want_bulk - bulk)
end
if normal + bulk > 0 then
  redis.call('HSET', pace, 'turn', (turn + normal + bulk) % round)
end
if rate > 0 then
  tokens = tokens - urgent - normal - bulk
  bucket_write(pace, tokens, clock, rate, burst)
  local short = nil
  if urgent < max and math.floor(tokens) < 1 and waiting('urgent') then
    short = 1 - tokens
  elseif urgent + normal + bulk < max and math.floor(tokens - reserve) < 1
      and (waiting('normal') or waiting('bulk')) then
    short = reserve + 1 - tokens
  end
  if short then out[1] = math.max(1, math.ceil(short * 1000 / rate)) end
end
return out
