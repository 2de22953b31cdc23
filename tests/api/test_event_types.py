"""Event types configured once for every role, over the session's real Kafka, Redis and
worker: a type added through the admin API is accepted by the API and applied by the
worker with its weight, never dead-lettered; one removed is refused again."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, TopicPartition

from tests.api.conftest import popularity, wait_for


async def _dead_letter_keys(bootstrap: str, topic: str) -> set[bytes]:
    """The keys of every record on the dead-letter topic so far."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        await consumer.topics()  # fetches the metadata
        partitions = [TopicPartition(topic, p)
                      for p in consumer.partitions_for_topic(topic) or ()]
        if not partitions:
            return set()  # nothing was ever dead-lettered
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        keys: set[bytes] = set()
        while any(await consumer.position(p) < ends[p] for p in partitions):
            for rows in (await consumer.getmany(timeout_ms=1000)).values():
                keys.update(row.key for row in rows)
        return keys
    finally:
        await consumer.stop()


def test_a_type_added_once_is_accepted_and_applied_with_its_weight(client, run, api_settings,
                                                                   services):
    like = f"like-{run}"
    event = {"user_id": f"{run}-ann", "item_id": f"{run}-liked", "event_type": like}
    refused = client.post("/events", json=event)
    assert refused.status_code == 422 and repr(like) in refused.text

    table = client.put(f"/admin/event-types/{like}", json={"weight": 3.0})
    assert table.status_code == 200 and table.json()[like] == 3.0
    assert client.get("/admin/event-types").json()[like] == 3.0
    viewed = {"user_id": f"{run}-bob", "item_id": f"{run}-viewed", "event_type": "view"}
    assert client.post("/events", json=[event, viewed]).status_code == 202

    names = [f"{run}-liked", f"{run}-viewed"]
    scores = wait_for(lambda: len(found := popularity(services, api_settings, names)) == 2
                      and found, timeout=30)
    assert scores, "the worker did not apply the new type"
    # Both decay alike within seconds of a one-day half-life: the ratio is the weights'.
    ratio = scores[names[0]] / scores[names[1]]
    assert abs(ratio - 3.0) < 0.01, ratio
    dead = asyncio.run(_dead_letter_keys(services["bootstrap"], api_settings.dead_letter_topic))
    assert f"{run}-ann".encode() not in dead

    removed = client.delete(f"/admin/event-types/{like}")
    assert removed.status_code == 200 and like not in removed.json()
    assert client.post("/events", json=event).status_code == 422
    assert client.delete(f"/admin/event-types/{like}").status_code == 404


def test_event_type_changes_are_checked(client):
    assert client.put("/admin/event-types/bad name", json={"weight": 1}).status_code == 422
    answer = client.put("/admin/event-types/fine", json={"weight": -1})
    assert answer.status_code == 422 and "weight" in answer.text
    assert client.put("/admin/event-types/fine", json={"weight": 1, "x": 1}).status_code == 422
