-- Record the results of finished tasks, each fenced by its lease token: a worker that
-- lost a lease (paused, partitioned, cancelled) cannot overwrite the attempt that
-- replaced it.  Many tasks per call: a worker delivers a batch in one script run.
-- KEYS: 1 leases zset, 2 done list, 3 done wake list, 4 stats hash, 5 incarnation,
--       6.. the task hashes
-- ARGV: per task, in the order of its KEYS: id, lease token, count of the values that
--       follow, then that many values (result field, value pairs).  A large return value
--       was stored under its own key before this call (field "vk" names it): a result
--       that is refused takes that key with it.
-- Returns per task: 1 recorded (or recorded already by this very call re-sent after a
-- lost reply); else the result is dropped and counted, and why: 0 another attempt holds
-- the task (its lease was lost), -1 the task no longer exists (cancelled, or retrieved
-- after another attempt finished it), -2 neither the task nor the queue's incarnation
-- exists (Redis lost the queue's state; the manager resubmits what it holds).  The
-- reason costs a call only for a dropped result.
local now = redis.call('TIME')
local finished = now[1] .. string.format('%06d', tonumber(now[2]))
local answers, recorded, late = {}, {}, 0
local head = {'s', 3, 'tok', '', 'lt', '', 'tf', finished}
local pos = 1
for i = 6, #KEYS do
  local key, id, token, count = KEYS[i], ARGV[pos], ARGV[pos + 1], tonumber(ARGV[pos + 2])
  local first, last = pos + 3, pos + 2 + count
  pos = last + 1
  local t = redis.call('HMGET', key, 'tok', 'lt', 'n', 'q', 'nc')
  if t[1] == token then
    local others = tonumber(t[3] or '1') - tonumber(t[5] or '0') - 1
    if others > 0 then  -- a pack's other live members: from running to done
      redis.call('HINCRBY', KEYS[4], 'pack_running:' .. t[4], -others)
      redis.call('HINCRBY', KEYS[4], 'pack_done', others)
    end
    head[6] = token
    if count <= 64 then  -- the usual result: one HSET
      local all = {unpack(head)}
      for f = first, last do all[#all + 1] = ARGV[f] end
      redis.call('HSET', key, unpack(all))
    else
      redis.call('HSET', key, unpack(head))
      for f = first, last, 1000 do  -- in chunks: unpack() of thousands of values overflows Lua's stack
        redis.call('HSET', key, unpack(ARGV, f, math.min(f + 999, last)))
      end
    end
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
      if ARGV[f] == 'vk' then redis.call('DEL', ARGV[f + 1]) end
      if ARGV[f] == 'vks' then  -- a pack's members' large return values
        for name in string.gmatch(ARGV[f + 1], '[^\n]+') do redis.call('DEL', name) end
      end
    end
  end
end
for f = 1, #recorded, 1000 do
  local chunk = {unpack(recorded, f, math.min(f + 999, #recorded))}
  redis.call('ZREM', KEYS[1], unpack(chunk))
  redis.call('RPUSH', KEYS[2], unpack(chunk))
end
if #recorded > 0 then
  redis.call('LPUSH', KEYS[3], 1)
  redis.call('LTRIM', KEYS[3], 0, 0)
end
if late > 0 then redis.call('HINCRBY', KEYS[4], 'late_results', late) end
return answers
