-- Claim up to N tasks that fit a worker's free resources, atomically with their leases,
-- so no crash between pop and lease can lose a task.
-- Candidate queues are the registered (class, tag) queues whose tag the worker takes.
-- Each pick takes the head with the highest priority among queues whose class still
-- fits; ties go to the larger class (gpus, cores, memory, disk), so big tasks are not
-- starved by a stream of small ones.
-- KEYS: 1 registry set, 2 leases zset, 3 stats hash, 4 blocked-hosts hash, 5 new-queue wake
--       key, 6 this worker's record hash, 7 this worker's control key
-- ARGV: 1 worker name, 2 free cores, 3 free memory, 4 free disk, 5 free gpus,
--       6 tags joined by "\n" ("" = every tag), 7 max tasks, 8 lease ms,
--       9 token prefix (unique per worker process, so tokens never repeat),
--       10-13 the worker's total cores, memory, disk, gpus, 14 reserve after ms (0 = never),
--       15 followers: up to this many more tasks of the same queue may follow each task
--       taken, to run after it on the same resources (short tasks: one round trip and
--       one message to a warm child for many), 16 bytes a task and its followers may
--       hold at most (the first task is taken whatever its size), 17 bytes one task may
--       hold at most (--max-task-bytes; 0 = no cap), 18 milliseconds this worker has left
--       (wq-redis worker --wall-time; 0 = no end, below 0 = ended: take nothing),
--       19 how many queues were registered at this worker's last claim (-1: unknown),
--       20 "1" when this claim ends a wait for work (its BLPOP came first in the pipeline),
--       21 "1": ring the worker's control key if this claim takes anything (its heartbeat
--       waits an idle worker's long period; worker/leases.py)
-- Large fields named by a task's "big" field (string keys HASH:NAME) are left for the
-- worker to read; their sizes are read here (STRLEN), so that a task over the cap, or
-- one whose large field is not a string, is leased and handed to the worker "refused"
-- (its hash's small fields only, never its large ones): the worker fails it at once
-- instead of loading it.
-- A key of the wrong type (a hostile or buggy client) must not stop the queue: every
-- read of a key that could hold anything goes through redis.pcall (the same cost as
-- redis.call), and a sub-queue, task hash or wake key that cannot be read is skipped and
-- reported in `broken`; the leases zset is checked before anything is popped (a claim
-- whose leases cannot be written must take nothing).
-- A worker with an end (ARGV 18) takes only tasks that can end before it (Work Queue's
-- check_worker_against_task, with our running_time_max): a group whose running_time_max
-- adds up to more than its time left, or whose running_time_min (Work Queue) is more, or
-- whose end_time is later than the worker's end stays queued, for others.  Those three are
-- read from the head's spec before it is popped (one HGET, only for such a worker); a task
-- without them is taken, as Work Queue does, and handed back if still running at the end.
-- A queue whose head is left is not taken from again in this claim (its other tasks wait
-- behind it), its wake key is rung for other workers, and it is left out of `eligible`, so
-- that this worker does not wake itself for it.
-- A task that fits the worker's total but not its free resources, and has waited longer
-- than "reserve after", makes the worker claim nothing smaller until it fits: without
-- that, a stream of small tasks would starve it forever.
-- Wake-ups are one data-free token per queue, so none may be lost (an idle worker waits
-- for them long, see worker/loop.py): a claim that ends a wait rings again the queues it
-- found waiting and did not take from (the token that ended its wait may have been
-- theirs), and a worker that finds more queues registered than at its last claim rings
-- the new-queue key once: idle workers that do not know the new queue yet wait on it
-- only, so each wakes the next in turn until all know it.
-- Returns {claimed, eligible, broken, registered}: claimed = {{id, token, member, {hash fields...}, follows[, refused, code]}, ...}
-- (follows = 1: runs after the task before it, on its resources; refused: why the worker
-- must fail the task without loading it, with result code `code` (16 resource exhaustion:
-- over the cap, 1 input missing: a large field unreadable, 32 unknown: a pack's count or
-- members that another client made unreadable), absent for a task to run);
-- eligible = members that fit the free resources (the worker blocks on their wake keys);
-- broken = {{key, error}...}: keys of this queue that could not be read or written;
-- registered = how many queues are registered (absent when the claim stopped before).
--#include prefix
local worker = ARGV[1]
local free = {tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])}
local tags = nil
if ARGV[6] ~= '' then
  tags = {}
  for t in string.gmatch(ARGV[6], '[^\n]+') do tags[t] = true end
