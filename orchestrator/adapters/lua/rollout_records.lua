-- Read devices' records of one rollout.
--
-- KEYS[1]  the rollout's meta hash (its slot: every key read has the rollout's tag);
-- ARGV[1]  the prefix of the record buckets ('certfleet:ro:{id}:d:');
-- ARGV[2…] pairs: the device's bucket, the device.
-- Returns each device's record, in the order given (nil for a device not in it).
local prefix, found = ARGV[1], {}
for i = 2, #ARGV, 2 do
  found[#found + 1] = redis.call('HGET', prefix .. ARGV[i], ARGV[i + 1])
end
return found
