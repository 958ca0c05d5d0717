-- Append device reports to their capped streams and count them by phase, each
-- (device, rollout, seq, phase) once: a report already recorded (the broker sent it
-- again, or the device published it twice) changes nothing.
--
-- Every report of a call is of one shard's devices and every key is the shard's (one
-- hash slot).
-- KEYS[1]  the shard's report_phases hash (phase -> distinct reports received).
-- ARGV[1]  the shard's stream key prefix ('certfleet:inv:{tag}:reports:'; a device's
--          stream is the prefix and its id);
-- ARGV[2]  reports kept per stream (XADD MAXLEN ~);
-- ARGV[3]  the JSON list of reports, each
--          [device_id, rollout_id, seq, op, phase, reason, detail, time, active tags JSON];
-- ARGV[4]  the shard's key prefix of the per-device sets of recorded report keys
--          ('certfleet:inv:{tag}:report_keys:'; a zset of 'rollout seq phase' -> stream
--          time);
-- ARGV[5]  report keys kept per device (the oldest go beyond twice that many).
-- A report's writes come after every check that can fail for it (a key of the wrong
-- type), and each report is counted as it is appended, so an error on one report
-- leaves the reports before it wholly recorded and itself not at all.
-- Returns how many reports were new.
local kept = tonumber(ARGV[5])
local new = 0
for _, r in ipairs(cjson.decode(ARGV[3])) do
  local seen = ARGV[4] .. r[1]
  local key = r[2] .. ' ' .. r[3] .. ' ' .. r[5]
  if not redis.call('ZSCORE', seen, key) then
    local id = redis.call('XADD', ARGV[1] .. r[1], 'MAXLEN', '~', ARGV[2], '*',
      'rollout_id', r[2], 'seq', r[3], 'op', r[4], 'phase', r[5], 'reason', r[6],
      'detail', r[7], 'time', r[8], 'active_tags', r[9])
    redis.call('HINCRBY', KEYS[1], r[5], 1)
    redis.call('ZADD', seen, string.match(id, '^(%d+)'), key)
    if redis.call('ZCARD', seen) > 2 * kept then
      redis.call('ZREMRANGEBYRANK', seen, 0, -kept - 1)
    end
    new = new + 1
  end
end
return new
