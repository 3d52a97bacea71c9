-- Ask workers to exit (WorkQueue.shutdown_workers): mark each one's record and wake its
-- heartbeat (its control key), which reads the mark (renew.lua) and drains the worker:
-- it claims nothing more, finishes and delivers what it runs, then exits.  A record that
-- is gone (the worker exited, or was given up for dead) or holds another type is skipped:
-- nothing is written for it; one asked already (still finishing) is not counted again.
-- KEYS: per worker, its record hash and its control list
-- Returns how many workers were asked.
local asked = 0
for i = 1, #KEYS - 1, 2 do
  local record, control = KEYS[i], KEYS[i + 1]
  local own = redis.pcall('HMGET', record, 'resources', 'shutdown')
  if own[1] and not own[2] then
    redis.call('HSET', record, 'shutdown', 1)
    if type(redis.pcall('LPUSH', control, 1)) == 'number' then redis.call('LTRIM', control, 0, 0) end
    asked = asked + 1
  end
end
return asked
