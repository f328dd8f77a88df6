-- Shared piece, prepended to the scripts that count per port and minute (ingest,
-- outcome): counts are summed in the script and written once per batch (one HINCRBY
-- per key and field, one EXPIRE per minute key), and the changed ids announced on the
-- `events` channel.

local counts, minutes = {}, {}
-- One more `field` in the port's minute and total counters.
local function count(minute_key, total_key, field)
  minutes[minute_key] = true
  for _, key in ipairs({minute_key, total_key}) do
    local per_key = counts[key]
    if not per_key then
      per_key = {}
      counts[key] = per_key
    end
    per_key[field] = (per_key[field] or 0) + 1
  end
end
-- Write the sums (one HINCRBY per key and field, one EXPIRE per minute key), and
-- announce `ids` as `event`.
local function flush(p, ttl, event, ids)
  for key, per_key in pairs(counts) do
    for field, k in pairs(per_key) do
      redis.call('HINCRBY', p .. key, field, k)
    end
  end
  for key, _ in pairs(minutes) do
    redis.call('EXPIRE', p .. key, ttl)
  end
  if #ids > 0 then
    redis.call('PUBLISH', p .. 'events', '{"event":"' .. event .. '","ids":[' .. table.concat(ids, ',') .. ']}')
  end
end
