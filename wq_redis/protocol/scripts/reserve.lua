-- Reserve a block of task ids: the seq counter goes up by the block's size.
-- It never hands out an id at or below the highest one the manager holds: should the
-- counter have gone back (Redis lost it with the queue's state, or another client wrote
-- it), it is first moved up to that id, so a task submitted before the manager notices
-- the loss never takes the id of one it holds (its books are by id).
-- KEYS: 1 seq; ARGV: 1 block size, 2 the highest task id the manager holds
-- Returns the last id of the block.
local floor = tonumber(ARGV[2])
if floor > 0 and floor > (tonumber(redis.call('GET', KEYS[1]) or '0') or 0) then
  redis.call('SET', KEYS[1], floor)
end
return redis.call('INCRBY', KEYS[1], ARGV[1])
