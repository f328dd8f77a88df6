-- One page of a zset index's ids within [lo, hi] whose status bit is set: walks the
-- zset in chunks of 1,000, at most budget ids, so a filter over a huge index stops
-- (and says so) instead of stalling Redis.
-- ARGV[1] zset key      the index (`idx:{field}:{value}`, score = id)
-- ARGV[2] bitmap key    the status bitmap (`bit:status:{status}`)
-- ARGV[3] lo            lowest id
-- ARGV[4] hi            highest id
-- ARGV[5] newest first  1 = walk down from hi, 0 = up from lo
-- ARGV[6] offset        matching ids to skip
-- ARGV[7] count         most ids to return
-- ARGV[8] budget        most zset ids to walk
-- Returns {found, scanned, exhausted (0/1), id, id, ...}.
local zkey, bkey, lo, hi = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local rev, offset, count, budget = ARGV[5] == '1', tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
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
    if redis.call('GETBIT', bkey, id) == 1 then
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
