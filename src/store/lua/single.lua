-- The id of the one record holding a value of a field, if exactly one does (the
-- value's entry in its `ix:` hash). Needs bucket.lua before it.
-- ARGV[1] prefix
-- ARGV[2] field
-- ARGV[3] value
-- Returns the id, or nil when no single record holds the value.
local p, field, value = ARGV[1], ARGV[2], ARGV[3]
return redis.call('HGET', ix_bucket(p, field, value), value)
