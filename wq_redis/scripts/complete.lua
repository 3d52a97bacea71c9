-- Record a task's results, fenced by its lease token: a worker that lost its lease
-- (paused, partitioned, cancelled) cannot overwrite the attempt that replaced it.
-- KEYS: 1 task hash, 2 leases zset, 3 done list, 4 done wake list, 5 stats hash
-- ARGV: 1 task id, 2 lease token, 3.. result field, value pairs
local t = redis.call('HMGET', KEYS[1], 'tok', 'lt')
if t[1] ~= ARGV[2] then
  if t[2] == ARGV[2] then return 1 end  -- this very call, re-sent after a lost reply
  redis.call('HINCRBY', KEYS[5], 'late_results', 1)
  return 0
end
local now = redis.call('TIME')
redis.call('HSET', KEYS[1], 's', 3, 'tok', '', 'lt', ARGV[2], 'tf', now[1] .. string.format('%06d', tonumber(now[2])))
for first = 3, #ARGV, 1000 do  -- in chunks: unpack() of thousands of values overflows Lua's stack
  redis.call('HSET', KEYS[1], unpack(ARGV, first, math.min(first + 999, #ARGV)))
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('RPUSH', KEYS[3], ARGV[1])
redis.call('LPUSH', KEYS[4], 1)
redis.call('LTRIM', KEYS[4], 0, 0)
return 1
