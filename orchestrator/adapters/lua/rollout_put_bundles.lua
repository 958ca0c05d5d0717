-- Store the first bundle issued for each (device, step), and record the seq of each stored.
--
-- KEYS[1]  …:bundle (hash: device:step -> bytes)   KEYS[2]  …:seq (hash: device:step -> seqs)
-- ARGV[1]  the step;
-- ARGV[2…] triples: device, the bundle's seq (a decimal string), the bundle's bytes.
-- Returns how many bundles were stored. A device that has a bundle for the step keeps
-- it, and the seq of the one dropped is not recorded: it is never sent.
local step, stored = ARGV[1], 0
for i = 2, #ARGV, 3 do
  local field = ARGV[i] .. ':' .. step
  if redis.call('HSETNX', KEYS[1], field, ARGV[i + 2]) == 1 then
    local issued = redis.call('HGET', KEYS[2], field)
    redis.call('HSET', KEYS[2], field, issued and (issued .. ' ' .. ARGV[i + 1]) or ARGV[i + 1])
    stored = stored + 1
  end
end
return stored
