-- The rollout and wave entries of a stretch of a rollout's audit log, not the devices'.
--
-- KEYS[1]  …:log (stream);
-- ARGV[1]  where the stretch starts (an entry id, '(' before it to leave it out, or '-');
-- ARGV[2]  how many entries the stretch holds at most.
-- Returns {entries read, the last id read (ARGV[1] if none), {{id, {field, value, …}}, …}}:
-- the filter runs here, so only the few entries that are not a device's cross the wire.
local last, kept = ARGV[1], {}
local entries = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[2])
for _, entry in ipairs(entries) do
  last = entry[1]
  local fields, device = entry[2], false
  for i = 1, #fields, 2 do
    if fields[i] == 'kind' and fields[i + 1] == 'device' then device = true end
  end
  if not device then kept[#kept + 1] = entry end
end
return {#entries, last, kept}
