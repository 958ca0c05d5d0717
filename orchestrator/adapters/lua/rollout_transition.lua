-- Apply a batch of device transitions of one rollout, in order, each as it would alone.
--
-- KEYS[1]  …:deadline (zset)                  KEYS[2]  …:bundle (hash: device:step -> bytes)
-- KEYS[3]  …:log (stream)                     KEYS[4]  …:seq (hash: device:step -> seqs)
-- ARGV[1]  the rollout's key prefix ('certfleet:ro:{id}:'; the record buckets d:{b},
--          counts:{wave} and s:{state} are derived from it, in the same hash slot);
-- ARGV[2]  time (ISO 8601);  ARGV[3]  actor;
-- ARGV[4]  the JSON list of transitions, each
--          [device, new state, allowed sources (comma-separated), cause,
--           deadline ('' keep, '-' clear, else epoch seconds), bundle step ('' none),
--           the bundle's ARGV index (0 none), the bundle's seq ('' none),
--           the step a report answers ('' none), the seq it answers (a decimal string),
--           the device's record bucket];
-- ARGV[5…] the bundles' bytes.
-- A device's record (…:d:{bucket}, device -> '<state> <wave> <tags> <version>') starts
-- with its state; a transition rewrites that word only.
-- Returns the JSON list, one per transition, of [code, the state found ('' if unknown)],
-- code: 1 applied, 0 refused by the state, -1 unknown device, -2 no bundle of the
-- answered step was issued to the device, -3 bundles of that step were, none with its seq.
-- A transition that answers a step is checked against the seqs issued (space-separated
-- in …:seq) before its state. An applied transition moves the wave's counts and the
-- per-state sets (every state but 'pending', whose devices a scan finds), keeps the
-- deadline, stores the bundle, records its seq and appends to the log in the same
-- atomic step.
local deadline, bundles, log, seqs = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local prefix, time, actor = ARGV[1], ARGV[2], ARGV[3]
local unset = 'pending'

local function match(device, step, seq)
  local issued = redis.call('HGET', seqs, device .. ':' .. step)
  if not issued then return -2 end
  if not (' ' .. issued .. ' '):find(' ' .. seq .. ' ', 1, true) then return -3 end
  return 1
end

local results = {}
for n, t in ipairs(cjson.decode(ARGV[4])) do
  local device, new, allowed, cause = t[1], t[2], t[3], t[4]
  local records = prefix .. 'd:' .. t[11]
  local record = redis.call('HGET', records, device)
  if not record then
    results[n] = {-1, ''}
  else
    local current, rest = string.match(record, '^(%S+) (.*)$')
    local ok = true
    if t[9] ~= '' then
      local found = match(device, t[9], t[10])
      if found ~= 1 then
        results[n] = {found, current}
        ok = false
      end
    end
    if ok then
      ok = false
      for source in string.gmatch(allowed, '[^,]+') do
        if source == current then ok = true end
      end
      if not ok then results[n] = {0, current} end
    end
    if ok then
      local w = string.match(rest, '^(%S+)')
      redis.call('HSET', records, device, new .. ' ' .. rest)
      redis.call('HINCRBY', prefix .. 'counts:' .. w, current, -1)
      redis.call('HINCRBY', prefix .. 'counts:' .. w, new, 1)
      if current ~= unset then redis.call('SREM', prefix .. 's:' .. current, device) end
      if new ~= unset then redis.call('SADD', prefix .. 's:' .. new, device) end
      if t[5] == '-' then
        redis.call('ZREM', deadline, device)
      elseif t[5] ~= '' then
        redis.call('ZADD', deadline, tonumber(t[5]), device)
      end
      if t[6] ~= '' then
        local field = device .. ':' .. t[6]
        redis.call('HSET', bundles, field, ARGV[t[7]])
        if t[8] ~= '' then
          local issued = redis.call('HGET', seqs, field)
          redis.call('HSET', seqs, field, issued and (issued .. ' ' .. t[8]) or t[8])
        end
      end
      redis.call('XADD', log, '*', 'time', time, 'actor', actor, 'kind', 'device',
        'subject', device, 'wave', w, 'from', current, 'to', new, 'cause', cause)
      results[n] = {1, current}
    end
  end
end
return cjson.encode(results)
