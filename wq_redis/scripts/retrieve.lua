-- Hand finished tasks to the manager, many per round trip, and end their life in Redis
-- (deleted, or kept as RETRIEVED for a TTL).
-- KEYS: 1 done list, 2 stats hash
-- ARGV: 1 key prefix, 2 max tasks, 3 keep seconds (0 = delete now)
local ids = redis.call('LPOP', KEYS[1], tonumber(ARGV[2]))
if not ids then return {} end
local keep = tonumber(ARGV[3])
local out = {}
local failed = 0
for _, id in ipairs(ids) do
  local tkey = ARGV[1] .. 't:' .. id
  local fields = redis.call('HGETALL', tkey)
  if #fields > 0 then
    out[#out + 1] = {id, fields}
    if redis.call('HGET', tkey, 'r') ~= '0' then failed = failed + 1 end
    if keep > 0 then
      redis.call('HSET', tkey, 's', 4)
      redis.call('EXPIRE', tkey, keep)
    else
      redis.call('DEL', tkey)
    end
  end
end
redis.call('HINCRBY', KEYS[2], 'retrieved', #out)
redis.call('HINCRBY', KEYS[2], 'failed', failed)
return out
