-- One page of the ids set in a bitmap (or in the AND of several, less any set in the
-- NOT bitmaps) within [lo, hi], newest or oldest first. The bitmaps are ANDed into the
-- tmp key when there is more than one; a NOT bitmap is copied, padded with zeros up to
-- hi (a missing byte must read as "not set", so as 1 once inverted) and inverted first:
-- O(hi/8) bytes, like the AND. The walk skips whole blocks by BITCOUNT, so a page reads
-- only the blocks it returns ids from.
-- ARGV[1] tmp key       scratch key for the AND (deleted before returning)
-- ARGV[2] lo            lowest id
-- ARGV[3] hi            highest id
-- ARGV[4] newest first  1 = walk down from hi, 0 = up from lo
-- ARGV[5] offset        matching ids to skip
-- ARGV[6] count         most ids to return
-- ARGV[7] not count     how many of the bitmap keys that follow, counted from the
--                       last, an id must NOT be set in
-- ARGV[8] bitmap key    then further bitmap keys to AND with it, then the NOT ones
-- Returns {total, id, id, ...}: total matching ids in [lo, hi], then the page.
local tmp, lo, hi = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local rev, offset, count = ARGV[4] == '1', tonumber(ARGV[5]), tonumber(ARGV[6])
local nots = tonumber(ARGV[7])
local keys, scratch = {}, {}
for i = 8, #ARGV - nots do keys[#keys + 1] = ARGV[i] end
for i = #ARGV - nots + 1, #ARGV do
  local inverted = tmp .. ':not:' .. i
  redis.call('BITOP', 'OR', inverted, ARGV[i])
  local last_byte = math.floor(hi / 8)
  if redis.call('STRLEN', inverted) <= last_byte then
    redis.call('SETRANGE', inverted, last_byte, '\0')
  end
  redis.call('BITOP', 'NOT', inverted, inverted)
  redis.call('PEXPIRE', inverted, 10000)
  keys[#keys + 1] = inverted
  scratch[#scratch + 1] = inverted
end
local key = keys[1]
if #keys > 1 then
  redis.call('BITOP', 'AND', tmp, unpack(keys))
  redis.call('PEXPIRE', tmp, 10000)
  key = tmp
  scratch[#scratch + 1] = tmp
end
local total = redis.call('BITCOUNT', key, lo, hi, 'BIT')
local out = {total}
if offset < total then
  local BLOCK = 4096
  local lob, hib = math.floor(lo / 8), math.floor(hi / 8)
  local skipped = 0
  local bs, step
  if rev then bs = hib - ((hib - lob) % BLOCK) else bs = lob end
  while #out - 1 < count do
    local be = math.min(bs + BLOCK - 1, hib)
    if bs < lob or bs > hib then break end
    local from_bit, to_bit = math.max(lo, bs * 8), math.min(hi, be * 8 + 7)
    local n = redis.call('BITCOUNT', key, from_bit, to_bit, 'BIT')
    if skipped + n <= offset then
      skipped = skipped + n
    elseif n > 0 then
      local bytes = redis.call('GETRANGE', key, bs, be)
      local b_first, b_last, b_step = bs, be, 1
      if rev then b_first, b_last, b_step = be, bs, -1 end
      for b = b_first, b_last, b_step do
        local byte = string.byte(bytes, b - bs + 1) or 0
        if byte ~= 0 then
          local i_first, i_last, i_step = 0, 7, 1
          if rev then i_first, i_last, i_step = 7, 0, -1 end
          for i = i_first, i_last, i_step do
            local id = b * 8 + i
            if id >= lo and id <= hi and bit.band(byte, bit.lshift(1, 7 - i)) ~= 0 then
              if skipped < offset then
                skipped = skipped + 1
              else
                out[#out + 1] = id
                if #out - 1 >= count then break end
              end
            end
          end
        end
        if #out - 1 >= count then break end
      end
    end
    if rev then bs = bs - BLOCK else bs = bs + BLOCK end
  end
end
if #scratch > 0 then redis.call('DEL', unpack(scratch)) end
return out
