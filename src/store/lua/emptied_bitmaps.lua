-- After retention: pop bitmap key suffixes (`bit:{field}:{value}`) from
-- `retention:touched`, delete each bitmap that holds no set bit any more, and remove
-- its value from `bitvals:{field}` (the earned-bitmap cap counts only live bitmaps).
-- ARGV[1] prefix
-- ARGV[2] chunk   most suffixes to pop in this call
-- Returns {deleted, more}: more = 1 when suffixes are left in `retention:touched`.
local p, chunk = ARGV[1], tonumber(ARGV[2])
local suffixes = redis.call('SPOP', p .. 'retention:touched', chunk)
local dropped = 0
for _, suffix in ipairs(suffixes) do
  local key = p .. suffix
  -- -1: no bit set (or no key); a missing key is deleted already.
  if redis.call('BITPOS', key, 1) == -1 then
    dropped = dropped + redis.call('DEL', key)
    local field, value = string.match(suffix, '^bit:([^:]+):(.*)$')
    if field then
      redis.call('SREM', p .. 'bitvals:' .. field, value)
    end
  end
end
local more = 0
if redis.call('EXISTS', p .. 'retention:touched') == 1 then more = 1 end
return {dropped, more}
