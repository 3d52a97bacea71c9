-- Cancel a task that has not been retrieved: take it out of its ready set, revoke its
-- lease (its worker sees the loss at its next heartbeat and kills it) or take it off the
-- done list; return its fields and delete it.
-- A pack (packing.py) is cancelled whole the same way, or one member at a time (ARGV 3):
-- a waiting pack loses the member's arguments; a running or finished one keeps them and
-- marks the member cancelled ("pc:ID"), so its result is never handed out or counted.
-- KEYS: 1 task hash, 2 leases zset, 3 done list, 4 stats hash
-- ARGV: 1 key prefix, 2 task id, 3 member id of the pack ("" = the whole task)
local t = redis.call('HMGET', KEYS[1], 's', 'q', 'n')
if not t[1] then return false end
local count = tonumber(t[3] or '1')
local member = ARGV[3] or ''
if member ~= '' then
  if redis.call('HEXISTS', KEYS[1], 'pa:' .. member) == 0 or redis.call('HEXISTS', KEYS[1], 'pc:' .. member) == 1 then
    return false
  end
  if t[1] == '1' and count > 1 then
    redis.call('HDEL', KEYS[1], 'pa:' .. member)
    redis.call('HINCRBY', KEYS[1], 'n', -1)
    redis.call('HINCRBY', KEYS[4], 'pack_waiting:' .. t[2], -1)
  elseif t[1] == '2' or t[1] == '3' then
    redis.call('HSET', KEYS[1], 'pc:' .. member, 1)
    redis.call('HINCRBY', KEYS[1], 'nc', 1)
  elseif t[1] ~= '1' then
    return false
  end
  if t[1] ~= '1' or count > 1 then
    redis.call('HINCRBY', KEYS[4], 'canceled', 1)
    return redis.call('HGETALL', KEYS[1])
  end
  -- the last member of a waiting pack: the pack goes as a whole
end
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
local cancelled = count
if t[3] then
  for i = 1, #fields, 2 do
    if string.sub(fields[i], 1, 3) == 'pc:' then cancelled = cancelled - 1 end  -- counted before
  end
  if count > 1 then
    local stage = ({['1'] = 'pack_waiting:' .. t[2], ['2'] = 'pack_running:' .. t[2], ['3'] = 'pack_done'})[t[1]]
    redis.call('HINCRBY', KEYS[4], stage, 1 - count)
  end
end
local owned = redis.call('HMGET', KEYS[1], 'vk', 'big', 'vks')
if owned[1] then redis.call('DEL', owned[1]) end  -- its large return value
if owned[2] then  -- its large fields
  for name in string.gmatch(owned[2], '[^\n]+') do redis.call('DEL', KEYS[1] .. ':' .. name) end
end
if owned[3] then  -- its members' large return values
  for name in string.gmatch(owned[3], '[^\n]+') do redis.call('DEL', name) end
end
redis.call('DEL', KEYS[1])
redis.call('HINCRBY', KEYS[4], 'canceled', cancelled)
return fields
