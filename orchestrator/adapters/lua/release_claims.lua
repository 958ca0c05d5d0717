-- Drop one rollout's claims on devices of one shard (only those it holds).
--
-- KEYS     the shard's claim hashes the devices fall in, all of one hash slot.
-- ARGV[1]  the rollout id;
-- ARGV[2…] pairs: the index in KEYS of the device's hash, the device.
-- Returns how many claims were dropped.
local mine, dropped = ARGV[1], 0
for i = 2, #ARGV, 2 do
  local key, device = KEYS[tonumber(ARGV[i])], ARGV[i + 1]
  if redis.call('HGET', key, device) == mine then
    redis.call('HDEL', key, device)
    dropped = dropped + 1
  end
end
return dropped
