-- Move the first stage's one due queue (`due`) into the default app's normal lane
-- (`due:default:normal`), keeping each id's due time. Run once when a node starts;
-- with nothing to move it does nothing.
-- ARGV[1] prefix
-- Returns how many ids moved.
local p = ARGV[1]
local old, new = p .. 'due', p .. 'due:default:normal'
if redis.call('TYPE', old)['ok'] ~= 'zset' then return 0 end
local moved = redis.call('ZCARD', old)
redis.call('ZUNIONSTORE', new, 2, new, old, 'AGGREGATE', 'MIN')
redis.call('DEL', old)
redis.call('SADD', p .. 'queues', 'due:default:normal')
return moved
