-- One retention step: walk ids from `retention:next` up to at most batch ids (and not
-- past the last id to prune), removing each record and every index entry pointing at
-- it (zset and `ix:` entries, bits, keyIndex, due, inflight, its receipts, its fallback
-- rungs' queues, bits and receipt watch) unless it has
-- `legal_hold: true`. Bitmaps it cleared bits in are added to `retention:touched`, for
-- emptied_bitmaps.lua to delete those left empty. Needs bucket.lua and queue.lua before
-- it.
-- Reading a record with cjson is safe here: nothing is written back from it.
-- ARGV[1] prefix
-- ARGV[2] last           the last id received before the cut-off
-- ARGV[3] batch          most ids to look at in this call
-- ARGV[4] zset fields    comma list: indexed by zset / `ix:`
-- ARGV[5] own fields     comma list: pushgate's own bitmap fields
-- ARGV[6] message fields comma list: message bitmap fields (a bitmap, or zset / `ix:`
--                        until the value earns one)
-- Returns {removed, held, more}: more = 1 when ids up to last are left.
local p, last, batch = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local zfields, bfields, afields = {}, {}, {}
for f in string.gmatch(ARGV[4], '[^,]+') do zfields[#zfields + 1] = f end
for f in string.gmatch(ARGV[5], '[^,]+') do bfields[#bfields + 1] = f end
for f in string.gmatch(ARGV[6], '[^,]+') do afields[#afields + 1] = f end
local next_id = tonumber(redis.call('GET', p .. 'retention:next') or '1')
local removed, held = 0, 0
local touched = {}
local stop = math.min(last, next_id + batch - 1)
local function unindex(f, v, id)
  redis.call('ZREM', p .. 'idx:' .. f .. ':' .. v, id)
  local bucket = ix_bucket(p, f, v)
  if redis.call('HGET', bucket, v) == tostring(id) then
    redis.call('HDEL', bucket, v)
  end
end
-- Only an existing bitmap: SETBIT on a missing key would create id/8 zero bytes.
local function unset(f, v, id)
  local suffix = 'bit:' .. f .. ':' .. v
  if redis.call('EXISTS', p .. suffix) == 1 then
    redis.call('SETBIT', p .. suffix, id, 0)
    touched[suffix] = true
  end
end
for id = next_id, stop do
  local text = redis.call('GET', p .. 'rec:' .. id)
  if text then
    local ok, rec = pcall(cjson.decode, text)
    if ok and rec['legal_hold'] == true then
      held = held + 1
    elseif ok then
      for _, f in ipairs(zfields) do
        local v = rec[f]
        if type(v) == 'string' and v ~= '' then unindex(f, v, id) end
      end
      -- The compact form leaves fcm_send_yn out while it is N.
      if rec['fcm_send_yn'] == nil then rec['fcm_send_yn'] = 'N' end
      -- The app and lane bits are read from the decision, as ingest set them.
      local push = type(rec['decision']) == 'table' and rec['decision']['push']
      if type(push) == 'table' then
        rec['app'] = push['app'] or 'default'
        rec['lane'] = push['lane'] or 'normal'
      end
      for _, f in ipairs(bfields) do
        local v = rec[f]
        if type(v) == 'string' and v ~= '' then unset(f, v, id) end
      end
      for _, f in ipairs(afields) do
        local v = rec[f]
        if type(v) == 'string' and v ~= '' then
          unset(f, v, id)
          unindex(f, v, id)
        end
      end
      if type(rec['uniqueKey']) == 'string' then
        redis.call('HDEL', p .. 'keyIndex', rec['uniqueKey'])
      end
      redis.call('ZREM', queue_of(p, rec), id)
      redis.call('ZREM', p .. 'inflight', id)
      redis.call('HDEL', p .. 'receipts', id .. ':delivered', id .. ':opened')
      unset('receipt', 'delivered', id)
      unset('receipt', 'opened', id)
      -- Its fallback ladder: each rung's queue, in-flight set and outcome bits.
      local ladder = type(push) == 'table' and push['fallback']
      if type(ladder) == 'table' then
        for _, rung in ipairs(ladder) do
          if type(rung) == 'string' then
            redis.call('ZREM', p .. 'fq:' .. rung, id)
            redis.call('ZREM', p .. 'fqinflight:' .. rung, id)
            for _, o in ipairs({'sent', 'retrying', 'failed', 'expired'}) do
              unset('fallback', rung .. ':' .. o, id)
            end
          end
        end
        redis.call('ZREM', p .. 'fallback:watch', id)
      end
      redis.call('DEL', p .. 'rec:' .. id)
      removed = removed + 1
    end
  end
end
if stop >= next_id then
  redis.call('SET', p .. 'retention:next', stop + 1)
end
for suffix, _ in pairs(touched) do
  redis.call('SADD', p .. 'retention:touched', suffix)
end
local more = 0
if stop < last then more = 1 end
return {removed, held, more}
