-- Count one shard's expiry index entries in the three classes, for several sec_tags in
-- one call (a scan asks every shard, so one call a shard rather than three a tag).
--
-- KEYS     the shard's index zsets, one per sec_tag (exp:{sec_tag} or idexp:{sec_tag}).
-- ARGV[1]  the expired bound: a notAfter strictly below it is expired;
-- ARGV[2]  the expiring bound: a notAfter up to it (and not expired) is expiring.
-- Returns three counts a key, in order: expired, expiring, ok.
local out = {}
for _, key in ipairs(KEYS) do
  out[#out + 1] = redis.call('ZCOUNT', key, '-inf', '(' .. ARGV[1])
  out[#out + 1] = redis.call('ZCOUNT', key, ARGV[1], ARGV[2])
  out[#out + 1] = redis.call('ZCOUNT', key, '(' .. ARGV[2], '+inf')
end
return out
