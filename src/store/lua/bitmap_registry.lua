-- Forget registered values whose bitmap is gone: removes from each `bitvals:{field}`
-- the values that have no `bit:{field}:{value}` (a flush deletes keys in batches while
-- records may arrive).
-- ARGV[1] prefix
-- ARGV[2] field   a message bitmap field; ARGV[3], ... further fields
-- Returns how many values were removed.
local p = ARGV[1]
local removed = 0
for i = 2, #ARGV do
  local field = ARGV[i]
  local registry = p .. 'bitvals:' .. field
  for _, value in ipairs(redis.call('SMEMBERS', registry)) do
    if redis.call('EXISTS', p .. 'bit:' .. field .. ':' .. value) == 0 then
      removed = removed + redis.call('SREM', registry, value)
    end
  end
end
return removed
