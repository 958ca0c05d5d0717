-- Every device id of one inventory shard: the fields of its record buckets.
--
-- KEYS[1]  the shard's device counter (names the shard's slot; not read);
-- ARGV[1]  the shard's inventory key prefix ('certfleet:inv:{tag}:');
-- ARGV[2]  record buckets per shard.
-- Keys derived from ARGV[1] (the same hash tag): d:{bucket}, bucket 0 to ARGV[2] - 1.
-- Returns the ids, bucket after bucket.
local out = {}
for bucket = 0, tonumber(ARGV[2]) - 1 do
  for _, id in ipairs(redis.call('HKEYS', ARGV[1] .. 'd:' .. bucket)) do out[#out + 1] = id end
end
return out
