-- Heartbeat of a worker: extend the leases it still holds and report the ones it lost
-- (reaped after expiry, or cancelled), so it can stop those tasks.  A lease whose result
-- this very attempt recorded ("lt", see complete.lua) is not lost: a worker's warm child
-- delivers its fast lane's results itself, before the worker hears of it (worker/lane.py).
-- KEYS: 1 leases zset, 2 workers zset, 3 this worker's record hash
-- ARGV: 1 key prefix, 2 lease ms, 3 worker name, 4 status (JSON), 5.. id, token pairs
-- Returns {lost ids, 1 if the worker's record is intact else 0 (reaped: register again)}
local now = redis.call('TIME')
local registered = redis.call('HEXISTS', KEYS[3], 'resources')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local deadline = now_ms + tonumber(ARGV[2])
redis.call('ZADD', KEYS[2], now_ms, ARGV[3])
redis.call('HSET', KEYS[3], 'status', ARGV[4], 'seen', now_ms)
local lost = {}
for i = 5, #ARGV, 2 do
  local id = ARGV[i]
  local t = redis.call('HMGET', ARGV[1] .. 't:' .. id, 'tok', 'lt')
  if t[1] == ARGV[i + 1] then
    redis.call('ZADD', KEYS[1], 'XX', deadline, id)
  elseif t[2] ~= ARGV[i + 1] then  -- not this attempt's result recorded a moment ago either
    lost[#lost + 1] = id
  end
end
return {lost, registered}
