-- List one page of one shard's expiring items in one sec_tag, with their subjects,
-- soonest first.
--
-- KEYS[1]  the index read: the shard's exp:{sec_tag} (the tag's earliest item) or
--          idexp:{sec_tag} (its client certificate, type 1).
-- ARGV[1]  the shard's inventory key prefix ('certfleet:inv:{tag}:');
-- ARGV[2]  the sec_tag;
-- ARGV[3]  the latest notAfter listed (epoch seconds);
-- ARGV[4]  entries of the index skipped (the page's offset);
-- ARGV[5]  most items listed;
-- ARGV[6]  'exp' or 'idexp' (which index KEYS[1] is);
-- ARGV[7]  record buckets per shard.
-- Keys derived from ARGV[1] (the same hash tag): d:{bucket} (a device's record; its
-- bucket the first 32 bits of SHA-1 of the id modulo ARGV[7], as
-- `redis_inventory_records.bucket_of` computes), items (ref -> item JSON).
-- Returns a flat list, four entries an item:
--   device_id, notAfter, '1' if the item names a subject else '0', subject
-- (from 'exp': the subject of the CA chain item, else of the certificate; from 'idexp':
-- the client certificate's).
local p, tag, index, buckets = ARGV[1], ARGV[2], ARGV[6], tonumber(ARGV[7])
local found = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[3],
  'WITHSCORES', 'LIMIT', tonumber(ARGV[4]), tonumber(ARGV[5]))
local wanted = {'0', '1'}
if index == 'idexp' then wanted = {'1'} end
local out = {}
local subjects = {}  -- item ref -> its subject (false: none), read once a call
for i = 1, #found, 2 do
  local id = found[i]
  local bucket = tonumber(string.sub(redis.sha1hex(id), 1, 8), 16) % buckets
  local record = redis.call('HGET', p .. 'd:' .. bucket, id) or ''
  local refs = {}
  local named = string.match(record, '^[^;]*;[^;]*;[^;]*;[^;]*;(.*)$') or ''
  for t, typ, ref in string.gmatch(named, '(%d+):(%d+):(%S+)') do
    if t == tag and refs[typ] == nil then refs[typ] = ref end
  end
  local has, subject = '0', ''
  for _, typ in ipairs(wanted) do
    local ref = refs[typ]
    if ref then
      if subjects[ref] == nil then
        subjects[ref] = false
        local entry = redis.call('HGET', p .. 'items', ref)
        if entry then
          local named = cjson.decode(entry)['subject']
          if type(named) == 'string' then subjects[ref] = named end
        end
      end
      if subjects[ref] then has, subject = '1', subjects[ref] end
      break
    end
  end
  out[#out + 1] = id
  out[#out + 1] = found[i + 1]
  out[#out + 1] = has
  out[#out + 1] = subject
end
return out
