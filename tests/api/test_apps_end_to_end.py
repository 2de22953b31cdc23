"""An app's life over HTTP against real processes (uvicorn API, worker, Kafka, Redis): a
platform key creates it, its events arrive through its API route and straight into Kafka,
it gives a personalised list the default app knows nothing of, and once deleted nothing of
it is left in Redis. Prints the time from ``POST /admin/apps`` to the first personalised
list."""

from __future__ import annotations

import asyncio
import time

import httpx
import orjson
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from tests.api.conftest import api_process, wait_for
from tests.conftest import own_worker

PLATFORM = "platform-key-for-the-end-to-end-test"


async def _straight_into_kafka(bootstrap: str, topic: str, app: str, events: list[dict]
                               ) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for e in events:
            await producer.send_and_wait(topic, orjson.dumps(e), key=e["user_id"].encode(),
                                         headers=[("app", app.encode())])
    finally:
        await producer.stop()


async def _last_record(bootstrap: str, topic: str, key: bytes):
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        found, deadline = None, time.monotonic() + 20
        while time.monotonic() < deadline:
            rows = [r for batch in (await consumer.getmany(timeout_ms=500)).values()
                    for r in batch if r.key == key]
            if rows:
                found = rows[-1]
                if found.value is None:
                    return found
        return found
    finally:
        await consumer.stop()


def test_an_app_made_over_http_learns_serves_and_goes_without_a_trace(services, worker_env):
    with own_worker(services, worker_env) as names, api_process(
            services, worker_env, "api-apps-e2e", environment="production",
            api_keys=orjson.dumps({PLATFORM: "platform"}).decode(), **names) as (url, _, _):
        platform = {"X-API-Key": PLATFORM}
        http = httpx.Client(base_url=url, timeout=10)
        started = time.monotonic()
        made = http.post("/admin/apps", headers=platform,
                         json={"name": "shop", "settings": {"default_model": "cooccurrence"}})
        assert made.status_code == 201, made.text
        keys = made.json()["api_keys"]
        write, read = {"X-API-Key": keys["write"]}, {"X-API-Key": keys["read"]}
        # Through the app's route: shoppers who viewed a also viewed b.
        events = [{"user_id": f"s{n}", "item_id": item, "event_type": "view",
                   "timestamp": time.time()} for n in range(5) for item in ("a", "b")]
        events.append({"user_id": "carol", "item_id": "a", "event_type": "view",
                       "timestamp": time.time()})
        sent = http.post("/apps/shop/events", headers=write, json=events)
        assert sent.status_code == 202, sent.text
        admin = {"X-API-Key": keys["admin"]}
        put = http.put("/apps/shop/items/a", headers=admin,
                       json={"properties": {"title": "A"}})
        assert put.status_code == 202, put.text
        # Straight into Kafka, with the header: dave viewed c.
        asyncio.run(_straight_into_kafka(services["bootstrap"], names["events_topic"], "shop",
                                         [{"user_id": "dave", "item_id": "c",
                                           "event_type": "view", "timestamp": time.time()}]))

        def personalised():
            answer = http.get("/apps/shop/recommendations", headers=read,
                              params={"user_id": "carol", "k": 5})
            body = answer.json() if answer.status_code == 200 else {}
            return body if [i["item_id"] for i in body.get("items", [])][:1] == ["b"] else None

        first = wait_for(personalised, timeout=60, every=0.05)
        elapsed = time.monotonic() - started
        assert first, "the app gave carol no personalised list"
        assert first["model"] == "cooccurrence"
        print(f"\nPOST /admin/apps -> first personalised list: {elapsed:.2f} s")
        assert wait_for(lambda: http.get("/apps/shop/users/dave", headers={
            "X-API-Key": keys["admin"]}).status_code == 200, timeout=30)
        # The default app knows nothing of carol, a, b or dave, and shop's keys stop at it.
        assert http.get("/users/carol", headers=platform).status_code == 404
        assert http.get("/items/b/similar", headers=platform).json()["items"] == []
        assert http.get("/recommendations", headers=read,
                        params={"user_id": "carol"}).status_code == 403

        assert wait_for(lambda: http.get("/apps/shop/items/a", headers=read
                                         ).status_code == 200, timeout=30)
        gone = http.delete("/admin/apps/shop", headers=platform)
        assert gone.status_code == 200, gone.text
        assert gone.json()["redis_keys_removed"] > 0
        assert gone.json()["catalog_records"] == "1 tombstoned"
        # The item's record on the compacted topic is followed by its tombstone.
        last = asyncio.run(_last_record(services["bootstrap"], names["items_topic"], b"shop/a"))
        assert last is not None and last.value is None
        assert dict(last.headers) == {"app": b"shop"}
        assert http.get("/apps/shop/recommendations", headers=platform,
                        params={"user_id": "carol"}).status_code == 404
        assert http.get("/apps/shop/popular", headers=read).status_code == 401
        # Records still arriving for it are dropped: nothing of shop comes back.
        asyncio.run(_straight_into_kafka(services["bootstrap"], names["events_topic"], "shop",
                                         [{"user_id": "erin", "item_id": "a",
                                           "event_type": "view", "timestamp": time.time()}]))
        client = redis.Redis.from_url(services["redis_url"])
        prefix = names["redis_prefix"]

        def left() -> list[bytes]:
            return [*client.scan_iter(match=f"{prefix}@shop:*", count=1000),
                    *client.scan_iter(match=f"{prefix}@shop.*", count=1000)]

        time.sleep(4)  # the worker's next batches, and the API's second sweep
        assert left() == []
