"""Lua scripts the Redis store runs. Each is atomic in Redis, like MULTI/EXEC, but costs one
round trip and one argument to pack instead of one command per sorted-set increment.

Key names come from :mod:`streamrec.storage.keys`: the caller passes each kind's key prefix
(``keys.key(prefix, kind, "")``) and the scripts append the id, which always comes last.
"""

from __future__ import annotations

# Between the event types one user had with one item (a configured type never holds it).
EVENT_TYPE_SEPARATOR = "\x1f"
# The history layout: a user's history key holding the member HISTORY_MARKER (score +inf)
# keeps each item's score as ms * HISTORY_SPAN + mask, where ms is the time of the last
# interaction (epoch milliseconds) and mask's bit n says the user had SCORED_EVENT_TYPES[n]
# with the item. Other types are in the user's event-types hash, a field per item holding
# just those. A history key without the marker is of the layout before (score: ms; every
# type in the hash, an item without a field has none): it is read as such, and the first
# batch that touches the user rewrites it. The types are the default event types, in a
# fixed order: a layout constant, not a setting. |ms| stays below 2^53 / HISTORY_SPAN
# (year 10,000), so every score is an integer a double holds exactly.
SCORED_EVENT_TYPES = ("view", "click", "add_to_cart", "purchase", "rating")
HISTORY_SPAN = 2 ** len(SCORED_EVENT_TYPES)
HISTORY_MARKER = ""  # never an item id (ids are at least one character)
# How APPLY's error for a NaN or an infinity it computed begins (RedisStore raises
# NonFiniteError with the rest: the key and member).
NON_FINITE = "streamrec non-finite:"
# Fields of the stats hash holding the hybrid's tally of its sources ("blend:trials",
# "blend:hits:mf" ...; recommender.blend).
BLEND_FIELD = "blend:"

