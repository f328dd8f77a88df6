-- The first and last id received in a time range, and where retention stopped, in one
-- round trip: a binary search on `received_at` over the ids (which grow with time).
-- ARGV[1] prefix
-- ARGV[2] from  unix ms, inclusive; "" = open
-- ARGV[3] to    unix ms, inclusive; "" = open
-- Returns {first, last, floor}: first > last when no record is in range; floor is the
-- lowest id retention has not looked at (1 when it never ran).
local p, from, to = ARGV[1], ARGV[2], ARGV[3]
local last = tonumber(redis.call('GET', p .. 'seq') or '0')
-- Ids below retention:next were removed by retention (except held ones).
local floor = tonumber(redis.call('GET', p .. 'retention:next') or '1')
if from == '' and to == '' then
  return {1, last, floor}
end
local function at(id)
  -- A missing record (removed by retention) reads as the next one that exists.
  for probe = id, math.min(last, id + 64) do
    local rec = redis.call('GET', p .. 'rec:' .. probe)
    if rec then
      return tonumber(string.match(rec, '"received_at":(%-?%d+)'))
    end
  end
  return nil
end
-- first id with received_at >= t (last + 1 if none)
local function first_at_or_after(t)
  local lo, hi = floor, last + 1
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    local ts = at(mid)
    if ts == nil or ts >= t then hi = mid else lo = mid + 1 end
  end
  return lo
end
local first = 1
if from ~= '' then first = first_at_or_after(tonumber(from)) end
local after = last + 1
if to ~= '' then after = first_at_or_after(tonumber(to) + 1) end
return {first, after - 1, floor}
