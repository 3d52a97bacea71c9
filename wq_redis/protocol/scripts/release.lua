-- Hand a task back without counting the attempt (a worker stopping at once): expire its
-- lease now so the next reap requeues it.
-- KEYS: 1 task hash, 2 leases zset
-- ARGV: 1 task id, 2 lease token
if redis.call('HGET', KEYS[1], 'tok') ~= ARGV[2] then return 0 end
redis.call('HINCRBY', KEYS[1], 'a', -1)
-- the token goes too, so a renewal already on its way cannot extend the lease again
redis.call('HSET', KEYS[1], 'tok', '')
redis.call('ZADD', KEYS[2], 'XX', 0, ARGV[1])
return 1
