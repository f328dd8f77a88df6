-- One page of the ids set in a bitmap (or in the AND of several) within [lo, hi],
-- newest or oldest first. The bitmaps are ANDed into the tmp key when there is more
-- than one; the walk skips whole blocks by BITCOUNT, so a page reads only the blocks
-- it returns ids from.
-- ARGV[1] tmp key       scratch key for the AND (deleted before returning)
-- ARGV[2] lo            lowest id
-- ARGV[3] hi            highest id
-- ARGV[4] newest first  1 = walk down from hi, 0 = up from lo
-- ARGV[5] offset        matching ids to skip
-- ARGV[6] count         most ids to return
-- ARGV[7] bitmap key    then further bitmap keys to AND with it
-- Returns {total, id, id, ...}: total matching ids in [lo, hi], then the page.
local tmp, lo, hi = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local rev, offset, count = ARGV[4] == '1', tonumber(ARGV[5]), tonumber(ARGV[6])
local key = ARGV[7]
if #ARGV > 7 then
  local keys = {}
  for i = 7, #ARGV do keys[#keys + 1] = ARGV[i] end
  redis.call('BITOP', 'AND', tmp, unpack(keys))
  redis.call('PEXPIRE', tmp, 10000)
  key = tmp
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
if key == tmp then redis.call('DEL', tmp) end
return out
