-- Hand finished tasks to the manager, many per round trip, in two phases so that no
-- result is lost between Redis and the manager (a reply lost on the wire and re-asked by
-- the client's retry, or a manager that crashed before it took them):
--   1. ack: ids the manager has taken since its last call end their life here (deleted,
--      or kept as RETRIEVED for a TTL) and are counted; ids it took but did not submit
--      (a stranger's, pushed into the done list) are only released from the in-flight
--      set: neither counted nor deleted (not the manager's to end);
--   2. hand out: ids still in flight (handed out, never acked) plus ids moved from the
--      done list, up to the maximum, whose hash is finished (state 3).  An id without a
--      hash, or whose task is not finished (a stray or duplicate entry), is dropped
--      here: the task's own completion pushes it again.  The manager ignores ids it
--      already has, and those it never submitted.
-- Also returns the queue's incarnation (a token written once when the queue is created,
-- attach.lua): missing or changed, Redis lost the queue's state, and the manager
-- resubmits what it holds, with no extra round trip to find out.
-- KEYS: 1 done list, 2 stats hash, 3 in-flight set, 4 incarnation
-- ARGV: 1 max tasks, 2 keep seconds (0 = delete now), 3 n, 4..3+n acked ids, then ids
--       to release (taken, not the manager's)
-- Returns {{{id, {fields}}...}, incarnation or false}
--#include prefix
local max_tasks = tonumber(ARGV[1])
local keep = tonumber(ARGV[2])
local last_acked = 3 + tonumber(ARGV[3])
local retrieved, failed = 0, 0
--#include counts
for first = last_acked + 1, #ARGV, 1000 do
  redis.call('SREM', KEYS[3], unpack(ARGV, first, math.min(first + 999, #ARGV)))
end
-- Ids still in flight (a re-sent ack finds them gone), then their keys end in bulk.
local acked = {}
for first = 4, last_acked, 1000 do  -- in chunks: unpack() has a stack limit
  local chunk = {unpack(ARGV, first, math.min(first + 999, last_acked))}
  local present = redis.call('SMISMEMBER', KEYS[3], unpack(chunk))
  for i, id in ipairs(chunk) do
    if present[i] == 1 then acked[#acked + 1] = id end
  end
end
local owned = {}  -- each acked task's keys: its hash, its large return value, its large fields
local function own_lines(list, base)
  for name in string.gmatch(list, '[^\n]+') do owned[#owned + 1] = own(base .. name) end
end
for _, id in ipairs(acked) do
  local tkey = prefix .. 't:' .. id
  local t = redis.call('HMGET', tkey, 'r', 'vk', 'big', 'n', 'vks', 'nf', 'nc', 'fids')
  if t[4] then
    -- a pack (packing.py): its live members count ('nf' of them failed, named in
    -- 'fids'); the 'nc' cancelled were counted then.  A pack-level 'r' means it ended as
    -- a whole (its lease lost, no retry left): every member failed.  Large member
    -- values ('vks') are keys of their own.
    local members = live(t[4], t[7])
    retrieved = retrieved + members
    if t[1] then
      if t[1] ~= '0' then failed = failed + members end
    else
      failed = failed + whole(t[6], 0)
      if t[7] and t[8] then  -- a failed member cancelled while the pack ran: not counted twice
        for id in string.gmatch(t[8], '%d+') do
          if redis.call('HEXISTS', tkey, 'pc:' .. id) == 1 then failed = failed - 1 end
        end
      end
    end
    if members > 1 then redis.call('HINCRBY', KEYS[2], 'pack_done', 1 - members) end
    if t[5] then own_lines(t[5], '') end
  else
    retrieved = retrieved + 1
    if t[1] ~= '0' then failed = failed + 1 end
  end
  owned[#owned + 1] = tkey
  if own(t[2]) then owned[#owned + 1] = own(t[2]) end
  if t[3] then own_lines(t[3], tkey .. ':') end
  if keep > 0 then redis.call('HSET', tkey, 's', 4) end
end
for first = 1, #acked, 1000 do
  redis.call('SREM', KEYS[3], unpack(acked, first, math.min(first + 999, #acked)))
end
if keep > 0 then
  for _, key in ipairs(owned) do redis.call('EXPIRE', key, keep) end
else
  for first = 1, #owned, 1000 do
    redis.call('DEL', unpack(owned, first, math.min(first + 999, #owned)))
  end
end
if retrieved > 0 then redis.call('HINCRBY', KEYS[2], 'retrieved', retrieved) end
if failed ~= 0 then redis.call('HINCRBY', KEYS[2], 'failed', failed) end
local incarnation = redis.pcall('GET', KEYS[4])
if type(incarnation) == 'table' then incarnation = false end  -- not a string: a stranger's key, state lost
if max_tasks <= 0 then return {{}, incarnation} end
local ids = redis.call('SRANDMEMBER', KEYS[3], max_tasks)
if #ids < max_tasks then
  local more = redis.call('LPOP', KEYS[1], max_tasks - #ids)
  if more then
    redis.call('SADD', KEYS[3], unpack(more))  -- LPOP's count is at most max_tasks (1000)
    for _, id in ipairs(more) do ids[#ids + 1] = id end
  end
end
-- A task's hash goes back whole (its large fields, named by "big", are keys of their
-- own and never read here).
local out = {}
for _, id in ipairs(ids) do
  local fields = redis.call('HGETALL', prefix .. 't:' .. id)
  local finished = false
  for f = 1, #fields, 2 do
    if fields[f] == 's' then
      finished = fields[f + 1] == '3'
      break
    end
  end
  if finished then
    out[#out + 1] = {id, fields}
  else
    redis.call('SREM', KEYS[3], id)
  end
end
return {out, incarnation}
