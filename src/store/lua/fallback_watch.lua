-- The receipt-timeout scan: pushes sent with a fallback ladder wait in `fallback:watch`
-- (scored by when they were sent). Those sent before `until` leave it; each without a
-- receipt is queued on its ladder's first rung (`fq:{rung}`). A receipt is the bit
-- `bit:receipt:delivered` (set by receipts.lua for a delivered or an opened receipt) or
-- a `receipt` on the stored record. O(log N + batch): only the oldest entries are read,
-- and a push's record only when it has no receipt bit.
-- ARGV[1] prefix
-- ARGV[2] until        unix ms: entries sent at or before this have timed out
-- ARGV[3] now          unix ms: when the first rung is due
-- ARGV[4] max          most entries looked at in this step
-- ARGV[5] trigger      1 = queue the ladder for those without a receipt, 0 = only trim
-- Returns {entries that left the watch list, pushes queued on their first rung}: a step
-- that took `max` entries may have left more behind.
local p, until_ms, now, max, trigger = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local watch = p .. 'fallback:watch'
local queued = 0
local due = redis.call('ZRANGE', watch, '-inf', until_ms, 'BYSCORE', 'LIMIT', 0, max)
if #due > 0 then redis.call('ZREM', watch, unpack(due)) end
for _, id in ipairs(due) do
  local text = trigger == '1' and redis.call('GETBIT', p .. 'bit:receipt:delivered', id) == 0
    and redis.call('GET', p .. 'rec:' .. id)
  if text then
    local ok, rec = pcall(cjson.decode, text)
    ok = ok and type(rec) == 'table'
    local receipt = ok and rec['receipt']
    local d = ok and rec['decision']
    local push = type(d) == 'table' and d['push']
    local ladder = type(push) == 'table' and push['fallback']
    if (receipt == nil or receipt == cjson.null) and type(ladder) == 'table'
        and type(ladder[1]) == 'string' then
      redis.call('ZADD', p .. 'fq:' .. ladder[1], 'NX', now, id)
      queued = queued + 1
    end
  end
end
return {#due, queued}
