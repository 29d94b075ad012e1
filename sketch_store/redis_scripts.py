"""Lua scripts of the Redis store. Each runs atomically and touches the keys of one stream only.

Sums are float64 little-endian byte strings of length 16m; the scripts add them element
by element with Lua's ``struct`` library (available in Redis ≥ 7 and Valkey), so a flush
updates the partition's all-time sum, its count, its next offset and the time buckets in
one atomic step (BRIEF §4).
"""

# Shared helper: add the float64 vector `delta` into the `sum` field of hash `key`, 64 doubles
# per struct call rather than one call per element (a partition flush at m = 1000 takes ~1 ms).
_ADD_INTO = """
local function add_into(key, delta)
  local cur = redis.call('HGET', key, 'sum')
  if not cur then
    redis.call('HSET', key, 'sum', delta)
    return
  end
  if #cur ~= #delta then
    return redis.error_reply('sum length mismatch in ' .. key)
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

#: KEYS: meta. ARGV: field, value, field, value, ... Returns 1 if created, 0 if the stream exists.
CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""

#: KEYS: meta, part. ARGV: fingerprint.
#: Returns {epoch, next_offset or ''} or {'missing'} / {'spec', stored_fingerprint}.
CLAIM = """
local fp = redis.call('HGET', KEYS[1], 'fingerprint')
if not fp then return {'missing'} end
if fp ~= ARGV[1] then return {'spec', fp} end
local epoch = redis.call('HINCRBY', KEYS[2], 'epoch', 1)
local nxt = redis.call('HGET', KEYS[2], 'next_offset') or ''
return {tostring(epoch), nxt}
"""

#: KEYS: meta, parts, part, then for each bucket: bucket key, bucket index key.
#: ARGV: fingerprint, member, epoch, from_offset, next_offset, now, sum, count,
#:       then for each bucket: start, expire_at, prune_before, sum, count.
#: Returns {'ok'} | {'duplicate'} | {'fenced', epoch} | {'offset', stored_next} | {'missing'} | {'spec', fp}.
FLUSH = (
    _ADD_INTO
    + """
local fp = redis.call('HGET', KEYS[1], 'fingerprint')
if not fp then return {'missing'} end
if fp ~= ARGV[1] then return {'spec', fp} end
local part = KEYS[3]
local epoch = redis.call('HGET', part, 'epoch') or '0'
if epoch ~= ARGV[3] then return {'fenced', epoch} end
local stored = redis.call('HGET', part, 'next_offset')
if stored and stored ~= ARGV[4] then
  if stored == ARGV[5] then return {'duplicate'} end
  return {'offset', stored}
end
add_into(part, ARGV[7])
redis.call('HINCRBY', part, 'count', ARGV[8])
redis.call('HSET', part, 'next_offset', ARGV[5], 'updated', ARGV[6])
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('HSET', KEYS[1], 'updated', ARGV[6])
local nb = (#KEYS - 3) / 2
for b = 1, nb do
  local bkey = KEYS[3 + 2 * b - 1]
  local ikey = KEYS[3 + 2 * b]
  local a = 8 + 5 * (b - 1)
  add_into(bkey, ARGV[a + 4])
  redis.call('HINCRBY', bkey, 'count', ARGV[a + 5])
  redis.call('EXPIREAT', bkey, ARGV[a + 2])
  redis.call('ZADD', ikey, ARGV[a + 1], ARGV[a + 1])
  redis.call('ZREMRANGEBYSCORE', ikey, '-inf', '(' .. ARGV[a + 3])
end
return {'ok'}
"""
)

#: KEYS: meta, parts. Returns {fingerprint or false, updated or false, {member, sum, count, next, epoch, updated}...}.
READ_PARTS = """
local fp = redis.call('HGET', KEYS[1], 'fingerprint')
local upd = redis.call('HGET', KEYS[1], 'updated')
local out = {fp or false, upd or false}
local prefix = string.sub(KEYS[2], 1, #KEYS[2] - 5) .. 'part:'
for _, member in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local h = redis.call('HMGET', prefix .. member, 'sum', 'count', 'next_offset', 'epoch', 'updated')
  table.insert(out, {member, h[1] or false, h[2] or false, h[3] or false, h[4] or false, h[5] or false})
end
return out
"""

#: KEYS: meta, bucket index. ARGV: min start (inclusive), bucket key prefix.
#: Returns {fingerprint or false, {start, sum, count}...} for live buckets with start >= ARGV[1].
READ_BUCKETS = """
local fp = redis.call('HGET', KEYS[1], 'fingerprint')
local out = {fp or false}
for _, start in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], ARGV[1], '+inf')) do
  local h = redis.call('HMGET', ARGV[2] .. start, 'sum', 'count')
  if h[1] then table.insert(out, {start, h[1], h[2]}) end
end
return out
"""
