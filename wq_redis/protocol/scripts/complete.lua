-- Record the results of finished tasks, each fenced by its lease token: a worker that
-- lost a lease (paused, partitioned, cancelled) cannot overwrite the attempt that
-- replaced it.  Many tasks per call: a worker delivers a batch in one script run.
-- KEYS: 1 leases zset, 2 done list, 3 done wake list, 4 stats hash, 5 incarnation,
--       6.. the task hashes
-- ARGV: per task, in the order of its KEYS: id, lease token, count of the values that
--       follow, then that many values (result field, value pairs).  A large return value
--       was stored under its own key before this call (field "vk" names it): a result
--       that is refused takes that key with it.
-- All or nothing for the tasks whose results it records: Redis does not roll a script
-- back, so the writes that can fail on a key of the wrong type (another client's
-- garbage at done or leases) come first, through redis.pcall, and one that fails undoes
-- the one before; nothing of those tasks is written then, and the worker holds their
-- results and sends them again (the key repaired, they are recorded as if the first
-- try had worked).  The counters (stats) and the manager's wake-up are not worth
-- holding a result for: a key of the wrong type there is reported and skipped.  The
-- reads and checks cost nothing on the usual path (redis.pcall is redis.call's price).
-- Returns {answers, broken}: answers has one per task (store.Delivery): 1 recorded (or
-- recorded already by this very call re-sent after a lost reply); 2 not recorded now (a
-- key it writes is broken: send it again); else the result is dropped and counted, and
-- why: 0 another attempt holds the task (its lease was lost), -1 the task no longer
-- exists (cancelled, or retrieved after another attempt finished it), -2 neither the
-- task nor the queue's incarnation exists (Redis lost the queue's state; the manager
-- resubmits what it holds).  The reason costs a call only for a dropped result.
-- broken = {{key, error}...}: keys it could not read or write.
local now = redis.call('TIME')
local finished = now[1] .. string.format('%06d', tonumber(now[2]))
local answers, recorded, late = {}, {}, 0
--#include prefix
--#include broken
--#include counts

-- 1. reads only: which results this call records (their lease is this attempt's)
local pos = 1
local writes = {}  -- per task recorded: key, token, first and last value, its other live members, member, answer
for i = 6, #KEYS do
  local key, id, token, count = KEYS[i], ARGV[pos], ARGV[pos + 1], tonumber(ARGV[pos + 2])
  local first, last = pos + 3, pos + 2 + count
  pos = last + 1
  local t = redis.pcall('HMGET', key, 'tok', 'lt', 'n', 'q', 'nc')
  if failed(t, key) then  -- not a hash any more: the task is gone, as if cancelled
    t = {}
  end
  if t[1] == token then
    local others = live(t[3], t[5]) - 1
    writes[#writes + 1] = {key, token, first, last, others, t[4], #answers + 1}
    recorded[#recorded + 1] = id
    answers[#answers + 1] = 1
  elseif t[2] == token then
    answers[#answers + 1] = 1
  else
    late = late + 1
    if t[4] then
      answers[#answers + 1] = 0  -- every task hash has its queue member 'q'
    elseif redis.call('EXISTS', KEYS[5]) == 1 then
      answers[#answers + 1] = -1
    else
      answers[#answers + 1] = -2
    end
    for f = first, last - 1, 2 do  -- a large value stored beside the result goes too
      if ARGV[f] == 'vk' and own(ARGV[f + 1]) then redis.call('DEL', own(ARGV[f + 1])) end
      if ARGV[f] == 'vks' then  -- a pack's members' large return values
        for name in string.gmatch(ARGV[f + 1], '[^\n]+') do
          if own(name) then redis.call('DEL', own(name)) end
        end
      end
    end
  end
end

-- 2. the writes that may fail, first; a failure undoes what came before it
if #recorded > 0 then
  local pushed, ok = 0, true
  for f = 1, #recorded, 1000 do
    local upto = math.min(f + 999, #recorded)
    if failed(redis.pcall('RPUSH', KEYS[2], unpack(recorded, f, upto)), KEYS[2]) then
      ok = false
      break
    end
    pushed = upto
  end
  if ok then  -- ZREM fails on its first chunk or never (nothing here changes its key's type)
    for f = 1, #recorded, 1000 do
      if failed(redis.pcall('ZREM', KEYS[1], unpack(recorded, f, math.min(f + 999, #recorded))), KEYS[1]) then
        ok = false
        break
      end
    end
  end
  if not ok then
    if pushed > 0 then redis.call('RPOP', KEYS[2], pushed) end  -- ours: nothing else ran on that list since
    for _, w in ipairs(writes) do answers[w[7]] = 2 end
    writes, recorded = {}, {}
  end
end

-- 3. the results themselves (task hashes were read as hashes above: these cannot fail)
local head = {'s', 3, 'tok', '', 'lt', '', 'tf', finished}
for _, w in ipairs(writes) do
  local key, token, first, last, others, member = w[1], w[2], w[3], w[4], w[5], w[6]
  local sized = member and string.match(member, '^[^|]*%.[kK](%x+)|')
  if sized then  -- a result of an automatic category: its manager must learn it before the next is sized
    failed(redis.pcall('HINCRBY', prefix .. 'label:' .. sized, 'done', 1), prefix .. 'label:' .. sized)
  end
  if others > 0 and member then  -- a pack's other live members: from running to done
    failed(redis.pcall('HINCRBY', KEYS[4], 'pack_running:' .. member, -others), KEYS[4])
    failed(redis.pcall('HINCRBY', KEYS[4], 'pack_done', others), KEYS[4])
  end
  head[6] = token
  if last - first + 1 <= 64 then  -- the usual result: one HSET
    local all = {unpack(head)}
    for f = first, last do all[#all + 1] = ARGV[f] end
    redis.call('HSET', key, unpack(all))
  else
    redis.call('HSET', key, unpack(head))
    for f = first, last, 1000 do  -- in chunks: unpack() of thousands of values overflows Lua's stack
      redis.call('HSET', key, unpack(ARGV, f, math.min(f + 999, last)))
    end
  end
end
if #recorded > 0 then ring(KEYS[3]) end
if late > 0 then failed(redis.pcall('HINCRBY', KEYS[4], 'late_results', late), KEYS[4]) end
return {answers, broken}
