"""The learning process's calls (streams.learner), made in this process against a real
Redis: a clean part is read and learned in one call and its records' freshness lands in
the histogram; a part with a reject waits for the worker to dead-letter it first; a
failure while recording freshness leaves the applied part applied, once."""

from __future__ import annotations

import time
import uuid

import orjson
import pytest

from streamrec.settings import Settings
from streamrec.storage import keys
from streamrec.wiring import Wiring
from streams import learner
from streams.decode import LOG_APPEND_TIME, PlainRecord, position
from tests.factories import event


@pytest.fixture
def wiring(services):
    run = f"learn{uuid.uuid4().hex[:8]}"
    settings = Settings(redis_url=services["redis_url"], kafka_bootstrap=services["bootstrap"],
                        redis_prefix=run, worker_id=run, events_topic=f"{run}.events")
    # What the learning process's set-up builds (learner._serve, which also ties the
    # process's life to its parent's: not this one's), then the apps registered now, as
    # the worker's first split reads them.
    learner.build(settings).refresh()
    return Wiring.connect(settings, "worker")


def _records(topic: str, values: list[bytes], sent: float) -> list[PlainRecord]:
    return [PlainRecord(topic, 0, offset, b"ann", value, sent, LOG_APPEND_TIME)
            for offset, value in enumerate(values)]


def _histogram_count(wiring: Wiring) -> int:
    return wiring.ops().read().freshness_buckets[-1][1]


def test_a_clean_part_is_read_and_learned_in_one_call_with_its_freshness(wiring):
    now = time.time()
    values = [orjson.dumps(event(item=f"tea-{n}", timestamp=now)) for n in range(5)]
    records = _records(wiring.settings.events_topic, values, now - 0.25)

    count, rejects, learned = learner.read_and_learn("default", None, records, {}, {}, True)

    assert (count, rejects) == (5, [])
    assert learned == (0, 5, False)  # none repeated, 5 interactions, no feedback waits
    assert wiring.store().events_applied() == 5
    assert _histogram_count(wiring) == 5
    assert all(250 <= sample < 60_000 for sample in wiring.ops().read().freshness_samples)
    assert learner._pending == {}

    # Read again (a batch redelivered after a crash): nothing is left to apply.
    assert learner.read_and_learn("default", None, records, {}, {}, True) == (0, [], None)
    assert wiring.store().events_applied() == 5 and _histogram_count(wiring) == 5


def test_a_part_with_a_reject_is_learned_only_when_the_worker_asks(wiring):
    now = time.time()
    values = [orjson.dumps(event(timestamp=now)), b"{not json",
              orjson.dumps(event(item="cup", timestamp=now))]
    records = _records(wiring.settings.events_topic, values, now)

    count, rejects, learned = learner.read_and_learn("default", None, records, {}, {}, True)

    assert count == 3 and learned is None
    assert [at for at, _ in rejects] == [position(records[1])]
    assert wiring.store().events_applied() == 0  # the reject is dead-lettered first
    assert learner.learn("default") == (0, 2, False)
    assert wiring.store().events_applied() == 2 and _histogram_count(wiring) == 3


def test_redis_failing_while_freshness_is_recorded_leaves_the_part_applied_once(
        wiring, caplog):
    # A real Redis error: the freshness samples' list is a string, so LPUSH fails
    # (WRONGTYPE) after the part and its offsets were written.
    samples = keys.key(wiring.ops().prefix, keys.FRESHNESS)
    wiring.store().client.set(samples, "not a list")
    now = time.time()
    records = _records(wiring.settings.events_topic,
                       [orjson.dumps(event(timestamp=now))], now)

    assert learner.read_and_learn("default", None, records, {}, {}, True)[2] == (0, 1, False)
    assert wiring.store().events_applied() == 1
    assert "WRONGTYPE" in caplog.text
    assert "the freshness of 1 records not recorded" in caplog.text
    assert learner.read_and_learn("default", None, records, {}, {}, True) == (0, [], None)
    assert wiring.store().events_applied() == 1
