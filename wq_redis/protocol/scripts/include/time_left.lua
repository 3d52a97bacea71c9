-- (include/time_left.lua) For claim.lua, a worker with an end (--wall-time, ARGV 18): what
-- time a task asks of it.  Needs `prefix`, `now_ms` and `life_ms` (the worker's time left).
-- The milliseconds task `id` runs at most (0: no maximum), or nil when it cannot end
-- within `budget_ms` nor before this worker's end (claim.lua's header).  Numbers are read from
-- the spec's JSON text (pack_spec: "name":number, top level; a name inside a string has
-- its quotes escaped); what is no number counts as absent (the worker fails such a task).
local function spec_number(spec, name)
  return tonumber(string.match(spec, '"' .. name .. '":([%d.eE+%-]+)') or '') or 0
end
local function time_asked(id, budget_ms)
  if not id then return 0 end  -- not a task id (another client's): popped and dropped as ever
  local spec = redis.pcall('HGET', prefix .. 't:' .. id, 'spec')
  if type(spec) ~= 'string' then return 0 end  -- no spec (a plain PythonTask); no hash: take() tells
  local max_ms = math.max(spec_number(spec, 'running_time_max') * 1000, 0)
  if max_ms > budget_ms or spec_number(spec, 'running_time_min') * 1000 > budget_ms
     or spec_number(spec, 'end_time') / 1000 > now_ms + life_ms then
    return nil
  end
  return max_ms
end
