-- The due queue a stored record waits in, `due:{app}:{lane}`, read from its decision
-- (records from before apps have neither: the app `default`, the lane `normal`). The
-- same rule as `push::Queue` in Rust. Shared by claim.lua and prune.lua.
local function queue_of(p, rec)
  local app, lane = 'default', 'normal'
  local d = type(rec) == 'table' and rec['decision']
  local push = type(d) == 'table' and d['push']
  if type(push) == 'table' then
    if type(push['app']) == 'string' then app = push['app'] end
    if type(push['lane']) == 'string' then lane = push['lane'] end
  end
  return p .. 'due:' .. app .. ':' .. lane
end
