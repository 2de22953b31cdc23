"""The Redis implementation of :class:`recommender.feedback.FeedbackStore`.

Counting once is done in Redis itself: a Lua script sets the marker with NX and counts
only when it was absent, so replayed or duplicated messages never count twice.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson
import redis
from pydantic import ValidationError

from recommender.allocation import learning, state_meaning
from recommender.attribution import Credit, Impression
from recommender.contextual import DEFAULT_CAP
from recommender.feedback import Counters
from schemas.impression import ImpressionMessage
from schemas.models import describe
from streamrec.storage import keys
from streamrec.storage.client import is_cluster

log = logging.getLogger(__name__)

SEPARATOR = "|"

# Adds (field, amount) pairs from ARGV[first] on to a bandit state hash, then halves every
# field of the variant (prefix 'variant|') once its count field ('variant|n') reaches the
# cap: the state stays bounded however long the placement runs (recommender.contextual).
_LEARN = """
local function learn(key, cap, variant, first)
  if first > #ARGV then return end
  for n = first, #ARGV, 2 do
    redis.call('HINCRBYFLOAT', key, ARGV[n], ARGV[n + 1])
  end
  redis.call('HINCRBY', key, 'changes', 1)
  local prefix = variant .. '|'
  local count = tonumber(redis.call('HGET', key, prefix .. 'n') or '0')
  if cap ~= '' and count and count >= tonumber(cap) then
    local fields = redis.call('HGETALL', key)
    for n = 1, #fields, 2 do
      if string.sub(fields[n], 1, #prefix) == prefix then
        redis.call('HSET', key, fields[n], string.format('%.17g', tonumber(fields[n + 1]) / 2))
      end
    end
  end
end
"""

# KEYS[3]: the placement's bandit state; ARGV[6]: its cap, ARGV[7..]: what the impression
# adds to it (field, amount, ...), applied with the count, once.
_RECORD_IMPRESSION = _LEARN + """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  if ARGV[5] == '1' then
    redis.call('HINCRBY', KEYS[2], ARGV[3] .. '|impressions', 1)
    redis.call('HINCRBY', KEYS[2], ARGV[3] .. '|items_shown', ARGV[4])
    learn(KEYS[3], ARGV[6], ARGV[3], 7)
  end
  return 1
end
return 0
"""

# KEYS[4], KEYS[5], KEYS[6]: the waiting feedback, the system's and the placement's
# outcomes; ARGV[5]: the waiting entry the credit settles ('' for none): taken out first, or
# nothing is counted (-1: settled before). KEYS[7]: the placement's bandit state, ARGV[6..]:
# what the list's first reward adds to it.
_CREDIT = _LEARN + """
local settles = ARGV[5] ~= ''
if settles and redis.call('ZREM', KEYS[4], ARGV[5]) == 0 then
  return -1
end
if not redis.call('SET', KEYS[1], 1, 'NX', 'PX', ARGV[1]) then
  if settles then
    redis.call('HINCRBY', KEYS[5], 'duplicate', 1)
    redis.call('HINCRBY', KEYS[6], 'duplicate', 1)
  end
  return 0
end
local prefix = ARGV[2] .. '|' .. ARGV[3]
redis.call('HINCRBY', KEYS[3], prefix, 1)
redis.call('HINCRBY', KEYS[3], prefix .. '@' .. ARGV[4], 1)
if redis.call('SET', KEYS[2], 1, 'NX', 'PX', ARGV[1]) then
  redis.call('HINCRBY', KEYS[3], ARGV[2] .. '|lists_rewarded', 1)
  learn(KEYS[7], '', ARGV[2], 6)
end
if settles then
  redis.call('HINCRBY', KEYS[5], 'credited', 1)
  redis.call('HINCRBY', KEYS[6], 'credited', 1)
end
return 1
"""

# KEYS[1], KEYS[2]: the waiting feedback and the system's outcomes, then the placements'
# outcomes; ARGV: entry, reason, index into KEYS of its placement's outcomes (0: none), ...
# Each entry taken out of the waiting ones counts its reason; one taken before counts nothing.
_SETTLE = """
local counted = {}
for n = 1, #ARGV, 3 do
  if redis.call('ZREM', KEYS[1], ARGV[n]) == 1 then
    redis.call('HINCRBY', KEYS[2], ARGV[n + 1], 1)
    local placement = tonumber(ARGV[n + 2])
    if placement > 0 then redis.call('HINCRBY', KEYS[placement], ARGV[n + 1], 1) end
    counted[#counted + 1] = ARGV[n + 1]
  end
end
return counted
"""


class RedisFeedback:
    def __init__(self, client: redis.Redis, prefix: str = "sr", cap: float = DEFAULT_CAP
                 ) -> None:
        self.client = client
        self.prefix = prefix
        self.cap = cap  # bandit state: updates per variant before its state is halved
        self._record = client.register_script(_RECORD_IMPRESSION)
        self._credit = client.register_script(_CREDIT)
        self._settle = client.register_script(_SETTLE)
        self.cluster = is_cluster(client)

    def key(self, kind: str, *parts: str) -> str:
        return keys.key(self.prefix, kind, *parts)

    def _pipelined(self, pipe, script, keys: list[str], args: list) -> None:
        if self.cluster:  # redis-py's cluster pipeline refuses Script; EVAL routes by key
            pipe.execute_command("EVAL", script.script, len(keys), *keys, *args)
        else:
            script(keys=keys, args=args, client=pipe)

    def record_impressions(self, impressions: Sequence[Impression], ttl: float) -> int:
        if not impressions:
            return 0
        pipe = self.client.pipeline(transaction=False)
        milliseconds = max(1, int(ttl * 1000))
        for impression in impressions:
            self._pipelined(
                pipe, self._record,
                keys=[self.key(keys.IMPRESSION, impression.recommendation_id),
                      self.key(keys.VARIANT_COUNTERS, impression.placement),
                      self.key(keys.BANDIT_STATE, impression.placement)],
                args=[orjson.dumps(impression.to_dict()), milliseconds, impression.variant,
                      len(impression.items), int(impression.allocated), repr(self.cap),
                      *_flat(learning(impression.variant, impression.decision, False))],
            )
        return sum(pipe.execute())

    def impressions(self, recommendation_ids: Iterable[str]) -> dict[str, Impression]:
        ids = list(recommendation_ids)
        if not ids:
            return {}
        raw = self.client.mget([self.key(keys.IMPRESSION, r) for r in ids])
        found = {}
        for rid, document in zip(ids, raw, strict=True):
            if document is None:
                continue
            try:  # validated on the way in; again here, whoever wrote to Redis since
                message = ImpressionMessage.model_validate_json(document)
            except ValidationError as error:
                log.warning("stored impression %r is unreadable and is ignored: %s", rid,
                            describe(error))
                continue
            found[rid] = Impression.from_dict(message.model_dump())
        return found

    def credit(self, credits: Sequence[Credit], ttl: float,
               settled: Sequence[str] | None = None) -> list[bool | None]:
        if not credits:
            return []
        pipe = self.client.pipeline(transaction=False)
        milliseconds = max(1, int(ttl * 1000))
        for n, credit in enumerate(credits):
            self._pipelined(
                pipe, self._credit,
                keys=[self.key(keys.CREDITED, credit.recommendation_id, credit.event_type,
                               credit.item_id),
                      self.key(keys.REWARDED_LIST, credit.recommendation_id),
                      self.key(keys.VARIANT_COUNTERS, credit.placement),
                      self.key(keys.FEEDBACK_WAITING), self.key(keys.OUTCOMES),
                      self.key(keys.OUTCOMES, credit.placement),
                      self.key(keys.BANDIT_STATE, credit.placement)],
                args=[milliseconds, credit.variant, credit.event_type, credit.position,
                      "" if settled is None else settled[n],
                      *_flat(learning(credit.variant, credit.decision, True))],
            )
        return [None if result < 0 else bool(result) for result in pipe.execute()]

    def wait(self, entries: Sequence[tuple[str, float]]) -> None:
        if entries:
            self.client.zadd(self.key(keys.FEEDBACK_WAITING),
                             {entry: give_up for entry, give_up in entries}, nx=True)

    def waiting(self) -> list[tuple[str, float]]:
        return [(entry.decode(), give_up) for entry, give_up in self.client.zrange(
            self.key(keys.FEEDBACK_WAITING), 0, -1, withscores=True)]

    def settle(self, outcomes: Sequence[tuple[str, str, str | None]]) -> dict[str, int]:
        counted: dict[str, int] = {}
        for start in range(0, len(outcomes), 1000):
            part = outcomes[start:start + 1000]
            names = [self.key(keys.FEEDBACK_WAITING), self.key(keys.OUTCOMES)]
            index: dict[str, int] = {}
            args: list[str | int] = []
            for entry, reason, placement in part:
                if placement is not None and placement not in index:
                    names.append(self.key(keys.OUTCOMES, placement))
                    index[placement] = len(names)  # Lua's KEYS count from 1
                args += [entry, reason, 0 if placement is None else index[placement]]
            reasons = self._settle(keys=names, args=args)
            for reason in reasons:
                counted[reason.decode()] = counted.get(reason.decode(), 0) + 1
        return counted

    def count_outcomes(self, outcomes: Mapping[str, int],
                       by_placement: Mapping[str, Mapping[str, int]] | None = None) -> None:
        pipe = self.client.pipeline(transaction=False)
        for reason, count in outcomes.items():
            pipe.hincrby(self.key(keys.OUTCOMES), reason, count)
        for placement, counts in (by_placement or {}).items():
            for reason, count in counts.items():
                pipe.hincrby(self.key(keys.OUTCOMES, placement), reason, count)
        if len(pipe):
            pipe.execute()

    def outcomes(self, placement: str | None = None) -> dict[str, int]:
        name = self.key(keys.OUTCOMES) if placement is None else self.key(keys.OUTCOMES,
                                                                          placement)
        return {k.decode(): int(v) for k, v in self.client.hgetall(name).items()}

    def variant_counters(self, placement: str) -> Counters:
        counters: Counters = {}
        raw = self.client.hgetall(self.key(keys.VARIANT_COUNTERS, placement))
        for field, value in raw.items():
            variant, _, counter = field.decode().rpartition(SEPARATOR)
            counters.setdefault(variant, {})[counter] = int(value)
        return counters

    def bandit_state(self, placement: str) -> dict[str, float]:
        raw = self.client.hgetall(self.key(keys.BANDIT_STATE, placement))
        return {field.decode(): float(value) for field, value in raw.items()}

    def bandit_state_changes(self, placement: str) -> int:
        return int(self.client.hget(self.key(keys.BANDIT_STATE, placement), "changes") or 0)

    def placements(self) -> dict[str, dict[str, Any]]:
        raw = self.client.hgetall(self.key(keys.PLACEMENTS))
        return {name.decode(): orjson.loads(doc) for name, doc in raw.items()}

    def put_placement(self, config: Mapping[str, Any], author: str, at: float
                      ) -> dict[str, Any]:
        name = config["name"]
        table = self.key(keys.PLACEMENTS)
        stored: dict[str, Any] = {}

        def write(pipe) -> None:
            current = pipe.hget(table, name)
            previous = orjson.loads(current) if current else None
            version = (previous["version"] if previous else 0) + 1
            stored.clear()
            stored.update({**config, "version": version})
            change = {"version": version, "author": author, "at": at, "config": stored}
            pipe.multi()
            if state_meaning(previous) != state_meaning(config):
                pipe.delete(self.key(keys.BANDIT_STATE, name))
            pipe.hset(table, name, orjson.dumps(stored))
            pipe.lpush(self.key(keys.PLACEMENT_LOG, name), orjson.dumps(change))

        self.client.transaction(write, table)
        return dict(stored)

    def placement_log(self, name: str, limit: int = 100) -> list[dict[str, Any]]:
        raw = self.client.lrange(self.key(keys.PLACEMENT_LOG, name), 0, limit - 1)
        return [orjson.loads(entry) for entry in raw]

    def create_placement(self, config: Mapping[str, Any], author: str, at: float) -> bool:
        table = self.key(keys.PLACEMENTS)
        created = False

        def write(pipe) -> None:
            nonlocal created
            created = not pipe.hexists(table, config["name"])
            if created:
                stored = {**config, "version": 1}
                change = {"version": 1, "author": author, "at": at, "config": stored}
                pipe.multi()
                pipe.hset(table, config["name"], orjson.dumps(stored))
                pipe.lpush(self.key(keys.PLACEMENT_LOG, config["name"]), orjson.dumps(change))

        self.client.transaction(write, table)
        return created

    def delete_placement(self, name: str) -> dict[str, int]:
        owned = [self.key(keys.PLACEMENT_LOG, name), self.key(keys.VARIANT_COUNTERS, name),
                 self.key(keys.OUTCOMES, name), self.key(keys.BANDIT_STATE, name)]
        pipe = self.client.pipeline(transaction=True)
        pipe.hdel(self.key(keys.PLACEMENTS), name)
        pipe.llen(owned[0])
        pipe.hlen(owned[1])
        pipe.hlen(owned[2])
        pipe.delete(*owned)
        configuration, log_entries, counters, outcomes, _ = pipe.execute()
        return {"configuration": configuration, "log_entries": log_entries,
                "variant_counters": counters, "outcomes": outcomes}


def _flat(increments: list[tuple[str, float]]) -> list[str]:
    return [part for name, amount in increments for part in (name, repr(amount))]
