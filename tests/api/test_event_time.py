"""An event dated far in the future cannot outweigh real ones, whichever way it comes: through
POST /events and straight into Kafka it counts as if it happened when streamrec received it
(plus STREAMREC_MAX_EVENT_TIME_SKEW_SECONDS); `streamrec import` refuses the row."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import orjson
import redis
from aiokafka import AIOKafkaProducer

from schemas.models import MAX_TIMESTAMP
from streamrec.storage.state_store import RedisStore
from tests.api.conftest import popularity, wait_for
from tests.factories import event


async def _produce(bootstrap: str, topic: str, document: dict) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, orjson.dumps(document),
                                     key=document["user_id"].encode())
    finally:
        await producer.stop()


def test_a_future_event_never_outweighs_real_ones_on_any_path(
        client, api_settings, services, run, tmp_path):
    real, by_http, by_kafka, by_import = (f"{run}-{path}" for path in
                                          ("real", "http", "kafka", "import"))
    sent = time.time()
    assert client.post("/events", json=[event(f"{run}-u{n}", real) for n in range(2)]
                       ).status_code == 202
    assert client.post("/events", json=event(f"{run}-u2", by_http, timestamp=MAX_TIMESTAMP)
                       ).status_code == 202
    asyncio.run(_produce(services["bootstrap"], api_settings.events_topic,
                         event(f"{run}-u3", by_kafka, timestamp=MAX_TIMESTAMP)))

    rows = tmp_path / "events.jsonl"
    rows.write_text("\n".join(orjson.dumps(row).decode() for row in (
        event(f"{run}-u4", by_import, timestamp=sent - 60),
        event(f"{run}-u4", by_import, timestamp=MAX_TIMESTAMP))) + "\n")
    env = dict(os.environ, STREAMREC_KAFKA_BOOTSTRAP=services["bootstrap"],
               STREAMREC_REDIS_URL=services["redis_url"])
    imported = subprocess.run([sys.executable, "-m", "streamrec.cli", "import", str(rows)],
                              env=env, capture_output=True, text=True, timeout=120)

    everything = [real, by_http, by_kafka, by_import]
    scores = wait_for(lambda: len(found := popularity(services, api_settings, everything))
                      == len(everything) and found, timeout=60)
    assert scores, (popularity(services, api_settings, everything), imported.stdout)
    assert scores[real] > scores[by_http] and scores[real] > scores[by_kafka], scores
    assert scores[by_import] < scores[real], scores
    assert imported.returncode == 1, imported.stdout + imported.stderr
    assert "2 rows read, 1 sent" in imported.stdout
    assert "line 2: timestamp: 4102444800 is more than 300 s after now" in imported.stdout

    # The user's history holds the time it was received, plus the skew at most.
    store = RedisStore(redis.Redis.from_url(services["redis_url"]), api_settings.redis_prefix)
    latest = time.time() + api_settings.max_event_time_skew_seconds
    for user, item in ((f"{run}-u2", by_http), (f"{run}-u3", by_kafka)):
        ((stored, at),) = store.history(user, 10)
        assert stored == item and sent < at <= latest, (user, at - sent)
