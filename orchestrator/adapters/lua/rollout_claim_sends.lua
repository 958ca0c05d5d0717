-- Claim the devices whose bundle for one step may be sent (again) now.
--
-- KEYS[1]  …:sent:{step} (zset: device -> when its bundle was last sent).
-- ARGV[1]  now (epoch seconds);
-- ARGV[2]  the time before which a send may be repeated (now - period);
-- ARGV[3…] devices.
-- Returns the devices claimed (each now marked sent at ARGV[1]), in the order given.
local claimed = {}
for i = 3, #ARGV do
  local last = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if not last or tonumber(last) < tonumber(ARGV[2]) then
    redis.call('ZADD', KEYS[1], ARGV[1], ARGV[i])
    claimed[#claimed + 1] = ARGV[i]
  end
end
return claimed
