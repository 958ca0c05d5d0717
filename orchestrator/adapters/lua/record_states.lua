-- Replace devices' reported items and keep every inventory index in step.
--
-- KEYS[1]  the devices zset (device id -> time of its last applied report);
-- KEYS[2]  the credential library hash (SHA-256 -> PEM);
-- KEYS[3]  the library's reference counts (digest -> device shares holding it);
-- KEYS[4]  the set of pinned digests (an operator's imports, never evicted);
-- KEYS[5]  the counter of entries evicted from device shares.
-- ARGV[1]  the inventory key prefix ('certfleet:inv:');
-- ARGV[2]  the receive time (epoch seconds);
-- ARGV[3]  the JSON list of device states, applied in order, each as if alone:
--          [device_id, reported_at, active tags JSON ('' if not reported), items, pems,
--           protocol version, identity tag ('' if not reported), client keys],
--          an item [field, json, sec_tag, type, sha256, not_after ('' if none)] (numbers
--          as strings), a pem [sha256, PEM] for the library, a client key the SHA-256 of a
--          reported client certificate's SubjectPublicKeyInfo DER (hex);
-- ARGV[4]  the most library entries one device's share holds.
-- Keys derived from ARGV[1]: dev:{id}, tags, exp:{sec_tag}, cadig:{sec_tag},
-- cadev:{sec_tag}:{sha256}, idexp:{sec_tag} (zset: device -> notAfter of its client
-- certificate, type 1, in that tag: only its identity tag's when the state names one),
-- keys (hash: client key -> the first device whose applied state reported it; never
-- deleted), libshare:{id} (zset: digest -> when the device first brought it).
-- Returns how many states were applied (a state older than the stored is skipped,
-- its pems too: a stale state changes nothing, the library included).
local devices, lib, refs, pinned, evicted = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local p, received, share_max = ARGV[1], ARGV[2], tonumber(ARGV[4])
local function decr(key, field)
  if redis.call('HINCRBY', key, field, -1) <= 0 then redis.call('HDEL', key, field) end
end
local applied = 0
for _, state in ipairs(cjson.decode(ARGV[3])) do
  local id, reported, active, items, pems =
    state[1], tonumber(state[2]), state[3], state[4], state[5]
  local dev = p .. 'dev:' .. id
  local previous = redis.call('ZSCORE', devices, id)
  if not (previous and tonumber(previous) > reported) then
    local old = redis.call('HGETALL', dev)
    local oldtags, oldid = {}, {}
    for i = 1, #old, 2 do
      local tag, typ = string.match(old[i], '^(%d+):(%d+)$')
      if tag then
        if oldtags[tag] == nil then oldtags[tag] = '' end
        if typ == '0' then oldtags[tag] = cjson.decode(old[i + 1])['sha256'] end
        if typ == '1' then oldid[tag] = true end
      end
    end
    redis.call('DEL', dev)
    local newtags, newexp, newid = {}, {}, {}
    for _, item in ipairs(items) do
      local field, value, tag, typ, sha, na = item[1], item[2], item[3], item[4], item[5], item[6]
      redis.call('HSET', dev, field, value)
      if newtags[tag] == nil then newtags[tag] = '' end
      if typ == '0' then newtags[tag] = sha end
      if na ~= '' then
        local x = tonumber(na)
        if newexp[tag] == nil or x < newexp[tag] then newexp[tag] = x end
        if typ == '1' then newid[tag] = x end
      end
    end
    redis.call('HSET', dev, '_received', received, '_v', state[6])
    if active ~= '' then redis.call('HSET', dev, '_active', active) end
    -- The client certificates' own index: what identity rotation plans by. A device that
    -- names its identity tag is indexed by that tag's certificate alone (one left in the
    -- old tag until its retire is no identity); one that names none, by every one it holds.
    local identity = state[7]
    if identity ~= nil and identity ~= '' then
      redis.call('HSET', dev, '_identity', identity)
      local own = newid[identity]
      newid = {}
      newid[identity] = own
    end
    for tag in pairs(oldid) do
      if newid[tag] == nil then redis.call('ZREM', p .. 'idexp:' .. tag, id) end
    end
    for tag, x in pairs(newid) do redis.call('ZADD', p .. 'idexp:' .. tag, x, id) end
    for _, key in ipairs(state[8] or {}) do redis.call('HSETNX', p .. 'keys', key, id) end
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
    -- oldest leaves the share (counted) and the library once no share and no pin holds it.
    local share = p .. 'libshare:' .. id
    for _, pem in ipairs(pems) do
      redis.call('HSETNX', lib, pem[1], pem[2])
      if redis.call('ZADD', share, 'NX', received, pem[1]) == 1 then
        redis.call('HINCRBY', refs, pem[1], 1)
      end
    end
    while redis.call('ZCARD', share) > share_max do
      local oldest = redis.call('ZPOPMIN', share)[1]
      redis.call('INCR', evicted)
      if redis.call('HINCRBY', refs, oldest, -1) <= 0 then
        redis.call('HDEL', refs, oldest)
        if redis.call('SISMEMBER', pinned, oldest) == 0 then redis.call('HDEL', lib, oldest) end
      end
    end
    redis.call('ZADD', devices, reported, id)
    applied = applied + 1
  end
end
return applied
