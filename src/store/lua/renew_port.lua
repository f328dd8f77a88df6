-- Renew or release a port's lease, only while the caller's token still holds it.
-- ARGV[1] prefix
-- ARGV[2] port
-- ARGV[3] token   the caller's lease token
-- ARGV[4] ttl ms  the new lifetime; 0 = release (delete the lease)
-- Returns 1 if the token still held the lease, else 0 (nothing changed).
local p, port, token, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local key = p .. 'lease:' .. port
if redis.call('GET', key) ~= token then
  return 0
end
if ttl == '0' then
  redis.call('DEL', key)
else
  redis.call('PEXPIRE', key, ttl)
end
return 1
