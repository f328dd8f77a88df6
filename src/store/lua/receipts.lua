-- Record a batch of delivery receipts, each O(1): the record is found by its uniqueKey
-- (`keyIndex`), the first time of each event is kept in the hash `receipts` (fields
-- `{id}:delivered`, `{id}:opened`; HSETNX, so a repeated event changes nothing), and
-- bits are set for the log's filters: `bit:receipt:opened`, and
-- `bit:receipt:delivered` for either event (an opened push reached the device). The
-- record's port counts `delivered` when that bit first turns on and `opened` when the
-- opened time is first set. The record itself (`rec:{id}`) is not rewritten: the sender
-- writes it whole, so a receipt kept there could be lost; readers overlay the hash.
-- The port is found by its bitmap `bit:worker:{port}` (a GETBIT each): the port the
-- batch's previous receipt came from first, then the sources the caller names (the
-- configured ports and API keys); only a push from none of them (a port since removed)
-- costs reading and decoding its record, and nothing is written back from that.
-- Needs counters.lua before it.
-- ARGV[1] prefix
-- ARGV[2] stats ttl    seconds a per-minute counter lives
-- ARGV[3] minute       the unix minute now (the minute counter receipts count in)
-- ARGV[4] n            receipts in the batch
-- ARGV[5] ns           sources to look a push's port up in
-- Then ns sources, then n receipts, three each: uniqueKey, event (`delivered` |
-- `opened`), at (unix ms).
-- Returns per receipt, in input order: 1 recorded, 2 that event was already recorded
-- (ignored), 0 no record has that uniqueKey.
local p, ttl, minute = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local n, ns = tonumber(ARGV[4]), tonumber(ARGV[5])
local out, changed = {}, {}
local key_index, receipts, worker_bits = p .. 'keyIndex', p .. 'receipts', p .. 'bit:worker:'
local delivered_bits, opened_bits = p .. 'bit:receipt:delivered', p .. 'bit:receipt:opened'
local last
-- The port push `id` arrived on; nil when no port's bit is set and its record is gone.
-- (A flush deletes keys in batches: a receipt arriving meanwhile may find a bit whose
-- record is already gone, and is recorded; the flush removes it with the rest.)
local function port_of(id)
  if last and redis.call('GETBIT', worker_bits .. last, id) == 1 then return last end
  for s = 6, 5 + ns do
    if ARGV[s] ~= last and redis.call('GETBIT', worker_bits .. ARGV[s], id) == 1 then
      return ARGV[s]
    end
  end
  local text = redis.call('GET', p .. 'rec:' .. id)
  if not text then return nil end
  local ok, rec = pcall(cjson.decode, text)
  return ok and type(rec['worker']) == 'string' and rec['worker'] or ''
end
local i = 6 + ns
for r = 1, n do
  local key, event, at = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  i = i + 3
  local id = redis.call('HGET', key_index, key)
  local worker = id and port_of(id)
  if not worker then
    out[#out + 1] = 0
  elseif redis.call('HSETNX', receipts, id .. ':' .. event, at) == 0 then
    out[#out + 1] = 2
  else
    local was = redis.call('SETBIT', delivered_bits, id, 1)
    if event == 'opened' then
      redis.call('SETBIT', opened_bits, id, 1)
    end
    if worker ~= '' then
      last = worker
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
