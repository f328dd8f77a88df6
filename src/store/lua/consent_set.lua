-- Record customers' ad consents, keeping what a change does not name, in one atomic step.
-- ARGV[1] hash key     csno -> "ad|night", each part "" or "given:at_ms:channel" (given 1/0)
-- ARGV[2] index key    zset of csno with ad consent given, scored by when it was given
-- ARGV[3..] triples    csno, ad part ("" = keep), night part ("" = keep)
-- Returns each csno's value before the change ("" when it had none), in order.
-- A withdrawal (given 0) is kept in the hash and leaves the index, so the re-confirmation
-- list holds only consents actually given.
local hash, index = ARGV[1], ARGV[2]
local before = {}
for i = 3, #ARGV, 3 do
  local csno, ad, night = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local old = redis.call('HGET', hash, csno) or ''
  local sep = string.find(old, '|', 1, true)
  local old_ad, old_night = '', ''
  if sep then
    old_ad, old_night = string.sub(old, 1, sep - 1), string.sub(old, sep + 1)
  end
  if ad == '' then ad = old_ad end
  if night == '' then night = old_night end
  redis.call('HSET', hash, csno, ad .. '|' .. night)
  local given, at = string.match(ad, '^(%d):(%d+):')
  if given == '1' then
    redis.call('ZADD', index, tonumber(at), csno)
  else
    redis.call('ZREM', index, csno)
  end
  before[#before + 1] = old
end
return before