end
local max_tasks = tonumber(ARGV[7])
local lease_ms = tonumber(ARGV[8])
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local now_us = now[1] .. string.format('%06d', tonumber(now[2]))
local life_ms = tonumber(ARGV[18] or 0)
if life_ms < 0 then return {{}, {}, {}} end  -- this worker's end has come: it takes nothing

--#include broken

local registered = redis.pcall('SMEMBERS', KEYS[1])
if failed(registered, KEYS[1]) or failed(redis.pcall('ZCARD', KEYS[2]), KEYS[2]) then
  return {{}, {}, broken}  -- nothing can be claimed (and leased) from this queue now
end
local total = {tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13])}

-- A worker on a host the manager blocked (WorkQueue.block_host; renew.lua reads the same
-- entry) takes nothing, even with a claim sent before it heard of the block (with its wait).
if KEYS[4] and redis.call('EXISTS', KEYS[4]) == 1 then
  local host = read(false, 'HGET', KEYS[6], 'host')
  local untl = host and read(false, 'HGET', KEYS[4], host)
  if untl and (untl == '0' or (tonumber(untl) or 0) > now_ms) then return {{}, {}, broken, #registered} end
end

-- A class (resources.py): what its tasks declared (-1 unset), the category minimum,
-- the proportional flags and an automatic category.  Returns nil for a name that is not
-- a class (another client's member: skipped).
local function parse_class(cls)
  local c, rest = string.match(cls, '^c(%-?%d+)(.*)$')
  if not c then return nil end
  local class = {max = {tonumber(c), -1, -1, -1}, min = {-1, -1, -1, -1}, proportional = true, whole = true}
  for i, pattern in ipairs({'^%.m(%-?%d+)(.*)$', '^%.d(%-?%d+)(.*)$', '^%.g(%-?%d+)(.*)$'}) do  -- each left out when unset
    local v, after = string.match(rest, pattern)
    if v then class.max[i + 1], rest = tonumber(v), after end
  end
  local n1, n2, n3, n4, after = string.match(rest, '^%.n(%-?%d+)%.(%-?%d+)%.(%-?%d+)%.(%-?%d+)(.*)$')
  if n1 then
    class.min, rest = {tonumber(n1), tonumber(n2), tonumber(n3), tonumber(n4)}, after
  end
  local p, w, after_p = string.match(rest, '^%.p([01])([01])(.*)$')
  if p then
    class.proportional, class.whole, rest = p == '1', w == '1', after_p
  end
  local kind, hex, after_k = string.match(rest, '^%.([kK])(%x+)(.*)$')
  if kind then
    class.label, class.at_max, rest = prefix .. 'label:' .. hex, kind == 'K', after_k
  end
  if rest ~= '' then return nil end
  return class
end

-- An automatic category's label (keys.label): its declared values fill what the task left
-- unset, and its minimum is the label, else the largest measured, never below the
-- category's minimum (category.c: category_task_max_resources, _min_resources).  A label
-- that is absent or unreadable leaves the task as it declared itself.  While results of
-- the category are recorded that its manager has not learned from yet ("done" above
-- "seen"), its tasks are not taken (`stale`): Work Queue sizes each task knowing every
-- result before it.
local function apply_label(class)
  local got = redis.pcall('HMGET', class.label, 'v', 'seen', 'done')
  if failed(got, class.label) then return end
  local done, seen = tonumber(got[3] or '0'), tonumber(got[2] or '0')
  class.stale = done ~= nil and seen ~= nil and done > seen
  local text = got[1]
  if type(text) ~= 'string' then return end
  local v = {}
  for n in string.gmatch(text, '%-?%d+') do v[#v + 1] = tonumber(n) end
  if #v ~= 16 then return end
  local base = class.at_max and 4 or 0
  for i = 1, 4 do
    if class.max[i] < 0 then class.max[i] = v[base + i] end
    local least = class.max[i] > -1 and class.max[i] or v[8 + i]
    class.min[i] = math.max(class.min[i], least, v[12 + i])
  end
end

-- What a task of `class` is given on this worker: Work Queue's task_worker_box_size, with
-- the worker's total as its "largest" (cores, memory, disk, gpus in the class's order).
local function box(class)
  local L = {class.max[1], class.max[2], class.max[3], class.max[4]}
  local T = total
  local whole_worker = true
  if class.proportional then
    local share = -1
    for i = 1, 4 do
      if T[i] > 0 then share = math.max(share, L[i] / T[i]) end
    end
    if share > 0 and share <= 1 then
      whole_worker = false
      if class.whole then share = 1.0 / math.floor(1.0 / share) end
      if L[1] < 0 and L[4] > 0 then
        L[1] = 0  -- a GPU task that did not declare cores gets none
      else
        L[1] = math.max(1, L[1], math.floor(T[1] * share))
      end
      if L[4] < 0 then L[4] = 0 end
      L[2] = math.max(1, L[2], math.floor(T[2] * share))
      L[3] = math.max(1, L[3], math.floor(T[3] * share))
    end
  end
  if L[1] < 1 and L[2] < 1 and L[3] < 1 and L[4] < 1 then whole_worker = true end
  for i = 1, 4 do
    if L[i] > 0 and L[i] >= T[i] then whole_worker = true end
  end
  if whole_worker then
    if L[1] <= 0 then L[1] = L[4] > 0 and 0 or T[1] end
    if L[4] <= 0 then L[4] = 0 end
    if L[2] <= 0 then L[2] = T[2] end
    if L[3] <= 0 then L[3] = T[3] end
  end
  for i = 1, 4 do L[i] = math.max(L[i], class.min[i]) end
  return L
end

local cands = {}
for _, m in ipairs(registered) do
  local cls, tag = string.match(m, '^([^|]*)|(.*)$')
  if cls and (tags == nil or tags[tag]) then
    local class = parse_class(cls)
    if class then
      if class.label then apply_label(class) end
      local need = box(class)
      cands[#cands + 1] = {member = m, key = prefix .. 'ready:' .. m, fifo = prefix .. 'fifo:' .. m, need = need,
                           stale = class.stale, sized = class.label ~= nil}
    end
  end
end
local order = {4, 1, 2, 3}
table.sort(cands, function(a, b)
  for _, i in ipairs(order) do
    if a.need[i] ~= b.need[i] then return a.need[i] > b.need[i] end
  end
  return a.member < b.member
end)

local function fits(need)
  for i = 1, 4 do
    if need[i] > free[i] then return false end
  end
  return true
end

-- The head of a queue: its first prioritized id if that beats priority 0, else the first
-- of its priority-0 list, else its first prioritized id.  Returns score, 'z'|'l', or nil
-- (also for a queue one of whose keys has the wrong type: it is reported, then skipped).
local function head_of(c)
  if c.broken then return nil end
  local head = redis.pcall('ZRANGE', c.key, 0, 0, 'WITHSCORES')
  local length = redis.pcall('LLEN', c.fifo)
  if failed(head, c.key) then c.broken = true end
  if failed(length, c.fifo) then c.broken = true end
  if c.broken then return nil end
  if #head > 0 and tonumber(head[2]) < 0 then return tonumber(head[2]), 'z' end
  if length > 0 then return 0, 'l' end
  if #head > 0 then return tonumber(head[2]), 'z' end
  return nil
end

local function pop(c, from)
  if from == 'l' then return tonumber(redis.call('LPOP', c.fifo)) end
  return tonumber(redis.call('ZPOPMIN', c.key)[1])
end

local function peek(c)
  local _, from = head_of(c)
  if from == 'l' then return redis.call('LINDEX', c.fifo, 0) end
  if from == 'z' then return redis.call('ZRANGE', c.key, 0, 0)[1] end
  return nil
end

--#include time_left

local eligible = {}
for _, c in ipairs(cands) do
  if fits(c.need) then eligible[#eligible + 1] = c.member end
end

local reserve_after_ms = tonumber(ARGV[14])
if reserve_after_ms > 0 then
  for _, c in ipairs(cands) do
    local fits_total = true
    for i = 1, 4 do
      if c.need[i] > total[i] then fits_total = false end
    end
    if fits_total and not fits(c.need) then
      local head = peek(c)
      if head and life_ms > 0 and not time_asked(tonumber(head), life_ms) then
        head = nil  -- this worker would not take it: no reason to hold back for it
      end
      if head then
        local submitted = tonumber(head) and redis.pcall('HGET', prefix .. 't:' .. tonumber(head), 'sub')
        if type(submitted) ~= 'string' or not tonumber(submitted) then submitted = nil end  -- not a task hash
        if submitted and now_ms - tonumber(submitted) / 1000 > reserve_after_ms then
          return {{}, {}, broken}  -- draining for it: wake on our own key when a task finishes
        end
      end
    end
  end
end

local followers = tonumber(ARGV[15] or 0)
local max_bytes = tonumber(ARGV[16] or 0)
local max_task_bytes = tonumber(ARGV[17] or 0)
local claimed = {}
local touched = {}
local deadline = now_ms + lease_ms
local leased = {}  -- deadline, id pairs: one ZADD for all at the end
local members = 0  -- tasks claimed, a pack's members each counted

-- Lease one popped id; nil when its hash is gone (cancelled while it waited).  One read
-- and one write per task: the hash comes back with its lease fields as just written.
-- Returns the bytes it holds and the tasks it stands for (a pack's live members, else 1).
-- An id whose key is not a hash (nor a task: no id) is dropped, reported as broken.
local lease_fields = {'s', 'tok', 'w', 'ts', 'a', 'alloc'}
--#include counts
-- what a refused task keeps of its hash: enough to fail it and count it, nothing large
local small_fields = {sub = true, q = true, n = true, nc = true, spec = true}
local function bump(field, by)  -- a counter of the stats hash (reported if that is no hash)
  failed(redis.pcall('HINCRBY', KEYS[3], field, by), KEYS[3])
end
local function take(c, id, follows)
  if not id then return nil end
  local tkey = prefix .. 't:' .. id
  local flat = redis.pcall('HGETALL', tkey)
  if failed(flat, tkey) or #flat == 0 then return nil end
  local at, size, big, count = {}, 0, nil, 1
  for i = 1, #flat, 2 do
    local name, value = flat[i], flat[i + 1]
    size = size + #value
    if name == 'big' then big = value end
    at[name] = i + 1
  end
  local unreadable = nil  -- a field the worker parses that does not parse: the task fails, unloaded
  if at.n then  -- a pack's live members (whole numbers, at least 1, whatever the hash says)
    count = live(flat[at.n], at.nc and flat[at.nc])
    if not whole(flat[at.n]) then
      unreadable = 'field n (the members of a pack) is not a whole number'
    elseif at.nc and not whole(flat[at.nc]) then
      unreadable = 'field nc (cancelled members of a pack) is not a whole number'
    end  -- (its members, pa, may be a large field beside the hash: the worker checks them)
  end
  local attempt = math.floor(at.a and (tonumber(flat[at.a]) or 0) + 1 or 1)
  local token = ARGV[9] .. ':' .. id .. ':' .. attempt
  if not c.alloc then  -- (only for a class that fits: its values are the worker's size or less)
    c.alloc = string.format('%d %d %d %d', c.need[1], c.need[2], c.need[3], c.need[4])
  end
  local values = {'2', token, worker, now_us, tostring(attempt), c.alloc}
  local write = {}
  for k, name in ipairs(lease_fields) do
    write[#write + 1] = name
    write[#write + 1] = values[k]
    if at[name] then
      flat[at[name]] = values[k]
    else
      flat[#flat + 1] = name
      flat[#flat + 1] = values[k]
      at[name] = #flat
    end
  end
  redis.call('HSET', tkey, unpack(write))
  leased[#leased + 1] = deadline
  leased[#leased + 1] = id
  local refused, code = nil, nil  -- why the worker fails it unloaded, and the result code (codes.Result)
  if unreadable then
    refused, code = 'unreadable task hash ' .. tkey .. ': ' .. unreadable, 32
  elseif big then
    -- large fields (named by 'big') are string keys beside the hash, never copied
    -- through Lua: the worker GETs them after this script
    for name in string.gmatch(big, '[^\n]+') do
      local length = redis.pcall('STRLEN', tkey .. ':' .. name)
      if failed(length, tkey .. ':' .. name) then
        refused, code = 'its large field ' .. tkey .. ':' .. name .. ' cannot be read (' .. length.err .. ')', 1
      else
        size = size + length
      end
    end
  end
  if not refused and max_task_bytes > 0 and size > max_task_bytes then
    refused = 'task ' .. id .. ' holds ' .. size .. ' bytes, over the ' .. max_task_bytes ..
              ' bytes this worker loads (wq-redis worker --max-task-bytes)'
    code = 16
  end
  if refused then  -- leased all the same, so that the worker's failure result ends it
    local kept = {}
    for _, name in ipairs(lease_fields) do
      kept[#kept + 1] = name
      kept[#kept + 1] = flat[at[name]]
    end
    for name in pairs(small_fields) do
      if at[name] and #flat[at[name]] <= 4096 then
        kept[#kept + 1] = name
        kept[#kept + 1] = flat[at[name]]
      end
    end
    claimed[#claimed + 1] = {tostring(id), token, c.member, kept, follows, refused, code}
    size = 0  -- nothing of it is loaded
  else
    claimed[#claimed + 1] = {tostring(id), token, c.member, flat, follows}
  end
  members = members + count
  if count > 1 then  -- a pack's other members move from waiting to running
    bump('pack_waiting:' .. c.member, 1 - count)
    bump('pack_running:' .. c.member, count - 1)
  end
  return size, count
end

local leads = 0
while leads < max_tasks do
  local best, best_score, best_from = nil, nil, nil
  for _, c in ipairs(cands) do
    if not c.empty and not c.stale and not c.left and fits(c.need) then
      local score, from = head_of(c)
      if score == nil then
        c.empty = true
      else
        c.seen = true  -- holds tasks: rung again if this claim ends a wait and leaves them
        if best == nil or score < best_score then best, best_score, best_from = c, score, from end
      end
    end
  end
  if best == nil then break end
  touched[best.member] = best
  local id, budget_ms = nil, life_ms  -- (with an end: what the group may still run for)
  if life_ms > 0 then
    local head
    if best_from == 'l' then
      head = redis.call('LINDEX', best.fifo, 0)
    else
      head = redis.call('ZRANGE', best.key, 0, 0)[1]
    end
    local asked = time_asked(tonumber(head), budget_ms)
    if asked then
      id, budget_ms = pop(best, best_from), budget_ms - asked
    else
      best.left = true
    end
  else
    id = pop(best, best_from)
  end
  local size, lead_count = take(best, id, 0)
  if size then
    leads = leads + 1
    for i = 1, 4 do free[i] = free[i] - best.need[i] end
    local n = lead_count - 1  -- a pack's other members use up the followers' share
    if best.sized then n = followers end  -- an automatic category's tasks are each sized when taken
    -- Followers (counted in tasks: a pack's members each count) at priority 0 come off
    -- the list in one LPOP (what the byte cap or a pack's size leaves is pushed back in
    -- order); prioritized ones one by one, in priority order.
    local in_time = true  -- (a follower over the group's time left ends the group, not the queue)
    while n < followers and size < max_bytes and in_time do
      local _, from = head_of(best)
      if from == nil then
        best.empty = true
        break
      end
      if from == 'l' then
        local ids = redis.call('LPOP', best.fifo, followers - n)
        for i, id in ipairs(ids) do
          local asked = 0
          if life_ms > 0 and size < max_bytes and n < followers then asked = time_asked(tonumber(id), budget_ms) end
          if size >= max_bytes or n >= followers or not asked then
            for back = #ids, i, -1 do redis.call('LPUSH', best.fifo, ids[back]) end
            in_time = asked ~= nil
            break
          end
          budget_ms = budget_ms - asked
          local more, count = take(best, tonumber(id), 1)
          if more then
            size = size + more
            n = n + count
          end
        end
      else
        local asked = 0
        if life_ms > 0 then asked = time_asked(tonumber(redis.call('ZRANGE', best.key, 0, 0)[1]), budget_ms) end
        if not asked then
          in_time = false
          break
        end
        budget_ms = budget_ms - asked
        local more, count = take(best, pop(best, from), 1)
        if more then
          size = size + more
          n = n + count
        end
      end
    end
  end
end

for first = 1, #leased, 1000 do  -- in chunks: unpack() has a stack limit
  redis.call('ZADD', KEYS[2], unpack(leased, first, math.min(first + 999, #leased)))
end

-- Pass the baton: a queue that still holds tasks rings its wake key for the next idle
-- worker (one seen empty in this call is known to be, without asking).  Emptied queues
-- stay registered (so the next submit does not wake every worker as for a new queue);
-- the reaper forgets the ones that stay empty.
-- After a wait for work, the queues seen holding tasks and left alone are rung again too.
local woken = ARGV[20] == '1'
for _, c in ipairs(cands) do
  if touched[c.member] then
    if not c.empty and redis.call('EXISTS', c.key, c.fifo) > 0 then ring(prefix .. 'wake:' .. c.member) end
  elseif woken and c.seen and not c.empty then
    ring(prefix .. 'wake:' .. c.member)
  end
end
local known = tonumber(ARGV[19] or -1)
if KEYS[5] and known >= 0 and #registered > known then ring(KEYS[5]) end  -- pass on the news of a new queue
if members > 0 then bump('dispatched', members) end
if members > 0 and ARGV[21] == '1' and KEYS[7] then ring(KEYS[7]) end  -- the heartbeat's busy beats start now
if life_ms > 0 then  -- a queue whose head this worker left must not wake it (see the top)
  local kept = {}  -- (its wake key was rung above, for the others)
  for _, m in ipairs(eligible) do
    local c = touched[m]
    if not (c and c.left) then kept[#kept + 1] = m end
  end
  eligible = kept
end
return {claimed, eligible, broken, #registered}
