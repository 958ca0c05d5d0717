-- List one sec_tag's expiring items with their subjects, soonest first.
--
-- KEYS     none (the keys are derived from ARGV[1]: exp:{sec_tag} or idexp:{sec_tag}, dev:{id}).
-- ARGV[1]  the inventory key prefix ('certfleet:inv:');
-- ARGV[2]  the sec_tag;
-- ARGV[3]  the latest notAfter listed (epoch seconds);
-- ARGV[4]  most items listed;
-- ARGV[5]  the index read: 'exp' (the tag's earliest item, the default) or 'idexp' (its
--          client certificate, type 1).
-- Returns a flat list, four entries an item:
--   device_id, notAfter, '1' if the item names a subject else '0', subject
-- (from 'exp': the subject of the CA chain item, else of the certificate; from 'idexp':
-- the client certificate's).
local p, tag, index = ARGV[1], ARGV[2], ARGV[5] or 'exp'
local found = redis.call('ZRANGEBYSCORE', p .. index .. ':' .. tag, '-inf', ARGV[3],
  'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[4]))
local fields = {tag .. ':0', tag .. ':1'}
if index == 'idexp' then fields = {tag .. ':1'} end
local out = {}
for i = 1, #found, 2 do
  local id = found[i]
  local items = redis.call('HMGET', p .. 'dev:' .. id, unpack(fields))
  local item = items[1] or items[2]
  local has, subject = '0', ''
  if item then
    local named = cjson.decode(item)['subject']
    if type(named) == 'string' then has, subject = '1', named end
  end
  out[#out + 1] = id
  out[#out + 1] = found[i + 1]
  out[#out + 1] = has
  out[#out + 1] = subject
end
return out
