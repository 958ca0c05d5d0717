-- Replace devices' reported items and keep every inventory index of one shard in step.
--
-- Every key is the shard's (the prefix ARGV[1] carries its hash tag), so the call
-- touches one hash slot.
-- KEYS[1]  the shard's device counter (devices with a record);
-- KEYS[2]  the shard's item entries (hash: item ref -> JSON of the item);
-- KEYS[3]  the item entries' reference counts (ref -> records naming it);
-- KEYS[4]  the shard's library (hash: SHA-256 -> PEM, what its devices brought);
-- KEYS[5]  the library's reference counts (digest -> device shares holding it);
-- KEYS[6]  the counter of entries evicted from the shard's device shares.
-- ARGV[1]  the shard's inventory key prefix ('certfleet:inv:{tag}:');
-- ARGV[2]  the receive time (epoch seconds);
-- ARGV[3]  JSON [entries, states]: entries an object ref -> JSON of the item (each item
--          the states name, once), states the list of device states, applied in order,
--          each as if alone: [device_id, bucket, reported_at, record, items, pems,
--          identity tag ('' if not reported), client keys], an item [sec_tag, type,
--          sha256, not_after ('' if none), ref] (numbers as strings), a pem [sha256, PEM]
--          for the library, a client key the SHA-256 of a reported client certificate's
--          SubjectPublicKeyInfo DER (hex); the record as `redis_inventory_records` makes it;
-- ARGV[4]  the most library entries one device's share holds.
-- Keys derived from ARGV[1]: d:{bucket} (hash: device id -> record), tags,
-- exp:{sec_tag}, cadig:{sec_tag}, cadev:{sec_tag}:{sha256}, idexp:{sec_tag} (zset: device
-- -> notAfter of its client certificate, type 1, in that tag: only its identity tag's
-- when the state names one), keys (hash: client key -> '<receive time> <device id>' of
-- the first device of the shard whose applied state reported it; never deleted),
-- libshare:{id} (zset: digest -> when the device first brought it).
-- Returns how many states were applied (a state older than the stored is skipped,
-- its pems too: a stale state changes nothing, the library included).
local counter, entries, entry_refs = KEYS[1], KEYS[2], KEYS[3]
local lib, refs, evicted = KEYS[4], KEYS[5], KEYS[6]
local p, received, share_max = ARGV[1], ARGV[2], tonumber(ARGV[4])
local function decr(key, field)
  if redis.call('HINCRBY', key, field, -1) <= 0 then
    redis.call('HDEL', key, field)
    return true
  end
  return false
end
local applied = 0
local batch = cjson.decode(ARGV[3])
local new_entries = batch[1]
for _, state in ipairs(batch[2]) do
  local id, bucket, reported, items = state[1], p .. 'd:' .. state[2], tonumber(state[3]), state[5]
  local old = redis.call('HGET', bucket, id)
  local at, named = nil, ''
  if old then at, named = string.match(old, '^([^;]*);[^;]*;[^;]*;[^;]*;(.*)$') end
  if not (at and tonumber(at) > reported) then
    local oldtags, oldid, oldrefs = {}, {}, {}
    for tag, typ, ref in string.gmatch(named, '(%d+):(%d+):(%S+)') do
      if oldtags[tag] == nil then oldtags[tag] = '' end
      if typ == '0' then
        local entry = redis.call('HGET', entries, ref)
        if entry then oldtags[tag] = cjson.decode(entry)['sha256'] end
      end
      if typ == '1' then oldid[tag] = true end
      oldrefs[#oldrefs + 1] = ref
    end
    local newtags, newexp, newid = {}, {}, {}
    for _, item in ipairs(items) do
      local tag, typ, sha, na, ref = item[1], item[2], item[3], item[4], item[5]
      if redis.call('HINCRBY', entry_refs, ref, 1) == 1 then
        redis.call('HSET', entries, ref, new_entries[ref])
      end
      if newtags[tag] == nil then newtags[tag] = '' end
      if typ == '0' then newtags[tag] = sha end
      if na ~= '' then
        local x = tonumber(na)
        if newexp[tag] == nil or x < newexp[tag] then newexp[tag] = x end
        if typ == '1' then newid[tag] = x end
      end
    end
    -- The old record's entries are released after the new one's are taken, so an
    -- entry both name never leaves in between.
    for _, ref in ipairs(oldrefs) do
      if decr(entry_refs, ref) then redis.call('HDEL', entries, ref) end
    end
    redis.call('HSET', bucket, id, state[4])
    if not old then redis.call('INCR', counter) end
    -- The client certificates' own index: what identity rotation plans by. A device that
    -- names its identity tag is indexed by that tag's certificate alone (one left in the
    -- old tag until its retire is no identity); one that names none, by every one it holds.
    local identity = state[7]
    if identity ~= nil and identity ~= '' then
      local own = newid[identity]
      newid = {}
      newid[identity] = own
    end
    for tag in pairs(oldid) do
      if newid[tag] == nil then redis.call('ZREM', p .. 'idexp:' .. tag, id) end
    end
    for tag, x in pairs(newid) do redis.call('ZADD', p .. 'idexp:' .. tag, x, id) end
    for _, key in ipairs(state[8] or {}) do
      redis.call('HSETNX', p .. 'keys', key, received .. ' ' .. id)
    end
    for tag, sha in pairs(oldtags) do
      if newtags[tag] == nil then
        decr(p .. 'tags', tag)
        redis.call('ZREM', p .. 'exp:' .. tag, id)
      end
      if sha ~= '' and newtags[tag] ~= sha then
        decr(p .. 'cadig:' .. tag, sha)
        redis.call('SREM', p .. 'cadev:' .. tag .. ':' .. sha, id)
      end
    end
    for tag, sha in pairs(newtags) do
      if oldtags[tag] == nil then redis.call('HINCRBY', p .. 'tags', tag, 1) end
      if sha ~= '' and oldtags[tag] ~= sha then
        redis.call('HINCRBY', p .. 'cadig:' .. tag, sha, 1)
        redis.call('SADD', p .. 'cadev:' .. tag .. ':' .. sha, id)
      end
      if newexp[tag] then
        redis.call('ZADD', p .. 'exp:' .. tag, newexp[tag], id)
      else
        redis.call('ZREM', p .. 'exp:' .. tag, id)
      end
    end
    -- The device's share of the library: its latest `share_max` digests. Past that the
    -- oldest leaves the share (counted) and the shard's library once no share holds it
    -- (an operator's import stays in the global library, pinned).
    local share = p .. 'libshare:' .. id
    for _, pem in ipairs(state[6]) do
      redis.call('HSETNX', lib, pem[1], pem[2])
      if redis.call('ZADD', share, 'NX', received, pem[1]) == 1 then
        redis.call('HINCRBY', refs, pem[1], 1)
      end
    end
    while redis.call('ZCARD', share) > share_max do
      local oldest = redis.call('ZPOPMIN', share)[1]
      redis.call('INCR', evicted)
      if decr(refs, oldest) then redis.call('HDEL', lib, oldest) end
    end
    applied = applied + 1
  end
end
return applied
