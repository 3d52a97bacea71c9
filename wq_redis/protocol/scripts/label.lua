-- Publish an automatic category's label (keys.label, a hash): the 16 numbers claim.lua
-- sizes the category's tasks with ("v"), and how many results of the category its
-- manager has learned from ("seen", against "done", which complete.lua counts); then
-- ring the wake keys of the category's queues, whose tasks a claim may now take.
-- KEYS: 1 label hash
-- ARGV: 1 the label, 2 results learned since the last call, 3 "1" when this manager
--       starts (or starts again after Redis lost the queue): whatever was done before is
--       taken as learned, 4 how many of the category's tasks the manager still waits
--       for, 5.. the category's queue members ("CLASS|TAG"), rung here: no more
--       results can be unlearned than those tasks less the ones still waiting in these
--       queues, and a larger gap (another client's garbage) would hold the category's
--       tasks back for ever
-- Another client's garbage at the key (not a hash, or counts that are no numbers) is
-- replaced: the label is the manager's to write.
--#include prefix
--#include broken
local kind = redis.call('TYPE', KEYS[1]).ok
if kind ~= 'hash' and kind ~= 'none' then redis.call('DEL', KEYS[1]) end
local got = redis.call('HMGET', KEYS[1], 'seen', 'done')
local seen, done = tonumber(got[1] or '0') or 0, tonumber(got[2] or '0') or 0
seen = seen + tonumber(ARGV[2])
if ARGV[3] == '1' then seen = math.max(seen, done) end
local waiting = 0
for i = 5, #ARGV do
  for _, count in ipairs({redis.pcall('LLEN', prefix .. 'fifo:' .. ARGV[i]),
                          redis.pcall('ZCARD', prefix .. 'ready:' .. ARGV[i])}) do
    if type(count) == 'number' then waiting = waiting + count end
  end
end
seen = math.max(seen, done - math.max(0, tonumber(ARGV[4]) - waiting))
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'seen', seen, 'done', done)
for i = 5, #ARGV do ring(prefix .. 'wake:' .. ARGV[i]) end
return 1
