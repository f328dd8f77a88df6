-- Take a connect-mode port's lease (`lease:{port}`) if it is free, or if this node
-- (by id) held it before a restart (another instance of the same node). Each
-- acquisition counts up `lease:{port}:epoch`, so every holder's token is new: the
-- token is what the ingest script's fence compares.
-- ARGV[1] prefix
-- ARGV[2] port
-- ARGV[3] node      this node's id
-- ARGV[4] instance  this process's instance id
-- ARGV[5] ttl ms    how long the lease lives unless renewed
-- Returns {1, token} taken (token = `{node}/{instance}/{epoch}`), or {0, holder}.
local p, port, node, instance, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local key = p .. 'lease:' .. port
local holder = redis.call('GET', key)
if holder then
  local held_node, held_instance = string.match(holder, '^(.*)/([^/]*)/[^/]*$')
  if held_node ~= node or held_instance == instance then
    return {0, holder}
  end
end
local epoch = redis.call('INCR', key .. ':epoch')
local token = node .. '/' .. instance .. '/' .. epoch
redis.call('SET', key, token, 'PX', ttl)
return {1, token}
