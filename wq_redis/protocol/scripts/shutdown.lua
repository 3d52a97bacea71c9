-- Ask workers to exit (WorkQueue.shutdown_workers): mark each one's record.  A worker reads
-- the mark at its next heartbeat (renew.lua) and drains: it claims nothing more, finishes
-- and delivers what it runs, then exits.  A record that is gone (the worker exited, or was
-- given up for dead) or holds another type is skipped: nothing is written for it; one
-- asked already (still finishing) is not counted again.
-- KEYS: the workers' record hashes
-- Returns how many workers were asked.
local asked = 0
for _, record in ipairs(KEYS) do
  local own = redis.pcall('HMGET', record, 'resources', 'shutdown')
  if own[1] and not own[2] then
    redis.call('HSET', record, 'shutdown', 1)
    asked = asked + 1
  end
end
return asked
