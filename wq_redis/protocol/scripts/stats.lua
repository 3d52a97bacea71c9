#!lua flags=no-writes
-- One consistent snapshot for WorkQueue.stats and `wq-redis status`.
-- KEYS: 1 registry set, 2 leases zset, 3 done list, 4 stats hash, 5 workers zset
-- ARGV: 1 worker timeout ms, 2 the caller's clock in us (used without TIME)
-- Returns {{{member, waiting}...}, running count, with_results, {counters},
--          {{name, {record}}...}, {{worker, member, tasks, alloc} per running task or pack},
--          {{key, error}...} keys it could not read (wrong type, or not readable by this
--          ACL user): skipped, counted as empty}
-- Counts are in tasks: a pack's members each count (the stats hash's pack_* fields).
-- Committed resources come from the leases themselves, not from heartbeats, so they are
-- exact at every instant.  Flagged no-writes, called with EVALSHA_RO: read-only users run it.
--#include prefix
local now = redis.pcall('TIME')  -- a read-only ACL user may lack TIME: then the caller's clock
if now.err then now = {string.sub(ARGV[2], 1, -7), string.sub(ARGV[2], -6)} end
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
--#include broken
--#include counts
local queues = {}
for _, m in ipairs(read({}, 'SMEMBERS', KEYS[1])) do
  -- a pack's other members (packing.py) wait in it: counted in the stats hash
  local packed = tonumber(read(false, 'HGET', KEYS[4], 'pack_waiting:' .. m)) or 0
  queues[#queues + 1] = {m, read(0, 'ZCARD', prefix .. 'ready:' .. m) + read(0, 'LLEN', prefix .. 'fifo:' .. m) + packed}
end
local workers = {}
for _, name in ipairs(read({}, 'ZRANGEBYSCORE', KEYS[5], now_ms - tonumber(ARGV[1]), '+inf')) do
  workers[#workers + 1] = {name, read({}, 'HGETALL', prefix .. 'w:' .. name)}
end
local running = {}
for _, id in ipairs(read({}, 'ZRANGE', KEYS[2], 0, -1)) do
  local t = read({}, 'HMGET', prefix .. 't:' .. id, 'w', 'q', 'n', 'nc', 'alloc')
  if t[1] and t[2] then running[#running + 1] = {t[1], t[2], live(t[3], t[4]), t[5] or ''} end
end
local counters = read({}, 'HGETALL', KEYS[4])
local running_count, done_count = #running, read(0, 'LLEN', KEYS[3])
for i = 1, #counters, 2 do
  if string.sub(counters[i], 1, 13) == 'pack_running:' then running_count = running_count + (tonumber(counters[i + 1]) or 0) end
  if counters[i] == 'pack_done' then done_count = done_count + (tonumber(counters[i + 1]) or 0) end
end
return {queues, running_count, done_count, counters, workers, running, broken}
