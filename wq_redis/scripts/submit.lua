-- Queue one task: write its hash, put its id in the ready set of its (class, tag),
-- register that queue and ring the wake-up keys idle workers block on.
-- KEYS: 1 task hash, 2 ready zset, 3 registry set, 4 wake list of the queue,
--       5 new-queue wake list, 6 stats hash, 7 priority-0 list
-- ARGV: 1 member "CLASS|TAG", 2 score (-priority), 3 padded id, 4.. field, value pairs
-- Idempotent: a call re-sent after a lost reply finds the task and changes nothing.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 's', 1, 'q', ARGV[1], 'p', ARGV[2])
-- fields in chunks: unpack() of thousands of values overflows Lua's stack
for first = 4, #ARGV, 1000 do
  redis.call('HSET', KEYS[1], unpack(ARGV, first, math.min(first + 999, #ARGV)))
end
if tonumber(ARGV[2]) == 0 then
  redis.call('RPUSH', KEYS[7], tonumber(ARGV[3]))
else
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
end
if redis.call('SADD', KEYS[3], ARGV[1]) == 1 then
  redis.call('LPUSH', KEYS[5], 1)
  redis.call('LTRIM', KEYS[5], 0, 0)
end
redis.call('LPUSH', KEYS[4], 1)
redis.call('LTRIM', KEYS[4], 0, 0)
redis.call('HINCRBY', KEYS[6], 'submitted', 1)
return 1
