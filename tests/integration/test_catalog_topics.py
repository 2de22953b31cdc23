"""The compacted items and users topics honour keys and tombstones alike, through a real
worker: a record counts only under its document's id (anything else is dead-lettered, so
nothing can outlive the tombstone of its id), and a tombstone deletes: an item, or a user
with their history, event types and factors in every model version."""

from __future__ import annotations

import asyncio
import time
import uuid

import orjson
import pytest
import redis
from aiokafka.errors import KafkaError

from streamrec.storage.model_versions import Version, Versions, state_prefix
from streamrec.storage.state_store import RedisStore
from tests.api.conftest import wait_for
from tests.factories import event, update, vector
from tests.integration.test_dead_letters import _dead_letters, _produce


def _send(services, *messages: tuple[str, bytes | None, bytes | None]) -> list[str]:
    """Produce each (topic, key, value); returns their ``topic/partition/offset``."""
    return asyncio.run(_produce(services["bootstrap"], list(messages)))


def test_catalog_records_count_only_under_their_id_and_tombstones_delete(
        services, isolated_worker):
    run = uuid.uuid4().hex[:6]
    topics = {kind: isolated_worker[f"{kind}_topic"] for kind in ("items", "users", "events")}
    prefix = isolated_worker["redis_prefix"]
    client = redis.Redis.from_url(services["redis_url"])
    store = RedisStore(client, prefix)
    tea, ann, bob = f"{run}-tea", f"{run}-ann", f"{run}-bob"

    # A model version beside the main state: the deletion reaches it too.
    Versions(client, prefix).register(Version("v2"))
    other = RedisStore(client, state_prefix(prefix, "v2"), catalog_prefix=prefix)
    other.apply(update(history={ann: {tea: 1.0}}, user_factors={ann: vector(1.0, 1.0)},
                       event_types={ann: {tea: ["view"]}}))

    item = orjson.dumps({"item_id": tea, "categories": ["drinks"]})
    _send(services, (topics["items"], tea.encode(), item),
          (topics["users"], ann.encode(), orjson.dumps({"user_id": ann})),
          (topics["users"], bob.encode(), orjson.dumps({"user_id": bob})),
          (topics["events"], ann.encode(), orjson.dumps(event(ann, tea))),
          (topics["events"], bob.encode(), orjson.dumps(event(bob, tea))))
    assert wait_for(lambda: store.events_applied() == 2 and store.get_user(bob), timeout=60)
    assert store.get_item(tea) == {**orjson.loads(item), "price": None, "available": True,
                                   "created_at": None, "expires_at": None, "properties": {}}
    assert store.user_factors([ann]) and store.interaction_types(ann)

    wrong = [  # (topic, key, value, what the reason names)
        (topics["items"], b"someone-else", orjson.dumps({"item_id": tea, "available": False}),
         "must equal item_id"),
        (topics["users"], bob.encode(), orjson.dumps({"user_id": ann}), "must equal user_id"),
        (topics["users"], b"ann\x00", None, "key: user_id"),
        (topics["events"], None, orjson.dumps(event(ann, tea)), "must equal user_id"),
    ]
    sources = _send(services, *[(topic, key, value) for topic, key, value, _ in wrong])
    dead = asyncio.run(_dead_letters(services["bootstrap"], isolated_worker["dead_letter_topic"],
                                     len(wrong)))
    assert set(dead) == set(sources)
    for (*_, mention), source in zip(wrong, sources, strict=True):
        assert mention in dead[source][2], (mention, dead[source])
    # The items and users topics are compacted (the worker sets it even on topics the
    # broker created first): the broker itself refuses a record without a key, which so
    # never reaches the worker (the worker's own check is in tests/unit/test_decode.py).
    for topic, document in ((topics["items"], {"item_id": tea, "available": False}),
                            (topics["users"], {"user_id": ann})):
        with pytest.raises(KafkaError):
            _send(services, (topic, None, orjson.dumps(document)))
    assert store.get_item(tea)["available"] is True  # nothing applied under another key
    assert store.get_user(bob) == {"user_id": bob, "properties": {}}
    assert store.events_applied() == 2

    # Tombstones keyed by the id delete, whatever was sent under other keys.
    _send(services, (topics["items"], tea.encode(), None), (topics["users"], ann.encode(), None))
    assert wait_for(lambda: store.get_user(ann) is None and store.get_item(tea) is None,
                    timeout=60)
    for version in (store, other):
        assert version.user_state(ann, 10) == ([], None)
        assert version.interaction_types(ann) == {}
    assert [key for key in client.scan_iter(match=f"{prefix}*:{ann}")] == []
    assert [i for i, _ in store.history(bob, 10)] == [tea] and store.user_factors([bob])
    assert store.screen([tea], now=time.time())[0] == {tea}  # withdrawn: never listed

    # A deleted user may come back: new events start a new history; a tombstone followed
    # by a document (in one batch or two) leaves the new document and no old state.
    renewed = {"user_id": bob, "properties": {"tier": "new"}}
    _send(services, (topics["events"], ann.encode(), orjson.dumps(event(ann, f"{run}-cup"))),
          (topics["users"], bob.encode(), None),
          (topics["users"], bob.encode(), orjson.dumps(renewed)))
    assert wait_for(lambda: store.history(ann, 10) and store.get_user(bob) == renewed,
                    timeout=60)
    assert [i for i, _ in store.history(ann, 10)] == [f"{run}-cup"]
    assert store.user_state(bob, 10) == ([], None)
    client.close()
