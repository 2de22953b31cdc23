"""Lua scripts the Redis store runs. Each is atomic in Redis, like MULTI/EXEC, but costs one
round trip and one argument to pack instead of one command per sorted-set increment.

Key names come from :mod:`streamrec.keys`: the caller passes each kind's key prefix
(``keys.key(prefix, kind, "")``) and the scripts append the id, which always comes last.
"""

from __future__ import annotations

# Between the event types one user had with one item (a configured type never holds it).
EVENT_TYPE_SEPARATOR = "\x1f"

# KEYS[1]: the hash of offsets this call's keys have applied ("topic:partition" -> offset);
# ARGV[1]: JSON document (see RedisStore.apply); ARGV[2..]: float32 vectors, users' first.
# A call whose offsets the hash holds already did its work (a retry after a lost reply, or a
# group that ran ahead before a crash): it changes nothing. Every key a call touches is in
# KEYS[1]'s slot (one hash tag per group on a cluster).
# Increments travel as JSON numbers (shortest round-trip form) and reach Redis at full
# double precision.
APPLY = r"""
local p = cjson.decode(ARGV[1])
local k = p.k
if #p.offsets > 0 then
  local behind = false
  for n = 1, #p.offsets, 2 do
    local at = redis.call('HGET', KEYS[1], p.offsets[n])
    if not at or tonumber(at) < tonumber(p.offsets[n + 1]) then behind = true end
  end
  if not behind then return 0 end
end
local function incr_all(key, flat)
  for n = 1, #flat, 2 do redis.call('ZINCRBY', key, flat[n + 1], flat[n]) end
end
incr_all(k.pop, p.pop)
for n = 1, #p.popcat, 2 do incr_all(k.popcat .. p.popcat[n], p.popcat[n + 1]) end
incr_all(k.cnt, p.cnt)
local trim_neighbours = -p.max_neighbours - 1
for n = 1, #p.pairs, 2 do
  local key = k.nbr .. p.pairs[n]
  incr_all(key, p.pairs[n + 1])
  redis.call('ZREMRANGEBYRANK', key, 0, trim_neighbours)
end
-- Event types per (user, item): merged into "type\31type" (the separator: byte 31).
for n = 1, #p.types, 2 do
  local key = k.evtypes .. p.types[n]
  local flat = p.types[n + 1]
  for m = 1, #flat, 2 do
    local known = redis.call('HGET', key, flat[m])
    local merged = known or ''
    for kind in string.gmatch(flat[m + 1], '[^\31]+') do
      if not string.find('\31' .. merged .. '\31', '\31' .. kind .. '\31', 1, true) then
        merged = (merged == '') and kind or (merged .. '\31' .. kind)
      end
    end
    if merged ~= known then redis.call('HSET', key, flat[m], merged) end
  end
end
local trim_history = -p.history_length - 1
for n = 1, #p.hist, 2 do
  local key = k.hist .. p.hist[n]
  local flat = p.hist[n + 1]
  for start = 1, #flat, 2000 do
    local args = {}
    for m = start, math.min(start + 1999, #flat), 2 do
      args[#args + 1] = flat[m + 1]
      args[#args + 1] = flat[m]
    end
    redis.call('ZADD', key, 'GT', unpack(args))
  end
  -- What the history forgets, the event types forget too: both stay history_length long.
  local gone = redis.call('ZRANGE', key, 0, trim_history)
  if #gone > 0 then
    redis.call('ZREMRANGEBYRANK', key, 0, trim_history)
    for start = 1, #gone, 2000 do
      local last = math.min(start + 1999, #gone)
      redis.call('HDEL', k.evtypes .. p.hist[n], unpack(gone, start, last))
    end
  end
end
local blob = 2
for _, user in ipairs(p.mfu) do
  redis.call('SET', k.mfu .. user, ARGV[blob]); blob = blob + 1
end
for _, item in ipairs(p.mfi) do
  redis.call('SET', k.mfi .. item, ARGV[blob]); blob = blob + 1
end
for _, item in ipairs(p.mfchg) do redis.call('ZADD', k.mfchg, p.changed_at, item) end
for n = 1, #p.offsets, 2 do redis.call('HSET', KEYS[1], p.offsets[n], p.offsets[n + 1]) end
if p.events > 0 then redis.call('HINCRBY', k.stats, 'events_applied', p.events) end
return 1
"""

# KEYS[1]: a key in the users' slot (routes the call on a cluster); ARGV: the history key
# prefix, a limit, then user ids. Returns JSON: per user, a flat
# [item, score, ...] list of their positive history, newest first (an empty one is {}).
WINDOWS = r"""
local limit = tonumber(ARGV[2])
local out = {}
for n = 3, #ARGV do
  local rows = redis.call('ZRANGE', ARGV[1] .. ARGV[n], '+inf', '(0', 'BYSCORE', 'REV',
                          'LIMIT', 0, limit, 'WITHSCORES')
  out[#out + 1] = rows
end
return cjson.encode(out)
"""
