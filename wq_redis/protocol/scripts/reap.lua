-- Requeue tasks whose lease expired (their worker died, hung or was partitioned), or
-- fail them with MAX_RETRIES when their attempts are spent; forget workers whose
-- heartbeat stopped, and empty ready queues.  Uses Redis TIME, never a client clock.
-- KEYS: 1 leases zset, 2 registry set, 3 done list, 4 done wake list, 5 stats hash,
--       6 workers zset, 7 new-queue wake list
-- ARGV: 1 max leases per call, 2 worker timeout ms
-- A key of the wrong type (another client's garbage) loses nothing: a task is taken out
-- of the leases only once the list it goes to (its queue, or done) took it, and the
-- counters and wake-ups (not worth a task) are skipped when theirs is broken.  (What
-- broke is not returned: the claims and renewals of every worker report it.)
--#include prefix
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
--#include broken
--#include counts
--#include enqueue
local function bump(field, by) redis.pcall('HINCRBY', KEYS[5], field, by) end
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms, 'LIMIT', 0, tonumber(ARGV[1]))
local requeued, given_up = 0, 0
for _, id in ipairs(expired) do
  local tkey = prefix .. 't:' .. id
  local t = redis.pcall('HMGET', tkey, 's', 'q', 'p', 'a', 'mr', 'w', 'n', 'nc')
  if failed(t, tkey) or t[1] ~= '2' or not t[2] then  -- not a running task (or not a task): no lease to keep
    redis.call('ZREM', KEYS[1], id)
  else
    local others = live(t[7], t[8]) - 1  -- a pack's other live members move with it
    local attempts = tonumber(t[4] or '0') or 0
    local max_retries = tonumber(t[5] or '0') or 0
    if max_retries > 0 and attempts > max_retries then
      if not failed(redis.pcall('RPUSH', KEYS[3], id), KEYS[3]) then
        redis.call('ZREM', KEYS[1], id)
        redis.call('HSET', tkey, 's', 3, 'tok', '', 'r', 48, 'rs', -1, 'tf', now[1] .. string.format('%06d', tonumber(now[2])),
          'err', 'worker ' .. (t[6] or '?') .. ' lost the task on attempt ' .. attempts ..
          ' (lease expired); retries exhausted')
        bump('lost_leases', 1)
        if others > 0 then
          bump('pack_running:' .. t[2], -others)
          bump('pack_done', others)
        end
        ring(KEYS[4])
        given_up = given_up + 1
      end
    else
      local pushed, queue
      if t[3] and tonumber(t[3]) and tonumber(t[3]) ~= 0 and tonumber(id) then
        queue = prefix .. 'ready:' .. t[2]
        pushed = redis.pcall('ZADD', queue, t[3], padded(id))
      else
        queue = prefix .. 'fifo:' .. t[2]
        pushed = redis.pcall('LPUSH', queue, id)  -- back at the front: it was first
      end
      if not failed(pushed, queue) then
        redis.call('ZREM', KEYS[1], id)
        redis.call('HSET', tkey, 's', 1, 'tok', '')
        bump('lost_leases', 1)
        if others > 0 then
          bump('pack_running:' .. t[2], -others)
          bump('pack_waiting:' .. t[2], others)
        end
        if announce(KEYS[2], t[2], prefix .. 'wake:' .. t[2]) then ring(KEYS[7]) end
        bump('requeued', 1)
        requeued = requeued + 1
      end
    end
  end
end
local dead = redis.pcall('ZRANGEBYSCORE', KEYS[6], '-inf', now_ms - tonumber(ARGV[2]))
if failed(dead, KEYS[6]) then dead = {} end
for _, name in ipairs(dead) do
  redis.call('ZREM', KEYS[6], name)
  redis.call('DEL', prefix .. 'w:' .. name)
  bump('workers_lost', 1)
end
local forgotten = 0
local members = redis.pcall('SMEMBERS', KEYS[2])
if failed(members, KEYS[2]) then members = {} end
for _, member in ipairs(members) do
  if redis.call('EXISTS', prefix .. 'ready:' .. member, prefix .. 'fifo:' .. member) == 0 then
    redis.call('SREM', KEYS[2], member)
    forgotten = forgotten + 1
  end
end
return {#expired, requeued, given_up, #dead, forgotten}
