-- (include/counts.lua) A count of a task hash (a pack's n and nc) as a number when it is
-- a whole number (not "1e309", "-1", " 2"...), else `default`: what another client wrote
-- must not break a script's arithmetic.
local function whole(text, default)
  if text and #text < 10 and string.match(text, '^%d+$') then return tonumber(text) end
  return default
end
local function live(n, nc)  -- a pack's members not cancelled (hash fields n, nc), at least 1
  return math.max(whole(n, 1) - whole(nc, 0), 1)
end
