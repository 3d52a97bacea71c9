-- Heartbeat of a worker: extend the leases it still holds and report the ones it lost
-- (reaped after expiry, or cancelled), so it can stop those tasks.  A lease whose result
-- this very attempt recorded ("lt", see complete.lua) is not lost: a worker's warm child
-- delivers its fast lane's results itself, before the worker hears of it (worker/lane.py).
-- It also reads what the manager asks of this worker (worker_control.py): whether it was
-- asked to exit (the record's "shutdown"), and whether its host is blocked now (its entry
-- in the queue's blocked-hosts hash: "0" for good, else the Redis ms it lasts until).
-- It also takes the reaper's lock when asked (ARGV 4): the beat that is due to try the
-- reaper tries it here, without a round trip of its own (an idle worker's calls are few).
-- KEYS: 1 leases zset, 2 workers zset, 3 this worker's record hash, 4 blocked-hosts hash,
--       5 the reaper's lock
-- ARGV: 1 lease ms, 2 worker name, 3 status (JSON; "": leases only, no heartbeat: a
--       sharded queue's partitions other than 0, where the worker has no record,
--       protocol/partitions.py), 4 reaper lock ms (0: not this beat), 5.. id, token pairs
-- A key of the wrong type (another client's garbage) is skipped and reported, so that the
-- others still renew: a record that is no hash reads as gone (the worker registers again,
-- which replaces it), a task hash that is no hash as a lost lease.  Renewals change
-- nothing but deadlines and the record: a failure halfway loses nothing.
-- Returns {lost ids, 1 if the worker's record is intact else 0 (reaped: register again),
-- broken = {{key, error}...}, 1 if asked to exit else 0, 1 if its host is blocked else 0,
-- 1 if it took the reaper's lock else 0}
--#include prefix
--#include broken
local now = redis.call('TIME')
local registered = redis.pcall('HEXISTS', KEYS[3], 'resources')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local deadline = now_ms + tonumber(ARGV[1])
local shutdown, blocked = 0, 0
if ARGV[3] == '' then
  registered = 1  -- leases only: the worker's record is in partition 0
else
  failed(redis.pcall('ZADD', KEYS[2], now_ms, ARGV[2]), KEYS[2])
  if failed(registered, KEYS[3]) then
    registered = 0
  else
    redis.call('HSET', KEYS[3], 'status', ARGV[3], 'seen', now_ms)
    local own = redis.call('HMGET', KEYS[3], 'shutdown', 'host')
    if own[1] then shutdown = 1 end
    if own[2] then
      local untl = read(false, 'HGET', KEYS[4], own[2])
      if untl and (untl == '0' or (tonumber(untl) or 0) > now_ms) then blocked = 1 end
    end
  end
end
local lost = {}
local leases_ok = true
for i = 5, #ARGV, 2 do
  local id = ARGV[i]
  local tkey = prefix .. 't:' .. id
  local t = redis.pcall('HMGET', tkey, 'tok', 'lt')
  if failed(t, tkey) then
    lost[#lost + 1] = id
  elseif t[1] == ARGV[i + 1] then
    if leases_ok and failed(redis.pcall('ZADD', KEYS[1], 'XX', deadline, id), KEYS[1]) then
      leases_ok = false  -- (the leases' deadlines wait for the key to be repaired)
    end
  elseif t[2] ~= ARGV[i + 1] then  -- not this attempt's result recorded a moment ago either
    lost[#lost + 1] = id
  end
end
local reaper = 0
local lock_ms = tonumber(ARGV[4]) or 0
if lock_ms > 0 and KEYS[5] then
  local took = redis.pcall('SET', KEYS[5], ARGV[2], 'NX', 'PX', lock_ms)
  if not failed(took, KEYS[5]) and took then reaper = 1 end
end
return {lost, registered, broken, shutdown, blocked, reaper}
