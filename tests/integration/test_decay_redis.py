"""Decayed state on Redis: simulated years at half-lives from a minute to a year, on one
Redis, in the cluster key layout on one Redis and on a three-node cluster, each step by
step equal to the in-memory store taking the same batches (``tests/contract_decay.py``);
the APPLY script's own guard against a NaN or an infinity it computes; and state written
before landmarks existed, upgraded in place."""

from __future__ import annotations

import math
import re
import uuid

import orjson
import pytest
import redis

from recommender.base import Interaction
from recommender.decay import LEGACY_EPOCH, ForwardDecay
from recommender.store import InMemoryStore, NonFiniteError
from streamrec.storage import keys
from streamrec.storage.client import connect
from streamrec.storage.state_store import RedisStore
from tests.contract_decay import (
    CATEGORIES,
    DAY,
    ITEMS,
    DecayContract,
    Direct,
    _assert_decayed_equal,
    engine,
)
from tests.factories import decayed_batches, update


def _prefix(tagged: bool) -> str:
    name = f"decay-{uuid.uuid4().hex[:8]}"
    return keys.tagged(name) if tagged else name


@pytest.fixture(params=["single", "sharded", "cluster"])
def store(request, services):
    """One Redis, the cluster key layout on one Redis, a three-node cluster."""
    if request.param == "cluster":
        client = connect(request.getfixturevalue("redis_cluster"), cluster=True)
    else:
        client = redis.Redis.from_url(services["redis_url"])
    yield RedisStore(client, prefix=_prefix(request.param != "single"))
    client.close()


class TestRedisDecay(DecayContract):
    def twin(self):
        return InMemoryStore()


@pytest.mark.parametrize("bad, shown", [(math.inf, "inf"), (-math.inf, "-inf")])
@pytest.mark.parametrize("reference", [100.0, 1e6])  # rescale factors 2**-100 and 0
def test_the_script_refuses_a_non_finite_score_it_computed(store, bad, shown, reference):
    """A stored infinity (as a clamped state of an older version could hold) rescaled
    gives an infinity, or NaN times 0: refused before the batch writes anything."""
    name = store.key(keys.POPULAR)
    store.client.zadd(name, {"old": bad, "fine": 1.0})  # no landmark: the legacy epoch's
    with pytest.raises(NonFiniteError, match=rf"{re.escape(name)}, member old: (-?nan|{shown})"):
        store.apply(update(reference=reference, half_life=1.0, epoch=0.0,
                           popularity={"new": 1.0}, history={"ann": {"new": 5.0}},
                           offsets={"events:0": 7}, events=1))
    assert store.client.zscore(name, "fine") == 1.0 and store.popular(5).landmark is None
    assert store.history("ann", 5) == [] and store.applied_offsets(["events:0"]) == {}


def _legacy(store: RedisStore, events: list[Interaction], half_life: float) -> None:
    """Write ``events`` as the version before landmarks stored them: every score in the
    frame of the fixed epoch, histories in milliseconds, no landmarks."""
    def frame(event: Interaction) -> float:
        return event.weight * 2.0 ** ((event.timestamp - LEGACY_EPOCH) / half_life)

    direct = Direct(half_life)
    pipe = store.client.pipeline(transaction=False)
    for event in events:
        direct.add(event)
        pipe.zincrby(store.key(keys.POPULAR), frame(event), event.item_id)
        pipe.zincrby(store.key(keys.ITEM_COUNT), frame(event), event.item_id)
        for category in CATEGORIES.get(event.item_id, ()):
            pipe.zincrby(store.key(keys.POPULAR_BY_CATEGORY, category), frame(event),
                         event.item_id)
        pipe.zadd(store.key(keys.HISTORY, event.user_id),
                  {event.item_id: round(event.timestamp * 1000)})
    for item, other, at, weight in direct.pairs:
        pipe.zincrby(store.key(keys.NEIGHBOURS, item),
                     weight * 2.0 ** ((at - LEGACY_EPOCH) / half_life), other)
    pipe.execute()


@pytest.mark.parametrize("half_life", [DAY, 7 * DAY])
def test_state_written_before_landmarks_is_upgraded_in_place(store, half_life):
    """Legacy state (no landmarks, frame of 2025-01-01) of the first half of a run, then
    this version's worker: reads equal the direct decayed counts throughout, and each key
    gets its landmark from its first write (the epoch, or the batch's time where that is
    more than 64 half-lives later: a rescale)."""
    batches = decayed_batches(1.0, 24.0, start=LEGACY_EPOCH + 30 * DAY)
    half = len(batches) // 2
    _legacy(store, [event for batch in batches[:half] for event in batch], half_life)
    decay = ForwardDecay(half_life)
    direct = Direct(half_life)
    built = engine(store, half_life)
    items = [f"i{n}" for n in range(ITEMS)]
    for number, batch in enumerate(batches):
        if number >= half:
            built.learn_many(batch)
        for event in batch:
            direct.add(event)
        if number < half - 1 or (number % 30 and number != half - 1):
            continue
        now = batch[-1].timestamp
        assert _assert_decayed_equal(dict(decay.values_at(store.popular(10), now)),
                                     direct.popularity(now), f"{number}: popular")
        counts = store.item_counts(items)
        _assert_decayed_equal({item: decay.value_at(value, counts.landmark, now)
                               for item, value in counts.scores.items()},
                              direct.counts(now), f"{number}: cnt")
        pairs = direct.neighbours(now)
        for item, listed in store.neighbours(items, 10).items():
            _assert_decayed_equal(dict(decay.values_at(listed, now)), pairs.get(item, {}),
                                  f"{number}: nbr {item}")
        if number == half - 1:
            assert store.popular(10).landmark is None  # legacy: read as of the epoch
    landmark = store.popular(10).landmark
    assert landmark is not None and (landmark > LEGACY_EPOCH) == (half_life == DAY)


def test_a_snapshot_from_before_landmarks_restores_as_legacy_state(store, tmp_path):
    """A format-2 snapshot (no landmarks) restores; landmarks the target namespace held
    before are dropped, so its keys are read in the legacy epoch's frame, as they were
    written."""
    from streamrec.storage.snapshots import restore_snapshot, save_snapshot

    half_life = 7 * DAY
    events = [event for batch in decayed_batches(0.2, 24.0, start=LEGACY_EPOCH + 40 * DAY)
              for event in batch]
    _legacy(store, events, half_life)
    path = tmp_path / "old.snapshot"
    save_snapshot(store.client, store.prefix, path)
    lines = path.read_bytes().split(b"\n", 1)
    header = orjson.loads(lines[0]) | {"format": "streamrec-snapshot-2"}
    path.write_bytes(orjson.dumps(header) + b"\n" + lines[1])

    target = RedisStore(store.client, _prefix(store.sharded))
    engine(target, half_life).learn_many(events[:5])  # landmarks of other data
    assert target.popular(5).landmark is not None
    restore_snapshot(store.client, path, target.prefix)
    now = events[-1].timestamp
    decay, direct = ForwardDecay(half_life), Direct(half_life)
    for event in events:
        direct.add(event)
    assert target.popular(10).landmark is None
    assert _assert_decayed_equal(dict(decay.values_at(target.popular(10), now)),
                                 direct.popularity(now), "restored popular")
    for item, listed in target.neighbours([f"i{n}" for n in range(ITEMS)], 10).items():
        assert listed.landmark is None
        _assert_decayed_equal(dict(decay.values_at(listed, now)),
                              direct.neighbours(now).get(item, {}), f"restored nbr {item}")
