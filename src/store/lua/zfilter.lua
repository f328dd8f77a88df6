-- One page of a zset index's ids within [lo, hi] that are set in every filter bitmap
-- (status, app, lane, receipt) and in none of the NOT bitmaps: walks the zset in
-- chunks of 1,000, at most budget ids, so a filter over a huge index stops (and says
-- so) instead of stalling Redis.
-- ARGV[1] zset key      the index (`idx:{field}:{value}`, score = id)
-- ARGV[2] lo            lowest id
-- ARGV[3] hi            highest id
-- ARGV[4] newest first  1 = walk down from hi, 0 = up from lo
-- ARGV[5] offset        matching ids to skip
-- ARGV[6] count         most ids to return
-- ARGV[7] budget        most zset ids to walk
-- ARGV[8] not count     how many of the bitmap keys that follow, counted from the
--                       last, an id must NOT be set in
-- ARGV[9] bitmap key    then further bitmap keys an id must be set in too, then the
--                       NOT ones
-- Returns {found, scanned, exhausted (0/1), id, id, ...}.
local zkey, lo, hi = ARGV[1], ARGV[2], ARGV[3]
local rev, offset, count, budget = ARGV[4] == '1', tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local nots = tonumber(ARGV[8])
local bkeys, nkeys = {}, {}
for i = 9, #ARGV - nots do bkeys[#bkeys + 1] = ARGV[i] end
for i = #ARGV - nots + 1, #ARGV do nkeys[#nkeys + 1] = ARGV[i] end
local function admitted(id)
  for _, bkey in ipairs(bkeys) do
    if redis.call('GETBIT', bkey, id) == 0 then return false end
  end
  for _, nkey in ipairs(nkeys) do
    if redis.call('GETBIT', nkey, id) == 1 then return false end
  end
  return true
end
local found, scanned, ids = 0, 0, {}
local exhausted = 0
while scanned < budget do
  local chunk
  if rev then
    chunk = redis.call('ZRANGE', zkey, hi, lo, 'BYSCORE', 'REV', 'LIMIT', scanned, 1000)
  else
    chunk = redis.call('ZRANGE', zkey, lo, hi, 'BYSCORE', 'LIMIT', scanned, 1000)
  end
  for _, id in ipairs(chunk) do
    if admitted(id) then
      if found >= offset and #ids < count then ids[#ids + 1] = id end
      found = found + 1
    end
  end
  scanned = scanned + #chunk
  if #chunk < 1000 then exhausted = 1 break end
end
local out = {found, scanned, exhausted}
for _, id in ipairs(ids) do out[#out + 1] = id end
return out
