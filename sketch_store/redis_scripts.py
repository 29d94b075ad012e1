"""Lua scripts of the Redis store. Each runs atomically and touches the keys of one stream only.

Sums are float64 little-endian byte strings of length 16m; the scripts add them element
by element with Lua's ``struct`` library (available in Redis ≥ 7 and Valkey), so a flush
updates the partition's all-time sum, its count, its next offset and the time buckets in
one atomic step.

Two rules hold for every script (docs/redis_scripts.md):

* **Every key it touches is in KEYS** (Redis Cluster rules). A read whose keys depend on
  stored data (the partitions in the member set, the buckets in an index) gets those keys
  from a first, plain read; the script checks that the set or index still lists exactly
  them and otherwise answers ``{'retry', current list...}``.
* **It fails whole.** Redis does not roll back the writes a script made before an error, so
  each script first validates everything it will touch — argument counts and numbers, key
  types, stored counts and epochs, the length of every stored sum against its delta — and
  returns a status (``badarg``, ``corrupt``, ...) before its first write. Its writes cannot
  fail after that.

Replies are tables whose first element is a status string; see each script's header.
"""

# Validation helpers shared by the scripts. `corrupt` and `badarg` build the refusal replies.
_CHECKS = """
local function is_int(s)
  return type(s) == 'string' and #s <= 18 and string.match(s, '^-?%d+$') ~= nil
end
local function is_num(s)
  local n = tonumber(s)
  return type(s) == 'string' and n ~= nil and n == n and n ~= math.huge and n ~= -math.huge
end
local function key_type(key)
  return redis.call('TYPE', key)['ok']
end
local function corrupt(kind, key, detail)
  return {'corrupt', kind, key, detail}
end
local function badarg(detail)
  return {'badarg', detail}
end
-- nil if `key` is absent or of type `want`, else a refusal reply
local function check_type(key, want)
  local t = key_type(key)
  if t ~= 'none' and t ~= want then
    return corrupt('type', key, 'is a ' .. t .. ', expected a ' .. want)
  end
  return nil
end
-- nil if hash field `field` of `key` is absent or an integer, else a refusal reply
local function check_int_field(key, field)
  local v = redis.call('HGET', key, field)
  if v and not is_int(v) then
    return corrupt('field', key, field .. ' is ' .. string.format('%q', string.sub(v, 1, 40)) .. ', not an integer')
  end
  return nil
end
-- nil if the stored `sum` of hash `key` is absent or as long as `delta`, else a refusal reply
local function check_sum(key, delta)
  local n = redis.call('HSTRLEN', key, 'sum')
  if n ~= 0 and n ~= #delta then
    return corrupt('sum', key, 'sum is ' .. n .. ' bytes, expected ' .. #delta)
  end
  return nil
end

-- The parts set's members `current` must be exactly ARGV (as listed by a read just before),
-- and KEYS[first + i] the partition key of ARGV[i]. Returns nil when so, else the reply:
-- {'retry', current members...} when the set changed meanwhile, or a badarg.
local function check_listing(current, first)
  local listed = {}
  for i = 1, #ARGV do listed[ARGV[i]] = true end
  local same = #current == #ARGV and #KEYS == first + #ARGV
  for _, m in ipairs(current) do
    if not listed[m] then same = false end
  end
  if not same then
    table.insert(current, 1, 'retry')
    return current
  end
  local prefix = string.sub(KEYS[2], 1, #KEYS[2] - 5) .. 'part:'
  for i = 1, #ARGV do
    if KEYS[first + i] ~= prefix .. ARGV[i] then
      return badarg('key ' .. KEYS[first + i] .. ' is not member ' .. ARGV[i])
    end
  end
  return nil
end
"""

