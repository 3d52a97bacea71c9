-- Queue many tasks in one call: write each task's hash, put its id in the waiting list
-- (priority 0) or the ready set (other priorities) of its (class, tag), register those
-- queues and ring the wake-up keys idle workers block on.
-- KEYS: 1 registry set, 2 new-queue wake list, 3 stats hash, 4 incarnation, 5 the
--       managers' wake list (done:wake), then for each queue j = 1..M its ready zset
--       (KEYS[3 + 3j]), wake list (KEYS[4 + 3j]) and priority-0 list (KEYS[5 + 3j]), then
--       each task's hash (KEYS[5 + 3M + i] for the i-th task of ARGV)
-- ARGV: 1 the incarnation the manager attached to (attach.lua), 2 M, 3..M+2 the queue
--       members "CLASS|TAG" in KEYS' order, then per task: queue index j, score
--       (-priority; "0" for priority 0, then the hash has no 'p'), padded id, tasks it
--       stands for (1; a pack's member count, see packing.py), its submit stamp (the
--       'sub' field it writes), n, and n field/value pairs
--
-- The incarnation first: a queue whose incarnation is missing or another one lost its
-- state (Redis restarted without its data, or another client damaged it) since the
-- manager attached, and with it the function bodies and cached files the manager stored:
-- tasks queued there would fail "function missing".  Nothing is queued then; the manager
-- attaches again and resubmits everything it holds (recovery.py).  One GET per call.
-- The managers' wake key is rung then: a wait() that carried this call blocks on it next
-- in the same pipeline, and returns at once to recover instead of waiting out its block.
--
-- Idempotent per task: a hash holding this very task's earlier write (the same submit
-- stamp: a call re-sent after a lost reply, or a resubmit after a false alarm) is left as
-- it is.  Any other hash at the task's key (of the wrong type, or with fields this
-- manager did not write for this task: a stranger wrote at an id the manager was about
-- to hand out) is replaced whole, the large fields it names deleted unless this task
-- names them too, and its id reported: skipping it would leave the task never queued.
-- One HLEN per task; only a hash already there costs one more read.
-- Large fields were written just before as string keys of their own (HASH:NAME, with a
-- TTL in case this call never came); the field "big", sent first, names them, and they
-- are then kept for good.
-- The queues are then announced (include/enqueue.lua, as reap.lua does).  A registry of
-- the wrong type (another client's garbage) refuses the call before anything is written:
-- tasks queued where no claim looks would be lost, while a refused call is held by the
-- manager and sent again.  A wake key of the wrong type is skipped (the tasks wait for
-- the workers' next look); the workers' claims report it.
-- Returns {1, tasks queued, {ids whose hash was replaced}}, or {0, the incarnation found
-- (false when missing or not a string)} when nothing was queued.
--#include broken
--#include enqueue
local incarnation = redis.pcall('GET', KEYS[4])
if type(incarnation) == 'table' then incarnation = false end  -- not a string: a stranger's key, state lost
-- (an empty one is a manager's mark that its recovery is not done: never accepted)
if incarnation ~= ARGV[1] or ARGV[1] == '' then
  redis.pcall('LPUSH', KEYS[5], 1)  -- pcall: a wake key of the wrong type must not hide the refusal
  redis.pcall('LTRIM', KEYS[5], 0, 0)
  return {0, incarnation}
end
local registry_type = redis.call('TYPE', KEYS[1])['ok']
if registry_type ~= 'set' and registry_type ~= 'none' then
  return redis.error_reply('WRONGTYPE the queue registry ' .. KEYS[1] .. ' is a ' .. registry_type ..
    ', not a set: no task is queued until it is removed')
end
local m = tonumber(ARGV[2])
local task_keys = 5 + 3 * m
local rung = {}
local fifo = {}  -- queue index -> priority-0 ids: one RPUSH per queue at the end
local added = 0
local replaced = {}
local a, i = m + 3, 0
while a <= #ARGV do
  i = i + 1
  local j, score, id, count, stamp, n = tonumber(ARGV[a]), ARGV[a + 1], ARGV[a + 2], tonumber(ARGV[a + 3]),
    ARGV[a + 4], tonumber(ARGV[a + 5])
  local tkey = KEYS[task_keys + i]
  local first, last = a + 6, a + 5 + 2 * n
  a = last + 1
  local ours = n > 0 and ARGV[first] == 'big' and ARGV[first + 1] or nil  -- the large fields this task names
  local fresh = true
  local size = redis.pcall('HLEN', tkey)
  if type(size) == 'table' then  -- not a hash
    redis.call('DEL', tkey)
    replaced[#replaced + 1] = tonumber(id)
  elseif size > 0 then
    local old = redis.call('HMGET', tkey, 'sub', 'big')
    if old[1] == stamp then
      fresh = false  -- this task's own earlier write
    else
      if old[2] then
        local keep = {}
        if ours then for name in string.gmatch(ours, '[^\n]+') do keep[name] = true end end
        for name in string.gmatch(old[2], '[^\n]+') do
          if not keep[name] then redis.call('DEL', tkey .. ':' .. name) end
        end
      end
      redis.call('DEL', tkey)
      replaced[#replaced + 1] = tonumber(id)
    end
  end
  if fresh then
    if ours then
      for name in string.gmatch(ours, '[^\n]+') do redis.call('PERSIST', tkey .. ':' .. name) end
    end
    local j2 = 2 + j
    local head = {'s', 1, 'q', ARGV[j2]}
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
      redis.call('ZADD', KEYS[3 + 3 * j], score, id)
    end
    rung[j] = true
    added = added + count
    -- a pack's other members, counted as waiting in their queue (stats.lua, export.lua)
    if count > 1 then redis.call('HINCRBY', KEYS[3], 'pack_waiting:' .. ARGV[j2], count - 1) end
  end
end
for j, ids in pairs(fifo) do
  for f = 1, #ids, 1000 do  -- in chunks: unpack() has a stack limit
    redis.call('RPUSH', KEYS[5 + 3 * j], unpack(ids, f, math.min(f + 999, #ids)))
  end
end
local new_queue = false
for j in pairs(rung) do
  if announce(KEYS[1], ARGV[2 + j], KEYS[4 + 3 * j]) then new_queue = true end
end
if new_queue then ring(KEYS[2]) end
if added > 0 then redis.call('HINCRBY', KEYS[3], 'submitted', added) end
return {1, added, replaced}
