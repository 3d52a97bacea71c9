-- (include/enqueue.lua) What submit.lua (new tasks) and reap.lua (tasks whose lease
-- expired) both do once a task waits in a queue: the queue is registered (claims look
-- only at registered queues) and its wake key rung; a queue new to the registry also
-- rings the new-queue key, which idle workers that do not know the queue yet block on.
-- Needs broken.lua (ring): a wake key or registry of the wrong type is reported, not
-- raised, so that the tasks already queued are not refused with it.
local function padded(id)  -- a task id as a ready zset's member: equal priorities keep their order (keys.padded_id)
  return string.format('%012d', tonumber(id))
end
local function announce(registry, member, wake)  -- whether `member` is new (then ring the new-queue key)
  local added = redis.pcall('SADD', registry, member)
  ring(wake)
  return not failed(added, registry) and added == 1
end
