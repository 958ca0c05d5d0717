-- Append device reports to their capped streams and count them by phase.
--
-- KEYS[1]  the report_phases hash (phase -> reports received).
-- ARGV[1]  the stream key prefix ('certfleet:inv:reports:'; a device's stream is
--          the prefix and its id);
-- ARGV[2]  reports kept per stream (XADD MAXLEN ~);
-- ARGV[3]  the JSON list of reports, each
--          [device_id, rollout_id, seq, op, phase, reason, detail, time, active tags JSON].
-- Returns 1.
local phases = {}
for _, r in ipairs(cjson.decode(ARGV[3])) do
  redis.call('XADD', ARGV[1] .. r[1], 'MAXLEN', '~', ARGV[2], '*', 'rollout_id', r[2],
    'seq', r[3], 'op', r[4], 'phase', r[5], 'reason', r[6], 'detail', r[7], 'time', r[8],
    'active_tags', r[9])
  phases[r[5]] = (phases[r[5]] or 0) + 1
end
for phase, n in pairs(phases) do redis.call('HINCRBY', KEYS[1], phase, n) end
return 1
