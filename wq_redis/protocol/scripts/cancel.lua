-- Cancel a task that has not been retrieved: take it out of its ready set, revoke its
-- lease (and wake its worker's heartbeat, which sees the loss and kills it at once) or
-- take it off the done list; return its fields and delete it.
-- A pack (packing.py) is cancelled whole the same way, or one member at a time (ARGV 2):
-- the member is marked ("pc:ID", counted in "nc"), so it is not run if the pack has not
-- started, and its result is never handed out or counted.  Cancelling a pack's last
-- live member cancels the pack.
-- KEYS: 1 task hash, 2 leases zset, 3 done list, 4 stats hash
-- ARGV: 1 task id, 2 member id of the pack ("" = the whole task)
--#include prefix
--#include counts
local t = redis.call('HMGET', KEYS[1], 's', 'q', 'n', 'nc', 'w')
local function wake_worker()  -- its heartbeat blocks on its control key between beats (keys.control)
  if t[1] == '2' and t[5] then
    local control = prefix .. 'wc:' .. t[5]
    if type(redis.pcall('LPUSH', control, 1)) == 'number' then redis.call('LTRIM', control, 0, 0) end
  end
end
if not t[1] then return false end
local left = live(t[3], t[4])  -- a pack's members not cancelled
local stage = ({['1'] = 'pack_waiting:' .. (t[2] or ''), ['2'] = 'pack_running:' .. (t[2] or ''), ['3'] = 'pack_done'})[t[1]]
if not stage then return false end
local member = ARGV[2] or ''
if member ~= '' and left > 1 then
  if redis.call('HSETNX', KEYS[1], 'pc:' .. member, 1) == 0 then return false end
  redis.call('HINCRBY', KEYS[1], 'nc', 1)
  redis.call('HINCRBY', KEYS[4], stage, -1)  -- one live member less beyond the first
  redis.call('HINCRBY', KEYS[4], 'canceled', 1)
  wake_worker()
  return redis.call('HGETALL', KEYS[1])
end
if member ~= '' and redis.call('HEXISTS', KEYS[1], 'pc:' .. member) == 1 then return false end
if t[1] == '1' then
  -- bulk cancels go in queue order, so LREM finds each id at the head of the list
  if redis.call('ZREM', prefix .. 'ready:' .. t[2], string.format('%012d', tonumber(ARGV[1]))) == 0 then
    redis.call('LREM', prefix .. 'fifo:' .. t[2], 1, ARGV[1])
  end
elseif t[1] == '2' then
  redis.call('ZREM', KEYS[2], ARGV[1])
  wake_worker()
else
  redis.call('LREM', KEYS[3], 1, ARGV[1])
end
if left > 1 then redis.call('HINCRBY', KEYS[4], stage, 1 - left) end
local fields = redis.call('HGETALL', KEYS[1])
local owned = redis.call('HMGET', KEYS[1], 'vk', 'big', 'vks')
if own(owned[1]) then redis.call('DEL', own(owned[1])) end  -- its large return value
if owned[2] then  -- its large fields
  for name in string.gmatch(owned[2], '[^\n]+') do redis.call('DEL', KEYS[1] .. ':' .. name) end
end
if owned[3] then  -- its members' large return values
  for name in string.gmatch(owned[3], '[^\n]+') do
    if own(name) then redis.call('DEL', own(name)) end
  end
end
redis.call('DEL', KEYS[1])
redis.call('HINCRBY', KEYS[4], 'canceled', left)
return fields
