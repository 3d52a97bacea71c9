-- Queue many tasks in one call: write each task's hash, put its id in the waiting list
-- (priority 0) or the ready set (other priorities) of its (class, tag), register those
-- queues and ring the wake-up keys idle workers block on.
-- KEYS: 1 registry set, 2 new-queue wake list, 3 stats hash, then for each queue j = 1..M
--       its ready zset (KEYS[1 + 3j]), wake list (KEYS[2 + 3j]) and priority-0 list
--       (KEYS[3 + 3j]), then each task's hash (KEYS[3 + 3M + i] for the i-th task of ARGV)
-- ARGV: 1 M, 2..M+1 the queue members "CLASS|TAG" in KEYS' order, then per task:
--       queue index j, score (-priority; "0" for priority 0, then the hash has no 'p'),
--       padded id, tasks it stands for (1; a pack's member count, see packing.py), n,
--       and n field/value pairs
-- Idempotent per task: a task whose hash has a state (a call re-sent after a lost reply)
-- is left as it is.  Large fields were written just before as string keys of their own
-- (HASH:NAME, with a TTL in case this call never came); the field "big", sent first,
-- names them, and they are then kept for good.  Returns how many tasks were queued.
local m = tonumber(ARGV[1])
local task_keys = 3 + 3 * m
local rung = {}
local fifo = {}  -- queue index -> priority-0 ids: one RPUSH per queue at the end
local added = 0
local a, i = m + 2, 0
while a <= #ARGV do
  i = i + 1
  local j, score, id, count, n = tonumber(ARGV[a]), ARGV[a + 1], ARGV[a + 2], tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  local tkey = KEYS[task_keys + i]
  local first, last = a + 5, a + 4 + 2 * n
  a = last + 1
  if redis.call('HEXISTS', tkey, 's') == 0 then
    if n > 0 and ARGV[first] == 'big' then
      for name in string.gmatch(ARGV[first + 1], '[^\n]+') do redis.call('PERSIST', tkey .. ':' .. name) end
    end
    local head = {'s', 1, 'q', ARGV[1 + j]}
    if score ~= '0' then head[5], head[6] = 'p', score end
    -- fields in chunks: unpack() of thousands of values overflows Lua's stack
    local upto = math.min(first + 999, last)
    for f = first, upto do head[#head + 1] = ARGV[f] end
    redis.call('HSET', tkey, unpack(head))
    for f = upto + 1, last, 1000 do
      redis.call('HSET', tkey, unpack(ARGV, f, math.min(f + 999, last)))
    end
    if score == '0' then
      local ids = fifo[j]
      if not ids then
        ids = {}
        fifo[j] = ids
      end
      ids[#ids + 1] = tonumber(id)
    else
      redis.call('ZADD', KEYS[1 + 3 * j], score, id)
    end
    rung[j] = true
    added = added + count
    -- a pack's other members, counted as waiting in their queue (stats.lua, export.lua)
    if count > 1 then redis.call('HINCRBY', KEYS[3], 'pack_waiting:' .. ARGV[1 + j], count - 1) end
  end
end
for j, ids in pairs(fifo) do
  for f = 1, #ids, 1000 do  -- in chunks: unpack() has a stack limit
    redis.call('RPUSH', KEYS[3 + 3 * j], unpack(ids, f, math.min(f + 999, #ids)))
  end
end
local new_queue = false
for j in pairs(rung) do
  if redis.call('SADD', KEYS[1], ARGV[1 + j]) == 1 then new_queue = true end
  redis.call('LPUSH', KEYS[2 + 3 * j], 1)
  redis.call('LTRIM', KEYS[2 + 3 * j], 0, 0)
end
if new_queue then
  redis.call('LPUSH', KEYS[2], 1)
  redis.call('LTRIM', KEYS[2], 0, 0)
end
if added > 0 then redis.call('HINCRBY', KEYS[3], 'submitted', added) end
return added
