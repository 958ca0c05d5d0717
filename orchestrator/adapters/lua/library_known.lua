-- Which of these digests one library hash holds (HEXISTS each, one call: a scan asks
-- the global library and every shard's about all of a fleet's digests).
--
-- KEYS[1]  a library hash (SHA-256 -> PEM): `certfleet:lib` or a shard's `lib`.
-- ARGV     the digests.
-- Returns 1 or 0 per digest, in order.
local out = {}
for i, digest in ipairs(ARGV) do out[i] = redis.call('HEXISTS', KEYS[1], digest) end
return out
