-- (include/broken.lua) A key of the wrong type, another client's garbage, must not fail a
-- script halfway: the calls that could meet one go through redis.pcall (redis.call's
-- price), and an error answer is reported in `broken` ({key, error} pairs, returned to the
-- caller, which logs and counts them) instead of raised.
local broken = {}
local function failed(reply, where)  -- whether a redis.pcall answered an error (then reported, with its key)
  if type(reply) == 'table' and reply.err then
    broken[#broken + 1] = {where, reply.err}
    return true
  end
  return false
end
local function ring(key)  -- a wake-up token, at most one in the list (reported if it is no list)
  if not failed(redis.pcall('LPUSH', key, 1), key) then redis.call('LTRIM', key, 0, 0) end
end
local function read(default, command, key, ...)  -- redis.pcall's answer, or `default` (reported)
  local reply = redis.pcall(command, key, ...)
  if failed(reply, key) then return default end
  return reply
end
