-- Shared piece, prepended to every script that reads or writes the single-record index
-- (ingest, single, prune): a value held by one record only is not given a zset of its
-- own but is a field of the hash `ix:{field}:{bucket}` (value -> id), its bucket the
-- first 4 hex digits of the value's SHA-1. This is the one place that rule is written.

-- The `ix:` hash (under prefix `p`) that holds `value` of `field`.
local function ix_bucket(p, field, value)
  return p .. 'ix:' .. field .. ':' .. string.sub(redis.sha1hex(value), 1, 4)
end
