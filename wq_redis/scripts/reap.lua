-- Requeue tasks whose lease expired (their worker died, hung or was partitioned), or
-- fail them with MAX_RETRIES when their attempts are spent; forget workers whose
-- heartbeat stopped, and empty ready queues.  Uses Redis TIME, never a client clock.
-- KEYS: 1 leases zset, 2 registry set, 3 done list, 4 done wake list, 5 stats hash,
--       6 workers zset, 7 new-queue wake list
-- ARGV: 1 key prefix, 2 max leases per call, 3 worker timeout ms
local prefix = ARGV[1]
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms, 'LIMIT', 0, tonumber(ARGV[2]))
local requeued, failed = 0, 0
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[1], id)
  local tkey = prefix .. 't:' .. id
  local t = redis.call('HMGET', tkey, 's', 'q', 'p', 'a', 'mr', 'w', 'n', 'nc')
  if t[1] == '2' then
    local others = tonumber(t[7] or '1') - tonumber(t[8] or '0') - 1  -- a pack's other live members move with it
    if others > 0 then redis.call('HINCRBY', KEYS[5], 'pack_running:' .. t[2], -others) end
    local attempts = tonumber(t[4] or '0')
    local max_retries = tonumber(t[5] or '0')
    redis.call('HINCRBY', KEYS[5], 'lost_leases', 1)
    if max_retries > 0 and attempts > max_retries then
      redis.call('HSET', tkey, 's', 3, 'tok', '', 'r', 48, 'tf', now[1] .. string.format('%06d', tonumber(now[2])),
        'err', 'worker ' .. (t[6] or '?') .. ' lost the task on attempt ' .. attempts ..
        ' (lease expired); retries exhausted')
      redis.call('RPUSH', KEYS[3], id)
      if others > 0 then redis.call('HINCRBY', KEYS[5], 'pack_done', others) end
      redis.call('LPUSH', KEYS[4], 1)
      redis.call('LTRIM', KEYS[4], 0, 0)
      failed = failed + 1
    else
      redis.call('HSET', tkey, 's', 1, 'tok', '')
      if others > 0 then redis.call('HINCRBY', KEYS[5], 'pack_waiting:' .. t[2], others) end
      if t[3] and tonumber(t[3]) ~= 0 then
        redis.call('ZADD', prefix .. 'ready:' .. t[2], t[3], string.format('%012d', tonumber(id)))
      else
        redis.call('LPUSH', prefix .. 'fifo:' .. t[2], id)  -- back at the front: it was first
      end
      if redis.call('SADD', KEYS[2], t[2]) == 1 then
        redis.call('LPUSH', KEYS[7], 1)
        redis.call('LTRIM', KEYS[7], 0, 0)
      end
      redis.call('LPUSH', prefix .. 'wake:' .. t[2], 1)
      redis.call('LTRIM', prefix .. 'wake:' .. t[2], 0, 0)
      redis.call('HINCRBY', KEYS[5], 'requeued', 1)
      requeued = requeued + 1
    end
  end
end
local dead = redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', now_ms - tonumber(ARGV[3]))
for _, name in ipairs(dead) do
  redis.call('ZREM', KEYS[6], name)
  redis.call('DEL', prefix .. 'w:' .. name)
  redis.call('HINCRBY', KEYS[5], 'workers_lost', 1)
end
local forgotten = 0
for _, member in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if redis.call('EXISTS', prefix .. 'ready:' .. member, prefix .. 'fifo:' .. member) == 0 then
    redis.call('SREM', KEYS[2], member)
    forgotten = forgotten + 1
  end
end
return {#expired, requeued, failed, #dead, forgotten}
