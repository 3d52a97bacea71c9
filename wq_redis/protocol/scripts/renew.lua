-- Heartbeat of a worker: extend the leases it still holds and report the ones it lost
-- (reaped after expiry, or cancelled), so it can stop those tasks.  A lease whose result
-- this very attempt recorded ("lt", see complete.lua) is not lost: a worker's warm child
-- delivers its fast lane's results itself, before the worker hears of it (worker/lane.py).
-- KEYS: 1 leases zset, 2 workers zset, 3 this worker's record hash
-- ARGV: 1 key prefix, 2 lease ms, 3 worker name, 4 status (JSON), 5.. id, token pairs
-- A key of the wrong type (another client's garbage) is skipped and reported, so that the
-- others still renew: a record that is no hash reads as gone (the worker registers again,
-- which replaces it), a task hash that is no hash as a lost lease.  Renewals change
-- nothing but deadlines and the record: a failure halfway loses nothing.
-- Returns {lost ids, 1 if the worker's record is intact else 0 (reaped: register again),
-- broken = {{key, error}...}}
--#include broken
local now = redis.call('TIME')
local registered = redis.pcall('HEXISTS', KEYS[3], 'resources')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local deadline = now_ms + tonumber(ARGV[2])
failed(redis.pcall('ZADD', KEYS[2], now_ms, ARGV[3]), KEYS[2])
if failed(registered, KEYS[3]) then
  registered = 0
else
  redis.call('HSET', KEYS[3], 'status', ARGV[4], 'seen', now_ms)
end
local lost = {}
local leases_ok = true
for i = 5, #ARGV, 2 do
  local id = ARGV[i]
  local tkey = ARGV[1] .. 't:' .. id
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
return {lost, registered, broken}
