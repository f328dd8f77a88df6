-- Record a batch of delivery receipts, each O(1): the record is found by its uniqueKey
-- (`keyIndex`), the first time of each event is kept in the hash `receipts` (fields
-- `{id}:delivered`, `{id}:opened`; HSETNX, so a repeated event changes nothing), and
-- bits are set for the log's filters: `bit:receipt:opened`, and
-- `bit:receipt:delivered` for either event (an opened push reached the device). The
-- record's port counts `delivered` when that bit first turns on and `opened` when the
-- opened time is first set. The record itself (`rec:{id}`) is not rewritten: the sender
-- writes it whole, so a receipt kept there could be lost; readers overlay the hash.
-- Reading a record with cjson is safe here: nothing is written back from it. Needs
-- counters.lua before it.
-- ARGV[1] prefix
-- ARGV[2] stats ttl    seconds a per-minute counter lives
-- ARGV[3] minute       the unix minute now (the minute counter receipts count in)
-- ARGV[4] n            receipts in the batch
-- Then n receipts, three each: uniqueKey, event (`delivered` | `opened`), at (unix ms).
-- Returns per receipt, in input order: 1 recorded, 2 that event was already recorded
-- (ignored), 0 no record has that uniqueKey.
local p, ttl, minute, n = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local out, changed = {}, {}
local i = 5
for r = 1, n do
  local key, event, at = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  i = i + 3
  local id = redis.call('HGET', p .. 'keyIndex', key)
  local text = id and redis.call('GET', p .. 'rec:' .. id)
  if not text then
    out[#out + 1] = 0
  elseif redis.call('HSETNX', p .. 'receipts', id .. ':' .. event, at) == 0 then
    out[#out + 1] = 2
  else
    local ok, rec = pcall(cjson.decode, text)
    local worker = ok and type(rec['worker']) == 'string' and rec['worker'] or nil
    local was = redis.call('SETBIT', p .. 'bit:receipt:delivered', id, 1)
    if event == 'opened' then
      redis.call('SETBIT', p .. 'bit:receipt:opened', id, 1)
    end
    if worker then
      local minute_key, total_key = 'stats:' .. worker .. ':' .. minute, 'stats:' .. worker .. ':total'
      if was == 0 then count(minute_key, total_key, 'delivered') end
      if event == 'opened' then count(minute_key, total_key, 'opened') end
    end
    changed[#changed + 1] = id
    out[#out + 1] = 1
  end
end
flush(p, ttl, 'receipt', changed)
return out
