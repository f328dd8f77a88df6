-- Replace a record only if it is still exactly what the caller read (compare and set).
-- ARGV[1] record key  `rec:{id}` with the prefix
-- ARGV[2] expected    the record's JSON as the caller read it
-- ARGV[3] new         the record's JSON to store
-- Returns 1 replaced, 0 changed meanwhile.
local key, expected, new = ARGV[1], ARGV[2], ARGV[3]
if redis.call('GET', key) ~= expected then return 0 end
redis.call('SET', key, new)
return 1