# Add the float64 vector `delta` into the `sum` field of hash `key` (lengths already checked),
# 64 doubles per struct call rather than one call per element (m = 1000 takes ~1 ms).
_ADD_INTO = """
local function add_into(key, delta)
  local cur = redis.call('HGET', key, 'sum')
  if not cur or #cur == 0 then
    redis.call('HSET', key, 'sum', delta)
    return
  end
  local n = #delta / 8
  local out = {}
  local pos = 1
  local i = 1
  while i <= n do
    local k = math.min(64, n - i + 1)
    local fmt = '<' .. string.rep('d', k)
    local a = {struct.unpack(fmt, cur, pos)}
    local b = {struct.unpack(fmt, delta, pos)}
    for j = 1, k do
      a[j] = a[j] + b[j]
    end
    out[#out + 1] = struct.pack(fmt, unpack(a, 1, k))
    pos = pos + 8 * k
    i = i + k
  end
  redis.call('HSET', key, 'sum', table.concat(out))
end
"""

# The coordinate bounds of a partition: fields lo and hi, float64 byte strings of one length, and
# `bounded`, the count they cover. They are valid only while bounded equals the partition's count: a
# flush that raised the count without widening them (a worker of a version that did not track bounds)
# leaves them stale, and they are never trusted or widened again.
# check_bounds: nil if the stored ones are absent or as long as the delta's `lo` (when it has any).
# widen_bounds (after check_bounds, before the count is raised): lo = min(lo, delta lo), hi likewise,
# then bounded = the new count; without valid stored bounds, the delta's become them only if the
# partition has counted no row yet, else they are deleted (unknown from then on).
_BOUNDS = """
-- op(a_j, b_j) for every double of the equally long byte strings a and b, 64 per struct call
local function elementwise(a, b, op)
  local n, out, pos, i = #a / 8, {}, 1, 1
  while i <= n do
    local k = math.min(64, n - i + 1)
    local fmt = '<' .. string.rep('d', k)
    local x, y = {struct.unpack(fmt, a, pos)}, {struct.unpack(fmt, b, pos)}
    for j = 1, k do x[j] = op(x[j], y[j]) end
    out[#out + 1] = struct.pack(fmt, unpack(x, 1, k))
    pos = pos + 8 * k
    i = i + k
  end
  return table.concat(out)
end
local function check_bounds(key, lo)
  local a, b = redis.call('HSTRLEN', key, 'lo'), redis.call('HSTRLEN', key, 'hi')
  if a ~= b or (a ~= 0 and #lo ~= 0 and a ~= #lo) then
    return corrupt('bounds', key, 'bounds are ' .. a .. ' and ' .. b .. ' bytes, expected ' .. #lo)
  end
  return nil
end
local function widen_bounds(key, lo, hi, count)
  local n = tonumber(count)
  if n == 0 then return end
  local stored = tonumber(redis.call('HGET', key, 'count') or '0')
  local cur_lo = redis.call('HGET', key, 'lo')
  local valid = cur_lo and redis.call('HGET', key, 'bounded') == string.format('%d', stored)
  if #lo == 0 or (stored > 0 and not valid) then
    redis.call('HDEL', key, 'lo', 'hi', 'bounded')
    return
  end
  if valid then
    local cur_hi = redis.call('HGET', key, 'hi')
    lo, hi = elementwise(cur_lo, lo, math.min), elementwise(cur_hi, hi, math.max)
  end
  redis.call('HSET', key, 'lo', lo, 'hi', hi, 'bounded', string.format('%d', stored + n))
end
"""

#: KEYS: meta. ARGV: field, value, field, value, ...
#: Returns 1 if created, 0 if the stream exists, {'badarg', detail} for an odd ARGV count.
CREATE = """
if #ARGV == 0 or #ARGV % 2 ~= 0 then return {'badarg', 'CREATE needs field, value pairs'} end
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""

#: KEYS: meta, parts, epoch counter, then the partition key of each member in ARGV (same order).
#: ARGV: the members of the parts set, as read just before (none if it is not a set).
#: Deletes the meta key only (every later flush or claim of the stream then finds it missing
#: and writes nothing) after raising the epoch counter to every partition's epoch, so epochs
#: of a successor stream start above all of this one's. The counter itself is kept.
#: Returns {'ok', deleted (0/1), epoch high-water} | {'retry', members...} | {'corrupt', ...}.
DROP = (
    _CHECKS
    + """
