-- One consistent snapshot for WorkQueue.stats and `wq-redis status`.
-- KEYS: 1 registry set, 2 leases zset, 3 done list, 4 stats hash, 5 workers zset
-- ARGV: 1 key prefix, 2 worker timeout ms
-- Returns {{member, waiting}..., running, with_results, {counters}, {{name, {record}}...}}
local prefix = ARGV[1]
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local queues = {}
for _, m in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  queues[#queues + 1] = {m, redis.call('ZCARD', prefix .. 'ready:' .. m)}
end
local workers = {}
for _, name in ipairs(redis.call('ZRANGEBYSCORE', KEYS[5], now_ms - tonumber(ARGV[2]), '+inf')) do
  workers[#workers + 1] = {name, redis.call('HGETALL', prefix .. 'w:' .. name)}
end
return {queues, redis.call('ZCARD', KEYS[2]), redis.call('LLEN', KEYS[3]),
        redis.call('HGETALL', KEYS[4]), workers}
