-- Read one shard's expiring items in one sec_tag from a position in the index, in either
-- direction, keeping only devices whose id starts with a prefix, with their subjects.
--
-- The index is read by rank (ZRANGE, O(log n) to reach any position), so a page deep in
-- a long list costs what the first does. The merged list across shards and tags is
-- ordered by (notAfter, device id, sec_tag); within one index, entries of equal score
-- are ordered by the bytes of the device id, as Redis orders them.
--
-- KEYS[1]  the shard's exp:{sec_tag} (the tag's earliest item).
-- ARGV[1]  the shard's inventory key prefix ('certfleet:inv:{tag}:');
-- ARGV[2]  the sec_tag;
-- ARGV[3]  the latest notAfter listed (epoch seconds; its rank bounds the reading);
-- ARGV[4]  'asc' (soonest first) or 'desc' (latest first);
-- ARGV[5]  where to start: a rank (asc: the next rank read; desc: the rank below which
--          reading goes on), or '' to derive it from the cursor ARGV[6..8];
-- ARGV[6]  the cursor's notAfter (as stored), or '' for none: asc starts at the first
--          entry, desc below the last entry at or before ARGV[3];
-- ARGV[7]  the cursor's device id;
-- ARGV[8]  '1': the start is past the entries at or before (ARGV[6], ARGV[7]);
--          '0': past those strictly before it;
-- ARGV[9]  most items returned;
-- ARGV[10] most entries examined (an upper bound on the call's work);
-- ARGV[11] the device id prefix kept ('' keeps every device);
-- ARGV[12] record buckets per shard.
-- Keys derived from ARGV[1] (the same hash tag): d:{bucket} (a device's record, its
-- bucket as `redis_inventory_records.bucket_of` computes), items (ref -> item JSON).
-- Returns {position, exhausted ('1' or '0'), then four entries an item: device_id,
-- notAfter, '1' if the item names a subject else '0', subject}; `position` is ARGV[5]
-- for the next call, `exhausted` whether the index holds nothing further that way.
local key, p, tag, latest = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3])
local desc = ARGV[4] == 'desc'
local wanted, budget, prefix = tonumber(ARGV[9]), tonumber(ARGV[10]), ARGV[11]
local buckets = tonumber(ARGV[12])

local function bytes_less(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end

-- How many entries sort before the cursor (with `inclusive`, the cursor's own too):
-- ZCOUNT bounds the run of its score, a binary search by rank places its device id.
local function rank_of(score, member, inclusive)
  local lo = redis.call('ZCOUNT', key, '-inf', '(' .. score)
  local hi = redis.call('ZCOUNT', key, '-inf', score)
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    local at = redis.call('ZRANGE', key, mid, mid)[1]
    if bytes_less(at, member) or (inclusive and at == member) then
      lo = mid + 1
    else
      hi = mid
    end
  end
  return lo
end

local pos
if ARGV[5] ~= '' then
  pos = tonumber(ARGV[5])
elseif ARGV[6] ~= '' then
  pos = rank_of(ARGV[6], ARGV[7], ARGV[8] == '1')
elseif desc then
  pos = redis.call('ZCOUNT', key, '-inf', ARGV[3])
else
  pos = 0
end

local subjects = {}  -- item ref -> its subject (false: none), read once a call
local function subject_of(id)
  local bucket = tonumber(string.sub(redis.sha1hex(id), 1, 8), 16) % buckets
  local record = redis.call('HGET', p .. 'd:' .. bucket, id) or ''
  local refs = {}
  local named = string.match(record, '^[^;]*;[^;]*;[^;]*;[^;]*;(.*)$') or ''
  for t, typ, ref in string.gmatch(named, '(%d+):(%d+):(%S+)') do
    if t == tag and refs[typ] == nil then refs[typ] = ref end
  end
  for _, typ in ipairs({'0', '1'}) do
    local ref = refs[typ]
    if ref then
      if subjects[ref] == nil then
        subjects[ref] = false
        local entry = redis.call('HGET', p .. 'items', ref)
        if entry then
          local subject = cjson.decode(entry)['subject']
          if type(subject) == 'string' then subjects[ref] = subject end
        end
      end
      if subjects[ref] then return '1', subjects[ref] end
      return '0', ''
    end
  end
  return '0', ''
end

-- Ranks below `stop` are the entries at or before ARGV[3]: no score is compared per entry.
local stop = redis.call('ZCOUNT', key, '-inf', ARGV[3])
local plen = #prefix
local out = {0, '0'}
local found, examined, exhausted = 0, 0, false
if desc and pos > stop then pos = stop end
while found < wanted and examined < budget and not exhausted do
  local chunk = math.min(budget - examined, math.max(wanted - found, 512))
  local first, last
  if desc then
    first, last = math.max(0, pos - chunk), pos - 1
  else
    first, last = pos, math.min(stop, pos + chunk) - 1
  end
  if last < first then exhausted = true break end
  -- Scores only when every entry is kept; with a prefix, only the kept ones' are read.
  local read = plen == 0 and redis.call('ZRANGE', key, first, last, 'WITHSCORES')
    or redis.call('ZRANGE', key, first, last)
  local step = plen == 0 and 2 or 1
  local n = #read / step
  local done = 0
  for j = 1, n do
    local at = desc and (n - j + 1) or j
    local id = read[step * (at - 1) + 1]
    examined, done = examined + 1, done + 1
    if desc then pos = pos - 1 else pos = pos + 1 end
    if plen == 0 or string.sub(id, 1, plen) == prefix then
      local score = plen == 0 and read[2 * at] or redis.call('ZSCORE', key, id)
      local has, subject = subject_of(id)
      out[#out + 1] = id
      out[#out + 1] = score
      out[#out + 1] = has
      out[#out + 1] = subject
      found = found + 1
      if found >= wanted then break end
    end
    if examined >= budget then break end
  end
  if done == n and n < last - first + 1 then exhausted = true end  -- the index ended
  if desc and pos <= 0 then exhausted = true end
  if not desc and pos >= stop then exhausted = true end
end
out[1] = pos
out[2] = exhausted and '1' or '0'
return out