local err = check_type(KEYS[3], 'string')
if err then return err end
local current = {}
if key_type(KEYS[2]) == 'set' then current = redis.call('SMEMBERS', KEYS[2]) end
local listing = check_listing(current, 3)
if listing then return listing end
local stored = redis.call('GET', KEYS[3])
if stored and not is_int(stored) then return corrupt('field', KEYS[3], 'epoch counter is not an integer') end
local high = tonumber(stored or '0')
for i = 4, #KEYS do
  if key_type(KEYS[i]) == 'hash' then
    local e = redis.call('HGET', KEYS[i], 'epoch')
    if is_int(e) and tonumber(e) > high then high = tonumber(e) end
  end
end
if high > tonumber(stored or '0') then redis.call('SET', KEYS[3], string.format('%d', high)) end
return {'ok', redis.call('DEL', KEYS[1]), string.format('%d', high)}
"""
)

#: KEYS: meta, part, epoch counter. ARGV: fingerprint, [incarnation the claimer expects].
#: The new epoch is one above both the stream's epoch counter and the partition's epoch; it
#: is stored in both, so epochs only grow, across partitions and across recreations.
#: Returns {'ok', epoch, next_offset or '', incarnation} | {'missing'} | {'spec', stored fingerprint}
#:       | {'recreated', incarnation} | {'corrupt', kind, key, detail} | {'badarg', detail}.
CLAIM = (
    _CHECKS
    + """
if #ARGV < 1 or #ARGV > 2 then return badarg('CLAIM takes a fingerprint and an optional incarnation') end
local err = check_type(KEYS[1], 'hash')
if err then return err end
local meta = redis.call('HMGET', KEYS[1], 'fingerprint', 'incarnation')
if not meta[1] then return {'missing'} end
if meta[1] ~= ARGV[1] then return {'spec', meta[1]} end
local inc = meta[2] or ''
if ARGV[2] and ARGV[2] ~= inc then return {'recreated', inc} end
err = check_type(KEYS[2], 'hash') or check_int_field(KEYS[2], 'epoch') or check_int_field(KEYS[2], 'next_offset')
  or check_type(KEYS[3], 'string')
if err then return err end
local counter = redis.call('GET', KEYS[3])
if counter and not is_int(counter) then return corrupt('field', KEYS[3], 'epoch counter is not an integer') end
local epoch = math.max(tonumber(counter or '0'), tonumber(redis.call('HGET', KEYS[2], 'epoch') or '0')) + 1
local text = string.format('%d', epoch)
redis.call('SET', KEYS[3], text)
redis.call('HSET', KEYS[2], 'epoch', text)
return {'ok', text, redis.call('HGET', KEYS[2], 'next_offset') or '', inc}
"""
)

#: KEYS: meta, parts, part, then for each bucket: bucket key, bucket index key.
#: ARGV: fingerprint, incarnation, member, epoch, from_offset, next_offset, now, sum, count,
#:       lo, hi, then for each bucket: start, expire_at, prune_before, sum, count.
#: Applies the delta of offsets [from_offset, next_offset) to the partition and the buckets,
#: only if the stream, its incarnation, the epoch and the stored next offset all match.
#: lo and hi are the delta rows' coordinate bounds (float64 byte strings, both empty when the
#: delta has no rows); the partition's fields lo/hi widen to them and `bounded` becomes the new
#: count. They are kept only while they cover every row counted (bounded = count): a partition
#: with rows but no valid bounds loses them for good, and so does a delta of rows without bounds.
#: Returns {'ok'} | {'duplicate'} | {'fenced', stored epoch} | {'offset', stored next} | {'missing'}
#:       | {'spec', stored fingerprint} | {'recreated', stored incarnation}
#:       | {'corrupt', kind, key, detail} | {'badarg', detail}; nothing is written unless 'ok'.
FLUSH = (
    _CHECKS
    + _ADD_INTO
    + _BOUNDS
    + """
