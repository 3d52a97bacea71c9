-- Cancel a task that has not been retrieved: take it out of its ready set, revoke its
-- lease (its worker sees the loss at its next heartbeat and kills it) or take it off the
-- done list; return its fields and delete it.
-- KEYS: 1 task hash, 2 leases zset, 3 done list, 4 stats hash
-- ARGV: 1 key prefix, 2 task id
local t = redis.call('HMGET', KEYS[1], 's', 'q')
if not t[1] then return false end
if t[1] == '1' then
  -- bulk cancels go in queue order, so LREM finds each id at the head of the list
  if redis.call('ZREM', ARGV[1] .. 'ready:' .. t[2], string.format('%012d', tonumber(ARGV[2]))) == 0 then
    redis.call('LREM', ARGV[1] .. 'fifo:' .. t[2], 1, ARGV[2])
  end
elseif t[1] == '2' then
  redis.call('ZREM', KEYS[2], ARGV[2])
elseif t[1] == '3' then
  redis.call('LREM', KEYS[3], 1, ARGV[2])
else
  return false
end
local fields = redis.call('HGETALL', KEYS[1])
local owned = redis.call('HMGET', KEYS[1], 'vk', 'big')
if owned[1] then redis.call('DEL', owned[1]) end  -- its large return value
if owned[2] then  -- its large fields
  for name in string.gmatch(owned[2], '[^\n]+') do redis.call('DEL', KEYS[1] .. ':' .. name) end
end
redis.call('DEL', KEYS[1])
redis.call('HINCRBY', KEYS[4], 'canceled', 1)
return fields
