-- Retry a task at its category's maximum: Work Queue's answer to a task of an automatic
-- category that ran out of its first allocation (category_next_label).  The attempt
-- that ran out is dropped, not recorded; the task waits again, at once, in the queue of
-- its class at the maximum (".k" becomes ".K", resources.py), where claim.lua gives it
-- the category's maximum label.  Fenced by the lease token, as complete.lua is.
-- KEYS: 1 task hash, 2 leases zset, 3 registry set, 4 new-queue wake list
-- ARGV: 1 task id, 2 lease token
-- Returns 1 when requeued, 0 when not (the lease is not this attempt's, or the class has
-- no first allocation to leave): the worker then records the result as it is.
--#include prefix
--#include broken
--#include enqueue
local t = redis.pcall('HMGET', KEYS[1], 'tok', 'q', 'p')
if failed(t, KEYS[1]) or t[1] ~= ARGV[2] or not t[2] or not tonumber(ARGV[1]) then return 0 end
local cls, tag = string.match(t[2], '^([^|]*)|(.*)$')
if not cls then return 0 end
local up, changed = string.gsub(cls, '%.k(%x+)$', '.K%1')
if changed ~= 1 then return 0 end
local member = up .. '|' .. tag
local score = tonumber(t[3] or '0') or 0
local pushed, queue
if score ~= 0 then
  queue = prefix .. 'ready:' .. member
  pushed = redis.pcall('ZADD', queue, score, padded(ARGV[1]))
else
  queue = prefix .. 'fifo:' .. member
  pushed = redis.pcall('LPUSH', queue, ARGV[1])  -- at the front: it was taken first
end
if failed(pushed, queue) then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], 's', 1, 'tok', '', 'q', member)
if announce(KEYS[3], member, prefix .. 'wake:' .. member) then ring(KEYS[4]) end
return 1
