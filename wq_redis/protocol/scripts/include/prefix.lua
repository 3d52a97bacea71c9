-- (include/prefix.lua) The queue's key prefix "wq:{NAME}:", taken from KEYS[1] (every
-- script's first key is one of the queue's, keys.py), never from ARGV: a key a script
-- builds is the prefix (or a declared key) and a suffix, so it carries the hash tag
-- {NAME} of KEYS[1] and lives in its slot (Redis Cluster runs the script there) and
-- under the queue's ACL pattern.  A key name read from data (a task's large value "vk",
-- sent by a worker or stored in a hash) is used only through own(): kept when it starts
-- with the prefix, else nil (another client's value must not make a script touch
-- another queue's keys).  tests/test_script_keys.py checks every script keeps this rule.
local prefix = string.match(KEYS[1], '^wq:{[^}]*}:')
local function own(text)
  if type(text) == 'string' and string.sub(text, 1, #prefix) == prefix then return text end
  return nil
end
