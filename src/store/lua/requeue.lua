-- Replace a record that is neither queued nor in flight, if it is still exactly what
-- the caller read (compare and set), moving its status bit and, with a due time,
-- queueing it; announces it as `requeue`.
-- ARGV[1] prefix
-- ARGV[2] id
-- ARGV[3] expected    the record's JSON as the caller read it
-- ARGV[4] new         the record's JSON to store
-- ARGV[5] old status
-- ARGV[6] new status
-- ARGV[7] due         unix ms to send at, "" = not queued
-- Returns 1 applied, 0 changed meanwhile (or queued or in flight).
local p, id, expected, new, old, status, due = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
if redis.call('GET', p .. 'rec:' .. id) ~= expected then return 0 end
if redis.call('ZSCORE', p .. 'inflight', id) or redis.call('ZSCORE', p .. 'due', id) then return 0 end
redis.call('SET', p .. 'rec:' .. id, new)
if old ~= status then
  redis.call('SETBIT', p .. 'bit:status:' .. old, id, 0)
  redis.call('SETBIT', p .. 'bit:status:' .. status, id, 1)
end
if due ~= '' then
  redis.call('ZADD', p .. 'due', due, id)
end
redis.call('PUBLISH', p .. 'events', '{"event":"requeue","ids":[' .. id .. ']}')
return 1
