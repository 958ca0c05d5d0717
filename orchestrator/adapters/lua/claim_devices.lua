-- Claim devices for one rollout: one rollout at a time per device.
--
-- KEYS[1]  'certfleet:claims:device' (hash: device -> the rollout that holds it);
-- KEYS[2…] the per-(device, sec_tag) claim hashes rollouts stored before claims were
--          per device ('certfleet:claims:{sec_tag}', device -> rollout), read only:
--          a device such a rollout still holds is held.
-- ARGV[1]  the rollout id;  ARGV[2]  '1' to claim, '0' only to look;
-- ARGV[3…] devices.
-- Returns the devices another rollout holds. Devices are claimed only when ARGV[2] is
-- '1' and none is held by another rollout: on any conflict nothing is written.
local mine, claim = ARGV[1], ARGV[2] == '1'
local held = {}
for i = 3, #ARGV do
  local device = ARGV[i]
  local holder = redis.call('HGET', KEYS[1], device)
  if not holder or holder == mine then
    for k = 2, #KEYS do
      local old = redis.call('HGET', KEYS[k], device)
      if old and old ~= mine then holder = old end
    end
  end
  if holder and holder ~= mine then held[#held + 1] = device end
end
if claim and #held == 0 then
  for i = 3, #ARGV do redis.call('HSET', KEYS[1], ARGV[i], mine) end
end
return held
