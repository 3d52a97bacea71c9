#!lua flags=no-writes
-- One consistent read of a queue for `wq-redis exporter` (Prometheus scrape time).
-- Read-only and bounded: O(ready queues x priority levels + running tasks + workers +
-- sampled results), so a scrape never holds Redis for long.
-- KEYS: 1 registry set, 2 leases zset, 3 done list, 4 stats hash, 5 workers zset,
--       6 in-flight (retrieving) set
-- ARGV: 1 priority levels looked at per ready queue, 2 results sampled, 3 the caller's
--       clock in us (used without TIME)
-- Returns {now_us, {{member, waiting, oldest submit us or -1}...}, {{member, running}...},
--          {counters}, {{name, heartbeat ms, leases held, status, metrics, host, tags, resources}...},
--          finished tasks waiting for retrieval, result bytes sampled, tasks sampled,
--          {{key, error}...}}: the last, keys of the queue it could not read (a wrong type
--          written by another client, or a key this ACL user may not read), skipped.
-- Flagged no-writes and called with EVALSHA_RO: a user with read-only access runs it.
--#include prefix
local levels = tonumber(ARGV[1])
local sample = tonumber(ARGV[2])
local now = redis.pcall('TIME')  -- a read-only ACL user may lack TIME: then the caller's clock
if now.err then now = {string.sub(ARGV[3], 1, -7), string.sub(ARGV[3], -6)} end
local now_us = now[1] .. string.format('%06d', tonumber(now[2]))
--#include broken
local function number(value)
  return tonumber(value) or 0
end

-- Waiting tasks per (class, tag).  A ready set is ordered by priority, then id; the oldest
-- task is the head of one of its priority levels (ids of one manager grow with time,
-- several managers reserve id blocks, so the submit times decide).
local waiting = {}
for _, m in ipairs(read({}, 'SMEMBERS', KEYS[1])) do
  local key = prefix .. 'ready:' .. m
  local count = read(0, 'ZCARD', key) + read(0, 'LLEN', prefix .. 'fifo:' .. m)
                + number(read(false, 'HGET', KEYS[4], 'pack_waiting:' .. m))  -- a pack's other members
  local oldest = -1
  local first = read(false, 'LINDEX', prefix .. 'fifo:' .. m, 0)  -- the oldest at priority 0
  if first then oldest = tonumber(read(false, 'HGET', prefix .. 't:' .. first, 'sub')) or -1 end
  local floor = '-inf'
  for _ = 1, levels do
    local head = read({}, 'ZRANGEBYSCORE', key, floor, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
    if #head == 0 then break end
    local sub = tonumber(read(false, 'HGET', prefix .. 't:' .. head[1], 'sub')) or -1
    if sub >= 0 and (oldest < 0 or sub < oldest) then oldest = sub end
    floor = '(' .. head[2]
  end
  waiting[#waiting + 1] = {m, count, oldest}
end

local by_member, holding = {}, {}
for _, id in ipairs(read({}, 'ZRANGE', KEYS[2], 0, -1)) do
  local t = read({}, 'HMGET', prefix .. 't:' .. id, 'q', 'w')
  if t[1] then by_member[t[1]] = (by_member[t[1]] or 0) + 1 end
  if t[2] then holding[t[2]] = (holding[t[2]] or 0) + 1 end
end
local running = {}
for m, n in pairs(by_member) do
  running[#running + 1] = {m, n + number(read(false, 'HGET', KEYS[4], 'pack_running:' .. m))}
end

local workers = {}
local listed = read({}, 'ZRANGE', KEYS[5], 0, -1, 'WITHSCORES')
for i = 1, #listed, 2 do
  local w = read({}, 'HMGET', prefix .. 'w:' .. listed[i], 'status', 'metrics', 'host', 'tags', 'resources')
  workers[#workers + 1] = {listed[i], listed[i + 1], holding[listed[i]] or 0,
                           w[1] or '', w[2] or '', w[3] or '', w[4] or '', w[5] or ''}
end

-- Bytes of results held for the manager (stdout, return value, output files): summed over
-- at most `sample` of the finished tasks; the caller scales up when more wait.
local finished = read(0, 'LLEN', KEYS[3]) + read(0, 'SCARD', KEYS[6])
                 + number(read(false, 'HGET', KEYS[4], 'pack_done'))
local ids = read({}, 'LRANGE', KEYS[3], 0, sample - 1)
if #ids < sample then
  for _, id in ipairs(read({}, 'SRANDMEMBER', KEYS[6], sample - #ids)) do ids[#ids + 1] = id end
end
local bytes = 0
for _, id in ipairs(ids) do
  local tkey = prefix .. 't:' .. id
  for _, field in ipairs(read({}, 'HKEYS', tkey)) do
    if field == 'out' or field == 'val' or field == 'pr' or string.sub(field, 1, 2) == 'o:' then
      bytes = bytes + read(0, 'HSTRLEN', tkey, field)
    elseif field == 'vk' then  -- a large return value, kept beside the hash
      local vk = read(false, 'HGET', tkey, 'vk')
      if own(vk) then bytes = bytes + read(0, 'STRLEN', own(vk)) end
    end
  end
end
local counters = read({}, 'HGETALL', KEYS[4])
return {now_us, waiting, running, counters, workers, finished, bytes, #ids, broken}
