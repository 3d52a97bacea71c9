-- Hand finished tasks to the manager, many per round trip, in two phases so that no
-- result is lost between Redis and the manager (a reply lost on the wire and re-asked by
-- the client's retry, or a manager that crashed before it took them):
--   1. ack: ids the manager has taken since its last call end their life here (deleted,
--      or kept as RETRIEVED for a TTL) and are counted;
--   2. hand out: ids still in flight (handed out, never acked) plus ids moved from the
--      done list, up to the maximum.  The manager ignores ids it already has.
-- KEYS: 1 done list, 2 stats hash, 3 in-flight set
-- ARGV: 1 key prefix, 2 max tasks, 3 keep seconds (0 = delete now), 4.. acked ids
-- Returns {{{id, {fields}}...}, tasks outstanding (submitted, neither retrieved nor cancelled)}
local prefix = ARGV[1]
local max_tasks = tonumber(ARGV[2])
local keep = tonumber(ARGV[3])
local retrieved, failed = 0, 0
for i = 4, #ARGV do
  if redis.call('SREM', KEYS[3], ARGV[i]) == 1 then
    local tkey = prefix .. 't:' .. ARGV[i]
    retrieved = retrieved + 1
    local t = redis.call('HMGET', tkey, 'r', 'vk')
    if t[1] ~= '0' then failed = failed + 1 end
    if keep > 0 then
      redis.call('HSET', tkey, 's', 4)
      redis.call('EXPIRE', tkey, keep)
      if t[2] then redis.call('EXPIRE', t[2], keep) end
    else
      redis.call('DEL', tkey)
      if t[2] then redis.call('DEL', t[2]) end
    end
  end
end
if retrieved > 0 then
  redis.call('HINCRBY', KEYS[2], 'retrieved', retrieved)
  redis.call('HINCRBY', KEYS[2], 'failed', failed)
end
local counts = redis.call('HMGET', KEYS[2], 'submitted', 'retrieved', 'canceled')
local outstanding = (tonumber(counts[1]) or 0) - (tonumber(counts[2]) or 0) - (tonumber(counts[3]) or 0)
if max_tasks <= 0 then return {{}, outstanding} end
local ids = redis.call('SRANDMEMBER', KEYS[3], max_tasks)
if #ids < max_tasks then
  local more = redis.call('LPOP', KEYS[1], max_tasks - #ids)
  if more then
    redis.call('SADD', KEYS[3], unpack(more))  -- LPOP's count is at most max_tasks (1000)
    for _, id in ipairs(more) do ids[#ids + 1] = id end
  end
end
-- A task's hash goes back whole (HGETALL) unless it has large fields (named by "big",
-- which are never read here): then everything but what the manager sent itself
-- (arguments, input files, signature), field by field.
local inputs = {['in:'] = true, ['cin:'] = true, ['tin:'] = true, ['ctin:'] = true}
local unwanted = {args = true, sig = true, fn = true, big = true}
local function wanted(name)
  if unwanted[name] then return false end
  local colon = string.find(name, ':', 1, true)
  return not (colon and inputs[string.sub(name, 1, colon)])
end
local out = {}
for _, id in ipairs(ids) do
  local tkey = prefix .. 't:' .. id
  local fields = {}
  if redis.call('HEXISTS', tkey, 'big') == 0 then
    fields = redis.call('HGETALL', tkey)
  else
    local names = {}
    for _, name in ipairs(redis.call('HKEYS', tkey)) do
      if wanted(name) then names[#names + 1] = name end
    end
    for first = 1, #names, 500 do  -- HMGET in chunks: unpack() has a stack limit
      local chunk = {unpack(names, first, math.min(first + 499, #names))}
      local values = redis.call('HMGET', tkey, unpack(chunk))
      for i, name in ipairs(chunk) do
        fields[#fields + 1] = name
        fields[#fields + 1] = values[i]
      end
    end
  end
  if #fields > 0 then
    out[#out + 1] = {id, fields}
  else
    redis.call('SREM', KEYS[3], id)
  end
end
return {out, outstanding}