# Lua shared by APPLY and REWRITE_HISTORIES: the scored history layout's constants, helpers
# and upgrade(key, types_key), which rewrites a history of the layout before (needs CHUNK).
_HISTORY_LAYOUT = r"""
local SPAN = @SPAN@
local BITS = {@BITS@}
local function with_kind(joined, kind)
  if string.find('\31' .. joined .. '\31', '\31' .. kind .. '\31', 1, true) then
    return joined
  end
  return (joined == '') and kind or (joined .. '\31' .. kind)
end
-- A set of types (joined): its mask, and its other types merged into ``others``.
local function split_types(joined, others)
  local mask = 0
  for kind in string.gmatch(joined, '[^\31]+') do
    if BITS[kind] then mask = bit.bor(mask, BITS[kind]) else others = with_kind(others, kind) end
  end
  return mask, others
end
-- A history of the layout before (or none): rewritten into this one, with the marker.
local function upgrade(key, types_key)
  local rows = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
  local stored = {}
  for start = 1, #rows, 2 * CHUNK do
    local fields = {}
    for r = start, math.min(start + 2 * CHUNK - 1, #rows), 2 do fields[#fields + 1] = rows[r] end
    for _, found in ipairs(redis.call('HMGET', types_key, unpack(fields))) do
      stored[#stored + 1] = found
    end
  end
  local args, fields, gone = {'+inf', '@MARKER@'}, {}, {}
  for r = 1, #rows, 2 do
    local known = stored[(r + 1) / 2]
    local mask, others = split_types(known or '', '')
    args[#args + 1] = tonumber(rows[r + 1]) * SPAN + mask
    args[#args + 1] = rows[r]
    if others ~= '' then
      if others ~= known then
        fields[#fields + 1] = rows[r]
        fields[#fields + 1] = others
      end
    elseif known then
      gone[#gone + 1] = rows[r]
    end
  end
  for start = 1, #args, 2 * CHUNK do
    redis.call('ZADD', key, unpack(args, start, math.min(start + 2 * CHUNK - 1, #args)))
  end
  for start = 1, #fields, 2 * CHUNK do
    redis.call('HSET', types_key, unpack(fields, start, math.min(start + 2 * CHUNK - 1, #fields)))
  end
  for start = 1, #gone, CHUNK do
    redis.call('HDEL', types_key, unpack(gone, start, math.min(start + CHUNK - 1, #gone)))
  end
end
""".replace("@SPAN@", str(HISTORY_SPAN)).replace("@MARKER@", HISTORY_MARKER).replace(
    "@BITS@", ", ".join(f"{kind} = {2 ** n}" for n, kind in enumerate(SCORED_EVENT_TYPES)))

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
-- A snapshot is copying this state (keys.PAUSE): change nothing; the caller retries.
if p.pause and redis.call('EXISTS', p.pause) == 1 then return -1 end
-- Members per ZMSCORE/ZADD/HMGET/HSET/MSET call: bounded by Lua's unpack stack (8000).
local CHUNK = 1000
-- Walks a flat [member, value, ...] list a chunk at a time: yields the index of the
-- chunk's first member in flat and the chunk's members.
local function chunks(flat)
  local start = 1 - 2 * CHUNK
  return function()
    start = start + 2 * CHUNK
    if start > #flat then return nil end
    local members = {}
    local last = math.min(start + 2 * CHUNK - 1, #flat)
    for n = start, last, 2 do members[#members + 1] = flat[n] end
    return start, members
  end
end
-- Event ids (recommender.once): p.claims is [id, position, bucket, ...]. A claim on an id
-- that another record holds (a remembered one, or an earlier claim of this batch) refuses
-- the whole batch before anything is written: the reply names the records that repeat one.
-- Checked before the offsets: a cluster's replay of a chunk the global group applied
-- already must still leave out, in the user groups, the records that repeat an id.
local claimed = p.claims and #p.claims > 0
if claimed then
  local ids = {}
  for n = 1, #p.claims, 3 do ids[#ids + 1] = p.claims[n] end
  local known = {}
  for _, number in ipairs(redis.call('ZRANGE', k.seenbk, 0, -1)) do
    for start = 1, #ids, CHUNK do
      local found = redis.call('HMGET', k.seen .. number,
                               unpack(ids, start, math.min(start + CHUNK - 1, #ids)))
      for m = 1, #found do
        if found[m] then known[start + m - 1] = found[m] end
      end
    end
  end
  local first, repeated = {}, {}
  for n, id in ipairs(ids) do
    local position = p.claims[3 * n - 1]
    local holder = first[id] or known[n]
    if holder and holder ~= position then
      repeated[#repeated + 1] = position
    elseif not first[id] then
      first[id] = position
    end
  end
  if #repeated > 0 then return repeated end
end
if #p.offsets > 0 then
  local behind = false
  for n = 1, #p.offsets, 2 do
    local at = redis.call('HGET', KEYS[1], p.offsets[n])
    if not at or tonumber(at) < tonumber(p.offsets[n + 1]) then behind = true end
  end
  if not behind then return 0 end
end
-- Decayed sorted sets (popularity overall and per category, the co-occurrence normalisers,
-- each item's neighbours) each have a landmark in the hash k.lm (field: kind and id): a
-- stored score S means S * 2^((landmark - now) / half_life). The batch's increments are in
-- its own frame (p.decay.reference). The write rule mirrors recommender.decay.renormalise:
-- a key with nothing stored takes the batch's frame; a key with values but no landmark
-- has the legacy epoch's; a key more than rescale_half_lives behind the reference is
-- rescaled first and takes the batch's frame; otherwise the increments move into the
-- key's frame. Every new score is computed and checked before anything is written: a
-- script is not rolled back. old * scale + increment * factor is the same double
-- arithmetic the in-memory store does, since scores and Lua numbers cross as exact %.17g
-- text. A rescale multiplies every member natively (ZUNIONSTORE of the key alone with a
-- weight: the same IEEE product, 2-3 times faster than a loop here over a large key).
local decayed = {}
-- Popularity keys (popular = true) decay at their own half-life.
local function decays(key, field, flat, trim, popular)
  if #flat > 0 then
    decayed[#decayed + 1] = {key = key, field = field, flat = flat, trim = trim,
                             popular = popular}
  end
end
decays(k.pop, p.lf.pop, p.pop, false, true)
for n = 1, #p.popcat, 2 do
  decays(k.popcat .. p.popcat[n], p.lf.popcat .. p.popcat[n], p.popcat[n + 1], false, true)
end
decays(k.cnt, p.lf.cnt, p.cnt, false)
for n = 1, #p.pairs, 2 do
  decays(k.nbr .. p.pairs[n], p.lf.nbr .. p.pairs[n], p.pairs[n + 1], true)
end
local moved = {}  -- landmark fields and values that change
if #decayed > 0 then
  local d = p.decay
  local reference = d.reference
  local fields = {}
  for n, key in ipairs(decayed) do fields[n] = key.field end
  local stored = {}
  for start = 1, #fields, CHUNK do
    local found = redis.call('HMGET', k.lm, unpack(fields, start,
                                                   math.min(start + CHUNK - 1, #fields)))
    for m = 1, #found do stored[start + m - 1] = found[m] end
  end
  for n, key in ipairs(decayed) do
    local half_life = key.popular and d.popularity_half_life or d.half_life
    local limit = d.rescale_half_lives * half_life
    local landmark = stored[n] and tonumber(stored[n])
    local changed = not landmark
    if changed then
      landmark = (redis.call('EXISTS', key.key) == 1) and d.epoch or reference
    end
    local factor, scale = 1, nil
    if reference - landmark > limit then
      scale = 2 ^ ((landmark - reference) / half_life)
      landmark = reference
      changed = true
    else
      factor = 2 ^ ((reference - landmark) / half_life)
    end
    if changed then
      moved[#moved + 1] = key.field
      moved[#moved + 1] = landmark
    end
    local members, scores = {}, {}
    if scale then
      -- Infinities sort first and last: a stored one (a clamped older state) is refused.
      for _, row in ipairs({redis.call('ZRANGE', key.key, 0, 0, 'WITHSCORES'),
                            redis.call('ZRANGE', key.key, -1, -1, 'WITHSCORES')}) do
        local value = row[2] and tonumber(row[2]) * scale
        if value and (value ~= value or value == math.huge or value == -math.huge) then
          return redis.error_reply('@NON_FINITE@ ' .. key.key .. ', member ' .. row[1] ..
                                   ': ' .. tostring(value) .. ' is not finite; nothing ' ..
                                   'of the batch was written here')
        end
      end
    end
    local joining = 0
    for start, chunk in chunks(key.flat) do
      local olds = redis.call('ZMSCORE', key.key, unpack(chunk))
      for m, member in ipairs(chunk) do
        local increment = key.flat[start + 2 * m - 1] * factor
        local old = olds[m] and tonumber(olds[m])
        if not old then joining = joining + 1 end
        if old and scale then old = old * scale end
        members[#members + 1] = member
        scores[#members] = old and (old + increment) or increment
      end
    end
    for m = 1, #members do
      local value = scores[m]
      if value ~= value or value == math.huge or value == -math.huge then
        return redis.error_reply('@NON_FINITE@ ' .. key.key .. ', member ' ..
                                 members[m] .. ': ' .. tostring(value) ..
                                 ' is not finite; nothing of the batch was written here')
      end
    end
    key.members, key.scores, key.scale, key.joining = members, scores, scale, joining
  end
end
-- A neighbour list that will hold p.skiplist_from members or more moves to Redis's
-- skiplist encoding, where a ZADD is O(log n). In the listpack encoding, which Redis keeps
-- up to zset-max-listpack-entries members (256 as we ship it, so that a whole history stays
-- compact), each member a ZADD changes is a linear scan and move of the whole list: an
-- older state's batches waited on it (docs/benchmarks.md, "The state's age"). A member
-- longer than zset-max-listpack-value converts the key and removing it keeps the encoding.
-- Redis moves a list back when it loads it or a rescale rewrites it: the next batch that
-- touches the list moves it again.
local WIDE = string.rep('~', 4096)
local function to_skiplist(key)
  if redis.call('OBJECT', 'ENCODING', key) == 'listpack' then
    redis.call('ZADD', key, 0, WIDE)
    redis.call('ZREM', key, WIDE)
  end
end
-- Every batch leaves each list it touched at most max_neighbours long, so a list only
-- needs trimming when a member joined it.
local trim_neighbours = -p.max_neighbours - 1
for _, key in ipairs(decayed) do
  if key.scale then
    redis.call('ZUNIONSTORE', key.key, 1, key.key, 'WEIGHTS', key.scale)
  end
  if key.trim and redis.call('ZCARD', key.key) + key.joining >= p.skiplist_from then
    to_skiplist(key.key)
  end
  local created = 0
  for start = 1, #key.members, CHUNK do
    local args = {}
    for m = start, math.min(start + CHUNK - 1, #key.members) do
      args[#args + 1] = key.scores[m]
      args[#args + 1] = key.members[m]
    end
    created = created + redis.call('ZADD', key.key, unpack(args))
  end
  if key.trim and created > 0 then
    redis.call('ZREMRANGEBYRANK', key.key, 0, trim_neighbours)
  end
end
for start = 1, #moved, 2 * CHUNK do
  redis.call('HSET', k.lm, unpack(moved, start, math.min(start + 2 * CHUNK - 1, #moved)))
end
-- Histories and event types per (user, item), in the layout of scripts.HISTORY_MARKER:
-- score ms * SPAN + mask of the scored types; other types in the hash (byte 31 between).
@HISTORY_LAYOUT@
local batch_types = {}
for n = 1, #p.types, 2 do
  local by_item, flat = {}, p.types[n + 1]
  for m = 1, #flat, 2 do by_item[flat[m]] = flat[m + 1] end
  batch_types[p.types[n]] = by_item
end
-- The marker is one member more than the history_length items kept.
local trim_history = -p.history_length - 2
for n = 1, #p.hist, 2 do
  local key = k.hist .. p.hist[n]
  local types_key = k.evtypes .. p.hist[n]
  local flat = p.hist[n + 1]
  local typed = batch_types[p.hist[n]] or {}
  if not redis.call('ZSCORE', key, '@MARKER@') then upgrade(key, types_key) end
  local created = 0
  for start, members in chunks(flat) do
    local olds = redis.call('ZMSCORE', key, unpack(members))
    local args, other_items, other_types = {}, {}, {}
    for m, member in ipairs(members) do
      local at = flat[start + 2 * m - 1]
      local mask, others = split_types(typed[member] or '', '')
      local old = olds[m] and tonumber(olds[m])
      if old then
        local old_at = math.floor(old / SPAN)
        mask = bit.bor(mask, old - old_at * SPAN)
        if old_at > at then at = old_at end
      else
        created = created + 1
      end
      local score = at * SPAN + mask
      if score ~= old then
        args[#args + 1] = score
        args[#args + 1] = member
      end
      if others ~= '' then
        other_items[#other_items + 1] = member
        other_types[#other_items] = others
      end
    end
    if #args > 0 then redis.call('ZADD', key, unpack(args)) end
    if #other_items > 0 then
      local stored = redis.call('HMGET', types_key, unpack(other_items))
      local fields = {}
      for f, item in ipairs(other_items) do
        local merged = stored[f] or ''
        for kind in string.gmatch(other_types[f], '[^\31]+') do merged = with_kind(merged, kind) end
        if merged ~= stored[f] then
          fields[#fields + 1] = item
          fields[#fields + 1] = merged
        end
      end
      if #fields > 0 then redis.call('HSET', types_key, unpack(fields)) end
    end
  end
  -- What the history forgets, the event types forget too: both stay history_length long.
  -- As with the neighbours, only a history that gained a member can be over its length.
  if created > 0 then
    local gone = redis.call('ZRANGE', key, 0, trim_history)
    if #gone > 0 then
      redis.call('ZREMRANGEBYRANK', key, 0, trim_history)
      for start = 1, #gone, CHUNK do
        local last = math.min(start + CHUNK - 1, #gone)
        redis.call('HDEL', types_key, unpack(gone, start, last))
      end
    end
  end
end
-- Factor vectors: one MSET per chunk of ids (the blobs follow ARGV[1], users' first).
local blob = 2
local function set_all(prefix, ids)
  for start = 1, #ids, CHUNK do
    local args = {}
    for m = start, math.min(start + CHUNK - 1, #ids) do
      args[#args + 1] = prefix .. ids[m]
      args[#args + 1] = ARGV[blob]
      blob = blob + 1
    end
    redis.call('MSET', unpack(args))
  end
end
set_all(k.mfu, p.mfu)
set_all(k.mfi, p.mfi)
for start = 1, #p.mfchg, CHUNK do
  local args = {}
  for m = start, math.min(start + CHUNK - 1, #p.mfchg) do
    args[#args + 1] = p.changed_at
    args[#args + 1] = p.mfchg[m]
  end
  redis.call('ZADD', k.mfchg, unpack(args))
end
-- The claims are kept in their reception day's bucket; the buckets more than p.seen_kept
-- before the newest are dropped (UNLINK: freed off the main thread), so memory holds a
-- window of ids whatever the events' own times say.
if claimed then
  local top = redis.call('ZRANGE', k.seenbk, -1, -1)
  local newest = top[1] and tonumber(top[1]) or -math.huge
  for n = 3, #p.claims, 3 do newest = math.max(newest, p.claims[n]) end
  local oldest = newest - p.seen_kept
  local by_bucket = {}
  for n = 1, #p.claims, 3 do
    local number = p.claims[n + 2]
    if number >= oldest then
      local args = by_bucket[number] or {}
      args[#args + 1] = p.claims[n]
      args[#args + 1] = p.claims[n + 1]
      by_bucket[number] = args
    end
  end
  for number, args in pairs(by_bucket) do
    for start = 1, #args, 2 * CHUNK do
      redis.call('HSET', k.seen .. number,
                 unpack(args, start, math.min(start + 2 * CHUNK - 1, #args)))
    end
    redis.call('ZADD', k.seenbk, number, number)
  end
  for _, number in ipairs(redis.call('ZRANGEBYSCORE', k.seenbk, '-inf', '(' .. oldest)) do
    redis.call('UNLINK', k.seen .. number)
  end
  redis.call('ZREMRANGEBYSCORE', k.seenbk, '-inf', '(' .. oldest)
end
-- Feedback waiting for its impression (recommender.attribution): NX keeps a replayed
-- entry's time to give up.
if p.fbwait then
  for start = 1, #p.fbwait, 2 * CHUNK do
    redis.call('ZADD', k.fbwait, 'NX',
               unpack(p.fbwait, start, math.min(start + 2 * CHUNK - 1, #p.fbwait)))
  end
end
if p.duplicates and p.duplicates > 0 then
  redis.call('HINCRBY', k.stats, 'duplicates', p.duplicates)
end
for n = 1, #p.offsets, 2 do redis.call('HSET', KEYS[1], p.offsets[n], p.offsets[n + 1]) end
if p.events > 0 then redis.call('HINCRBY', k.stats, 'events_applied', p.events) end
for n = 1, #p.blend, 2 do
  redis.call('HINCRBY', k.stats, '@BLEND@' .. p.blend[n], p.blend[n + 1])
end
-- The tally forgets (recommender.blend.forget): at twice its memory, every count halves.
if #p.blend > 0 and p.blend_memory > 0 then
  local trials = tonumber(redis.call('HGET', k.stats, '@BLEND@trials') or '0')
  if trials >= 2 * p.blend_memory then
    local found = redis.call('HGETALL', k.stats)
    for n = 1, #found, 2 do
      if string.sub(found[n], 1, #'@BLEND@') == '@BLEND@' then
        redis.call('HSET', k.stats, found[n], math.floor(tonumber(found[n + 1]) / 2))
      end
    end
  end
end
return 1
""".replace("@HISTORY_LAYOUT@", _HISTORY_LAYOUT).replace("@NON_FINITE@", NON_FINITE).replace(
    "@BLEND@", BLEND_FIELD).replace("@MARKER@", HISTORY_MARKER)

# KEYS[1]: a key in the users' slot (routes the call on a cluster); ARGV: the history key
# prefix, a limit, then user ids. Returns JSON: per user, a flat [layout, item, score, ...]
# list of their positive history (time after 0), newest first: layout 1 when the key holds
# HISTORY_MARKER (scores ms * HISTORY_SPAN + mask), 0 for the layout before (scores ms).
WINDOWS = r"""
local limit = tonumber(ARGV[2])
local out = {}
for n = 3, #ARGV do
  local key = ARGV[1] .. ARGV[n]
  local marked = redis.call('ZSCORE', key, '@MARKER@')
  local rows = redis.call('ZRANGE', key, '(+inf', marked and '(@LAST_NOT_AFTER_0@' or '(0',
                          'BYSCORE', 'REV', 'LIMIT', 0, limit, 'WITHSCORES')
  table.insert(rows, 1, marked and 1 or 0)
  out[#out + 1] = rows
end
return cjson.encode(out)
""".replace("@MARKER@", HISTORY_MARKER).replace("@LAST_NOT_AFTER_0@", str(HISTORY_SPAN - 1))

# KEYS[1]: the PAUSE key of the users' slot (-1 while a snapshot copies the state: the
# caller retries); ARGV[1], ARGV[2]: the history and event-types key prefixes; then user
# ids. Rewrites those users' histories of the layout before into the scored one (what
# APPLY does on touch); returns how many it rewrote.
REWRITE_HISTORIES = r"""
if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
local CHUNK = 1000
@HISTORY_LAYOUT@
local rewritten = 0
for n = 3, #ARGV do
  local key = ARGV[1] .. ARGV[n]
  if redis.call('EXISTS', key) == 1 and not redis.call('ZSCORE', key, '@MARKER@') then
    upgrade(key, ARGV[2] .. ARGV[n])
    rewritten = rewritten + 1
  end
end
return rewritten
""".replace("@HISTORY_LAYOUT@", _HISTORY_LAYOUT).replace("@MARKER@", HISTORY_MARKER)

# KEYS[1]: a user's history; KEYS[2]: their event types (one slot). Returns, read at one
# point, the history's flat [item, score, ...] (the marker first in the layout that has
# one: see HISTORY_MARKER) and the hash's flat [item, types, ...].
INTERACTION_TYPES = r"""
return {redis.call('ZRANGE', KEYS[1], 0, -1, 'REV', 'WITHSCORES'), redis.call('HGETALL', KEYS[2])}
"""

# KEYS[1]: the user deletions ZSET; KEYS[2..]: the user documents; ARGV[1]: how many
# deletions to remember, then the user ids. Deletes the documents and records the users
# under the next deletion number (workers read it: see RedisStore.delete_again).
FORGET_USERS = r"""
local top = redis.call('ZREVRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local number = (tonumber(top[2]) or 0) + 1
if #KEYS > 1 then redis.call('DEL', unpack(KEYS, 2)) end
for n = 2, #ARGV do redis.call('ZADD', KEYS[1], number, ARGV[n]) end
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -tonumber(ARGV[1]) - 1)
return number
"""

# KEYS[1]: the overall popularity; KEYS[2]: the LANDMARKS hash of its slot; KEYS[3]: the
# PAUSE key (-1 while a snapshot copies the state: the caller retries). ARGV[1]: JSON
# {popcat (key prefix), lf_pop, lf_popcat (landmark field names), half_life, epoch,
# rescale_half_lives, items: [[item, [category, ...], [category left, ...]], ...]}.
# Each item's score in the categories it is in is set to its overall score, moved into the
# category key's frame by the write rule of recommender.decay.renormalise (the reference
# is the overall key's landmark), as InMemoryStore._recategorise does; it leaves the
# categories it left. Setting, not adding: a batch applied again writes the same state.
# Every new score is computed and checked before anything is written.
RECATEGORISE = r"""
if redis.call('EXISTS', KEYS[3]) == 1 then return -1 end
local p = cjson.decode(ARGV[1])
local here = redis.call('HGET', KEYS[2], p.lf_pop)
here = here and tonumber(here) or p.epoch
local ids = {}
for n, row in ipairs(p.items) do ids[n] = row[1] end
local overall = #ids > 0 and redis.call('ZMSCORE', KEYS[1], unpack(ids)) or {}
local plans, writes = {}, {}
for n, row in ipairs(p.items) do
  local score = overall[n] and tonumber(overall[n])
  for _, category in ipairs(score and row[2] or {}) do
    local plan = plans[category]
    if not plan then
      local key = p.popcat .. category
      local stored = redis.call('HGET', KEYS[2], p.lf_popcat .. category)
      local landmark = stored and tonumber(stored)
      local changed = not landmark
      if changed then
        landmark = (redis.call('EXISTS', key) == 1) and p.epoch or here
      end
      plan = {key = key, field = p.lf_popcat .. category, factor = 1}
      if here - landmark > p.rescale_half_lives * p.half_life then
        plan.scale = 2 ^ ((landmark - here) / p.half_life)
        landmark = here
        changed = true
      else
        plan.factor = 2 ^ ((here - landmark) / p.half_life)
      end
      plan.landmark = changed and landmark or nil
      plans[category] = plan
    end
    local value = score * plan.factor
    if value ~= value or value == math.huge or value == -math.huge then
      return redis.error_reply('@NON_FINITE@ ' .. plan.key .. ', member ' .. row[1] ..
                               ': ' .. tostring(value) .. ' is not finite; nothing of ' ..
                               'the batch was written')
    end
    writes[#writes + 1] = {plan.key, value, row[1]}
  end
end
for _, plan in pairs(plans) do
  if plan.scale then
    redis.call('ZUNIONSTORE', plan.key, 1, plan.key, 'WEIGHTS', plan.scale)
  end
  if plan.landmark then redis.call('HSET', KEYS[2], plan.field, plan.landmark) end
end
for _, row in ipairs(p.items) do
  for _, category in ipairs(row[3]) do redis.call('ZREM', p.popcat .. category, row[1]) end
end
for _, write in ipairs(writes) do redis.call('ZADD', write[1], write[2], write[3]) end
return 1
""".replace("@NON_FINITE@", NON_FINITE)

# KEYS[1]: the WITHDRAWN sorted set; KEYS[2]: its version (keys.WITHDRAWN_VERSION).
# ARGV[1]: a fresh version token; ARGV[2]: n; ARGV[3..2+2n]: time, item pairs to withdraw;
# the rest: items shown again. The token is written only when the set changed, so a catalog
# write that withdraws nothing new leaves the API processes' copies valid.
WITHDRAW = r"""
local changed = 0
local last = 2 + 2 * tonumber(ARGV[2])
for i = 3, last, 2 do
  changed = changed + redis.call('ZADD', KEYS[1], 'CH', ARGV[i], ARGV[i + 1])
end
for i = last + 1, #ARGV do
  changed = changed + redis.call('ZREM', KEYS[1], ARGV[i])
end
if changed > 0 then redis.call('SET', KEYS[2], ARGV[1]) end
return changed
"""

# KEYS[1]: the WITHDRAWN sorted set; KEYS[2]: its version. ARGV[1]: the most entries
# wanted. Returns {version or nil, size, {item, time, ...} or {} when there are more}:
# the times and the version they are, read at one point.
READ_WITHDRAWN = r"""
local size = redis.call('ZCARD', KEYS[1])
local version = redis.call('GET', KEYS[2])
if size > tonumber(ARGV[1]) then return {version, size, {}} end
return {version, size, redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')}
"""
