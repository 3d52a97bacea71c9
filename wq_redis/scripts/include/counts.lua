-- (include/counts.lua) A count of a task hash (a pack's n and nc) as a number when it is
-- a whole number (not "1e309", "-1", " 2"...), else `default`: what another client wrote
-- must not break a script's arithmetic.
local function whole(text, default)
  if text and #text < 10 and string.match(text, '^%d+$') then return tonumber(text) end
  return default
end
