-- Write a batch of new records in one atomic step (the group commit): dedupe each by
-- uniqueKey, give it the next id, store it, index it, schedule it, count it, and
-- announce the stored ids. A record whose fence no longer holds (its port's lease moved
-- to another node) is refused. Needs bucket.lua and counters.lua before it.
-- ARGV[1] prefix          key prefix
-- ARGV[2] n               records in the batch
-- ARGV[3] stats ttl       seconds a per-minute counter lives
-- ARGV[4] nf              fences in the batch
-- ARGV[5] min records     a message field's value earns a bitmap at this many records...
-- ARGV[6] max values      ...while the field has fewer earned bitmaps than this
-- ARGV[7] ids per record  ...and at least (id / this) records
-- ARGV[8] max move        most ids one promotion moves, as a multiple of that threshold
-- Then nf fences, two each:
--   fence key             under the prefix (`lease:{port}`)
--   token                 the value the key must still hold
-- Then n records, each:
--   fence                 its fence's number (1..nf), 0 = unfenced
--   uniqueKey
--   body                  the record's JSON after `{"id":N,` (the id is given here)
--   due                   unix ms to send at, "" = not queued
--   queue                 its due queue under the prefix, `due:{app}:{lane}`
--   nz, nz suffixes       zset index keys, `idx:{field}:{value}`
--   nb, nb suffixes       pushgate's own bitmaps, `bit:{field}:{value}`
--   na, na triples        message bitmap fields: field, value, listed (0/1)
--   minute key            `stats:{port}:{unix minute}`
--   total key             `stats:{port}:total`
--   status                the record's status, counted in the port's counters too
-- Returns {id, flag} per record in input order: flag 0 new, 1 duplicate (the id is
-- the stored record's), 2 refused by its fence (id 0).
local p = ARGV[1]
local n = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local nf = tonumber(ARGV[4])
local min_records, max_values = tonumber(ARGV[5]), tonumber(ARGV[6])
local ids_per_record, max_move = tonumber(ARGV[7]), tonumber(ARGV[8])
local holds = {}
for f = 1, nf do
  holds[f] = redis.call('GET', p .. ARGV[7 + 2 * f]) == ARGV[8 + 2 * f]
end
local i = 9 + 2 * nf
local out = {}
local stored = {}
-- The queues this batch used, registered in `queues` for the console's queue card.
local queues = {}
-- A value's first id goes into a small shared hash; the second turns it into a zset.
local function index(suffix, id)
  local key = p .. suffix
  if redis.call('EXISTS', key) == 1 then
    redis.call('ZADD', key, id, id)
    return
  end
  local field, value = string.match(suffix, '^idx:([^:]+):(.*)$')
  local bucket = ix_bucket(p, field, value)
  local other = redis.call('HGET', bucket, value)
  if other then
    redis.call('HDEL', bucket, value)
    redis.call('ZADD', key, other, other, id, id)
  else
    redis.call('HSET', bucket, value, id)
  end
end
-- Move a value's ids from its zset and `ix:` entry into its bitmap (highest first, so
-- the bitmap is sized once).
local function to_bitmap(field, value, bkey, zkey)
  for _, other in ipairs(redis.call('ZRANGE', zkey, 0, -1, 'REV')) do
    redis.call('SETBIT', bkey, other, 1)
  end
  redis.call('DEL', zkey)
  local bucket = ix_bucket(p, field, value)
  local single = redis.call('HGET', bucket, value)
  if single then
    redis.call('SETBIT', bkey, single, 1)
    redis.call('HDEL', bucket, value)
  end
end
-- A message field's value: into its bitmap if it has one; else a listed value gets its
-- bitmap now, and any other goes into the zset index and earns a bitmap once that costs
-- no more than its zset, while the field has bitmaps to spare. A move is at most
-- max_move times the threshold, so it never stalls Redis for long.
local function index_admitted(field, value, listed, id)
  local bkey = p .. 'bit:' .. field .. ':' .. value
  local suffix = 'idx:' .. field .. ':' .. value
  local zkey = p .. suffix
  if redis.call('EXISTS', bkey) == 1 then
    redis.call('SETBIT', bkey, id, 1)
    -- A zset beside the bitmap: a first-stage node made the bitmap while this version
    -- filled the zset (mixed versions, rollback). Readers take the bitmap: merge.
    if redis.call('EXISTS', zkey) == 1 then to_bitmap(field, value, bkey, zkey) end
    return
  end
  local threshold = math.max(min_records, math.floor(id / ids_per_record))
  if listed and redis.call('ZCARD', zkey) < max_move * threshold then
    redis.call('SETBIT', bkey, id, 1)
    to_bitmap(field, value, bkey, zkey)
    return
  end
  index(suffix, id)
  if listed then return end
  local held = redis.call('ZCARD', zkey)
  if held < threshold or held > max_move * threshold then return end
  local registry = p .. 'bitvals:' .. field
  if redis.call('SCARD', registry) < max_values then
    to_bitmap(field, value, bkey, zkey)
    redis.call('SADD', registry, value)
  end
end
for r = 1, n do
  local fence = tonumber(ARGV[i])
  i = i + 1
  local ukey, body, due, queue = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local nz = tonumber(ARGV[i + 4])
  local zfirst = i + 5
  local nb = tonumber(ARGV[zfirst + nz])
  local bfirst = zfirst + nz + 1
  local na = tonumber(ARGV[bfirst + nb])
  local afirst = bfirst + nb + 1
  local after = afirst + 3 * na
  local minute_key, total_key, status = ARGV[after], ARGV[after + 1], ARGV[after + 2]
  i = after + 3
  local existing = false
  if fence == 0 or holds[fence] then
    count(minute_key, total_key, 'received')
    existing = redis.call('HGET', p .. 'keyIndex', ukey)
  end
  if fence > 0 and not holds[fence] then
    out[#out + 1] = 0
    out[#out + 1] = 2
  elseif existing then
    out[#out + 1] = tonumber(existing)
    out[#out + 1] = 1
    count(minute_key, total_key, 'dup')
  else
    local id = redis.call('INCR', p .. 'seq')
    redis.call('SET', p .. 'rec:' .. id, '{"id":' .. id .. ',' .. body)
    redis.call('HSET', p .. 'keyIndex', ukey, id)
    for z = zfirst, zfirst + nz - 1 do
      index(ARGV[z], id)
    end
    for b = bfirst, bfirst + nb - 1 do
      redis.call('SETBIT', p .. ARGV[b], id, 1)
    end
    for a = afirst, after - 1, 3 do
      index_admitted(ARGV[a], ARGV[a + 1], ARGV[a + 2] == '1', id)
    end
    if due ~= '' then
      redis.call('ZADD', p .. queue, due, id)
      queues[queue] = true
    end
    count(minute_key, total_key, status)
    stored[#stored + 1] = id
    out[#out + 1] = id
    out[#out + 1] = 0
  end
end
for queue, _ in pairs(queues) do
  redis.call('SADD', p .. 'queues', queue)
end
flush(p, ttl, 'stored', stored)
return out
