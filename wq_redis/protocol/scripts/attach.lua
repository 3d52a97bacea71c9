-- A manager attaches to its queue: at construction, and again after it found that Redis
-- lost the queue's state (retrieve.lua returns the incarnation on every call).
-- The incarnation is a random token written once (SET NX) when the queue is first
-- attached to; a Redis that lost its data has none, so a manager notices the loss.
-- Task ids are reserved from the seq counter: it is moved up to the highest id the
-- manager holds, so ids handed out after a loss never collide with its own.
-- KEYS: 1 incarnation, 2 seq, 3 stats hash, 4 done list, 5 in-flight set
-- ARGV: 1 a new token (used when there is none), 2 the highest task id the manager holds
-- Returns {incarnation, whether tasks may be outstanding (counters or lists not empty)}
-- Only a token as managers write them (hex) counts: another client's key of the wrong type,
-- or a string that is no token (an empty one is a manager's mark that its recovery is
-- not done, never accepted by submit.lua), is replaced, or the queue could never be used.
if redis.call('TYPE', KEYS[1])['ok'] ~= 'string' or not string.match(redis.call('GET', KEYS[1]), '^%x+$') then
  redis.call('DEL', KEYS[1])
end
redis.call('SET', KEYS[1], ARGV[1], 'NX')
local highest = tonumber(ARGV[2])
if highest > (tonumber(redis.call('GET', KEYS[2]) or '0') or 0) then
  redis.call('SET', KEYS[2], highest)
end
local counts = redis.call('HMGET', KEYS[3], 'submitted', 'retrieved', 'canceled')
local outstanding = (tonumber(counts[1]) or 0) - (tonumber(counts[2]) or 0) - (tonumber(counts[3]) or 0)
local busy = outstanding > 0 or redis.call('LLEN', KEYS[4]) > 0 or redis.call('SCARD', KEYS[5]) > 0
return {redis.call('GET', KEYS[1]), busy and 1 or 0}
