-- Admit one sign-in attempt, or say why not, before its password is checked.
-- ARGV[1] addr key     failures from one address in the window (count)
-- ARGV[2] wait key     set while that address must wait before its next attempt
-- ARGV[3] pair key     failures for one user name from that address (count)
-- ARGV[4] max pair     attempts one address may make for one user name per window
-- ARGV[5] free         attempts one address may make per window before each waits
-- ARGV[6] window ms    how long the counts live from their first attempt
-- ARGV[7] max wait ms  the longest wait between attempts
-- Returns {0, 0} admitted; {1, ms} the address must wait ms; {2, ms} this user name
-- is locked for this address for ms.
-- Attempts are counted when admitted, not when they fail, so parallel guesses cannot
-- all slip in under a limit; a success takes its own count back.
local addr_key, wait_key, pair_key = ARGV[1], ARGV[2], ARGV[3]
local max_pair, free = tonumber(ARGV[4]), tonumber(ARGV[5])
local window, max_wait = tonumber(ARGV[6]), tonumber(ARGV[7])
local wait = redis.call('PTTL', wait_key)
if wait > 0 then return {1, wait} end
local pair = tonumber(redis.call('GET', pair_key) or '0')
if pair >= max_pair then return {2, redis.call('PTTL', pair_key)} end
redis.call('INCR', pair_key)
redis.call('PEXPIRE', pair_key, window, 'NX')
local n = redis.call('INCR', addr_key)
redis.call('PEXPIRE', addr_key, window, 'NX')
if n > free then
  -- 1 s, 2 s, 4 s … for each attempt past the free ones, up to max wait.
  local delay = math.min(1000 * math.pow(2, math.min(n - free - 1, 30)), max_wait)
  redis.call('SET', wait_key, '1', 'PX', math.floor(delay))
end
return {0, 0}