-- 1. arguments
if #KEYS < 3 or (#KEYS - 3) % 2 ~= 0 then return badarg('FLUSH needs 3 keys plus 2 per bucket, got ' .. #KEYS) end
local nb = (#KEYS - 3) / 2
if #ARGV ~= 11 + 5 * nb then
  return badarg(nb .. ' buckets need ' .. (11 + 5 * nb) .. ' arguments, got ' .. #ARGV)
end
for _, i in ipairs({4, 5, 6, 9}) do
  if not is_int(ARGV[i]) then return badarg('argument ' .. i .. ' is not an integer') end
end
if not is_num(ARGV[7]) then return badarg('now is not a number') end
if tonumber(ARGV[6]) < tonumber(ARGV[5]) then return badarg('next_offset is below from_offset') end
local delta = ARGV[8]
if #delta == 0 or #delta % 8 ~= 0 then return badarg('the sum delta is ' .. #delta .. ' bytes') end
local lo, hi = ARGV[10], ARGV[11]
if #lo ~= #hi or #lo % 8 ~= 0 then return badarg('the bounds are ' .. #lo .. ' and ' .. #hi .. ' bytes') end
for b = 1, nb do
  local a = 11 + 5 * (b - 1)
  for _, i in ipairs({a + 1, a + 2, a + 3, a + 5}) do
    if not is_int(ARGV[i]) then return badarg('argument ' .. i .. ' of bucket ' .. b .. ' is not an integer') end
  end
  if #ARGV[a + 4] ~= #delta then
    return badarg('the sum delta of bucket ' .. b .. ' is ' .. #ARGV[a + 4] .. ' bytes, not ' .. #delta)
  end
end
-- 2. the stream and the claim
local err = check_type(KEYS[1], 'hash')
if err then return err end
local meta = redis.call('HMGET', KEYS[1], 'fingerprint', 'incarnation')
if not meta[1] then return {'missing'} end
if meta[1] ~= ARGV[1] then return {'spec', meta[1]} end
if (meta[2] or '') ~= ARGV[2] then return {'recreated', meta[2] or ''} end
local part = KEYS[3]
err = check_type(part, 'hash')
if err then return err end
local epoch = redis.call('HGET', part, 'epoch') or '0'
if epoch ~= ARGV[4] then return {'fenced', epoch} end
local stored = redis.call('HGET', part, 'next_offset')
if stored and stored ~= ARGV[5] then
  if stored == ARGV[6] then return {'duplicate'} end
  return {'offset', stored}
end
-- 3. every stored value about to be updated
err = check_sum(part, delta) or check_int_field(part, 'count') or check_type(KEYS[2], 'set')
  or check_bounds(part, lo)
if err then return err end
for b = 1, nb do
  local bkey, ikey = KEYS[2 + 2 * b], KEYS[3 + 2 * b]
  err = check_type(bkey, 'hash') or check_sum(bkey, delta) or check_int_field(bkey, 'count')
    or check_type(ikey, 'zset')
  if err then return err end
end
-- 4. writes: none of them can fail now
add_into(part, delta)
widen_bounds(part, lo, hi, ARGV[9])
redis.call('HINCRBY', part, 'count', ARGV[9])
redis.call('HSET', part, 'next_offset', ARGV[6], 'updated', ARGV[7])
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('HSET', KEYS[1], 'updated', ARGV[7])
for b = 1, nb do
  local bkey, ikey = KEYS[2 + 2 * b], KEYS[3 + 2 * b]
  local a = 11 + 5 * (b - 1)
  add_into(bkey, ARGV[a + 4])
  redis.call('HINCRBY', bkey, 'count', ARGV[a + 5])
  redis.call('EXPIREAT', bkey, ARGV[a + 2])
  redis.call('ZADD', ikey, ARGV[a + 1], ARGV[a + 1])
  redis.call('ZREMRANGEBYSCORE', ikey, '-inf', '(' .. ARGV[a + 3])
end
return {'ok'}
"""
)

#: KEYS: meta, parts, then the partition key of each member in ARGV (same order).
#: ARGV: the members of the parts set, as read just before.
#: Returns {'missing'} | {'retry', current members...} when the set is not exactly ARGV
#:       | {'ok', fingerprint, updated or false, {member, sum, count, next, epoch, updated, lo, hi, bounded}...}.
READ_PARTS = (
    _CHECKS
    + """
local err = check_type(KEYS[1], 'hash') or check_type(KEYS[2], 'set')
if err then return err end
local meta = redis.call('HMGET', KEYS[1], 'fingerprint', 'updated')
if not meta[1] then return {'missing'} end
local current = redis.call('SMEMBERS', KEYS[2])
local listing = check_listing(current, 2)
if listing then return listing end
local out = {'ok', meta[1], meta[2] or false}
for i = 1, #ARGV do
  local key = KEYS[2 + i]
  err = check_type(key, 'hash')
  if err then return err end
  local h = redis.call('HMGET', key, 'sum', 'count', 'next_offset', 'epoch', 'updated', 'lo', 'hi', 'bounded')
  table.insert(out, {ARGV[i], h[1] or false, h[2] or false, h[3] or false, h[4] or false, h[5] or false,
                     h[6] or false, h[7] or false, h[8] or false})
end
return out
"""
)

#: KEYS: meta, then the partition key of each claim to check. ARGV: none.
#: A read only, in one step (a cluster has no multi-key transactions; the keys share the stream's slot).
#: Returns {'missing'} | {'ok', incarnation or false, epoch or false (one per partition key)...}.
READ_CLAIMS = (
    _CHECKS
    + """
local err = check_type(KEYS[1], 'hash')
if err then return err end
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
local out = {'ok', redis.call('HGET', KEYS[1], 'incarnation') or false}
for i = 2, #KEYS do
  err = check_type(KEYS[i], 'hash')
  if err then return err end
  table.insert(out, redis.call('HGET', KEYS[i], 'epoch') or false)
end
return out
"""
)

#: KEYS: meta, bucket index, then the bucket key of each start in ARGV[2..] (same order).
#: ARGV: min start (inclusive), then the starts the index holds from there, as read just before.
#: Returns {'missing'} | {'retry', current starts...} when the index does not list exactly those
#:       | {'ok', fingerprint, {start, sum, count}...} for the listed buckets still alive.
READ_BUCKETS = (
    _CHECKS
    + """
local err = check_type(KEYS[1], 'hash') or check_type(KEYS[2], 'zset')
if err then return err end
if not is_num(ARGV[1]) then return badarg('min start is not a number') end
local fp = redis.call('HGET', KEYS[1], 'fingerprint')
if not fp then return {'missing'} end
local current = redis.call('ZRANGEBYSCORE', KEYS[2], ARGV[1], '+inf')
local same = #current == #ARGV - 1 and #KEYS == 1 + #ARGV
for i, start in ipairs(current) do
  if ARGV[i + 1] ~= start then same = false end
end
if not same then
  table.insert(current, 1, 'retry')
  return current
end
local level = string.match(KEYS[2], ':buckets:([^:]*)$') or ''
local prefix = string.sub(KEYS[2], 1, #KEYS[2] - #level - 8) .. 'bucket:' .. level .. ':'
local out = {'ok', fp}
for i = 2, #ARGV do
  local key = KEYS[1 + i]
  if key ~= prefix .. ARGV[i] then return badarg('key ' .. key .. ' is not bucket ' .. ARGV[i]) end
  err = check_type(key, 'hash')
  if err then return err end
  local h = redis.call('HMGET', key, 'sum', 'count')
  if h[1] then table.insert(out, {ARGV[i], h[1], h[2] or false}) end
end
return out
"""
)
