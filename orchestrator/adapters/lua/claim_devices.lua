-- Claim devices for one rollout, in one shard: one rollout at a time per device.
--
-- KEYS     the shard's claim hashes the devices fall in (device -> the rollout that
--          holds it), all of one hash slot.
-- ARGV[1]  the rollout id;  ARGV[2]  '1' to claim, '0' only to look;
-- ARGV[3]  the holders whose claims are stale (space-separated; '' none): their
--          devices count as free and are taken over;
-- ARGV[4…] pairs: the index in KEYS of the device's hash, the device.
-- Returns pairs: each device another rollout holds, and that rollout. Devices are
-- claimed only when ARGV[2] is '1' and none is held by another rollout: on any
-- conflict nothing is written.
local mine, claim = ARGV[1], ARGV[2] == '1'
local stale = {}
for holder in string.gmatch(ARGV[3], '%S+') do stale[holder] = true end
local held = {}
for i = 4, #ARGV, 2 do
  local device = ARGV[i + 1]
  local holder = redis.call('HGET', KEYS[tonumber(ARGV[i])], device)
  if holder and holder ~= mine and not stale[holder] then
    held[#held + 1] = device
    held[#held + 1] = holder
  end
end
if claim and #held == 0 then
  for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[tonumber(ARGV[i])], ARGV[i + 1], mine) end
end
return held
