-- One page of the devices in some states of a rollout, in device id order.
--
-- KEYS[1]  …:page (a scratch set of the rollout's slot, written and deleted here);
-- KEYS[2…] the per-state sets …:s:{state} (disjoint: a device has one state).
-- ARGV[1]  offset;  ARGV[2]  count.
-- Returns {how many devices are in those states, {the page's devices}}. The union is
-- sorted on the server (SORT … ALPHA LIMIT), so only the page crosses the wire.
local target = KEYS[2]
if #KEYS > 2 then
  redis.call('SUNIONSTORE', KEYS[1], unpack(KEYS, 2))
  target = KEYS[1]
end
local total = redis.call('SCARD', target)
local page = {}
if total > 0 then
  page = redis.call('SORT', target, 'LIMIT', ARGV[1], ARGV[2], 'ALPHA')
end
if #KEYS > 2 then redis.call('DEL', KEYS[1]) end
return {total, page}
