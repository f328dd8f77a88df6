-- Replace a record that is neither queued nor in flight, if it is still exactly what
-- the caller read (compare and set), moving its own bitmap bits (status, app, lane) and,
-- with a due time, queueing it; announces it as `requeue`.
-- ARGV[1] prefix
-- ARGV[2] id
-- ARGV[3] expected    the record's JSON as the caller read it
-- ARGV[4] new         the record's JSON to store
-- ARGV[5] old queue   the due queue it was in, `due:{app}:{lane}` ("" = none)
-- ARGV[6] new queue   the due queue to put it in
-- ARGV[7] due         unix ms to send at, "" = not queued
-- ARGV[8] n           how many bitmaps to clear its bit in; then those n bitmap keys
--                     under the prefix, then every bitmap key to set its bit in
-- Returns 1 applied, 0 changed meanwhile (or queued or in flight).
local p, id, expected, new = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local old_queue, queue, due, n = ARGV[5], ARGV[6], ARGV[7], tonumber(ARGV[8])
if redis.call('GET', p .. 'rec:' .. id) ~= expected then return 0 end
if redis.call('ZSCORE', p .. 'inflight', id) then return 0 end
if old_queue ~= '' and redis.call('ZSCORE', p .. old_queue, id) then return 0 end
redis.call('SET', p .. 'rec:' .. id, new)
for b = 9, 8 + n do
  redis.call('SETBIT', p .. ARGV[b], id, 0)
end
for b = 9 + n, #ARGV do
  redis.call('SETBIT', p .. ARGV[b], id, 1)
end
if due ~= '' then
  redis.call('ZADD', p .. queue, due, id)
  redis.call('SADD', p .. 'queues', queue)
end
redis.call('PUBLISH', p .. 'events', '{"event":"requeue","ids":[' .. id .. ']}')
return 1
