"""Every list served at saturation reaches Kafka as an impression: a real ``streamrec api``
driven by many concurrent connections (k=10 and k=500, ranking over a seeded state), and
the impressions topic read back: the recommendation ids on it are exactly those of the 200
answers.

``STREAMREC_PRODUCE_TIMEOUT_SECONDS`` is cut to 0.3 s: the old producer, on the request
loop, lost the batches the loop did not send within that timeout (here a starved loop
for 0.3 s, as a busy 5 s did in production); this shared test machine cannot reach the
load that starved it for 5 s, but a timeout must not cost an impression either way."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import numpy as np
import orjson
import pytest
import redis
from aiokafka import AIOKafkaConsumer

from streamrec.kafka import ensure_topics
from streamrec.settings import Settings
from streamrec.storage.state_store import RedisStore
from tests.api.conftest import api_process
from tests.factories import update

CONNECTIONS = 32
SECONDS = 5.0
ITEMS = 2000
USERS = 200


def _seed(redis_url: str, prefix: str) -> None:
    """Enough state that ranking costs what it does in production: popular items,
    histories, neighbours and factors."""
    rng = np.random.default_rng(3)
    items = [f"i{n}" for n in range(ITEMS)]
    store = RedisStore(redis.Redis.from_url(redis_url), prefix)
    store.apply(update(
        popularity={item: float(rng.random()) for item in items},
        history={f"u{user}": {items[n]: 1_750_000_000.0 + n
                              for n in rng.choice(ITEMS, 20, replace=False)}
                 for user in range(USERS)},
        pairs={item: {items[n]: float(rng.random()) for n in rng.choice(ITEMS, 50)}
               for item in items},
        item_counts={item: 1.0 for item in items},
        item_factors={item: rng.normal(size=33).astype(np.float32) for item in items},
        user_factors={f"u{user}": rng.normal(size=33).astype(np.float32)
                      for user in range(USERS)}))


async def _saturate(url: str, k: int) -> tuple[set[str], int]:
    """``CONNECTIONS`` clients asking as fast as answers come for ``SECONDS``; returns the
    recommendation ids of the 200 answers and how many answers were something else."""
    served: set[str] = set()
    refused = 0
    stop_at = time.monotonic() + SECONDS
    limits = httpx.Limits(max_connections=CONNECTIONS)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        async def one_connection(number: int) -> None:
            nonlocal refused
            request = 0
            while time.monotonic() < stop_at:
                request += 1
                response = await client.get("/recommendations", params={
                    "user_id": f"u{(number * 7 + request) % USERS}", "k": k})
                if response.status_code == 200:
                    served.add(response.json()["recommendation_id"])
                else:
                    refused += 1

        await asyncio.gather(*(one_connection(n) for n in range(CONNECTIONS)))
    return served, refused


async def _impressions(bootstrap: str, topic: str, expected: int) -> set[str]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest")
    await consumer.start()
    found: set[str] = set()
    try:
        deadline = time.monotonic() + 60
        while len(found) < expected and time.monotonic() < deadline:
            for rows in (await consumer.getmany(timeout_ms=1000)).values():
                found.update(orjson.loads(row.value)["recommendation_id"] for row in rows)
    finally:
        await consumer.stop()
    return found


@pytest.mark.parametrize("k", [10, 500])
def test_every_list_served_at_saturation_reaches_kafka(services, worker_env, k):
    run = f"imp{uuid.uuid4().hex[:6]}"
    names = {"redis_prefix": run, "events_topic": f"{run}.events",
             "impressions_topic": f"{run}.impressions", "metrics_topic": f"{run}.metrics",
             "dead_letter_topic": f"{run}.dlq", "items_topic": f"{run}.items",
             "users_topic": f"{run}.users"}
    asyncio.run(ensure_topics(Settings(kafka_bootstrap=services["bootstrap"], **names)))
    _seed(services["redis_url"], run)
    with api_process(services, worker_env, name=f"api-{run}", produce_timeout_seconds="0.3",
                     **names) as (url, _, log_path):
        served, refused = asyncio.run(_saturate(url, k))
    # Stopped: whatever it had not sent was counted as dropped and logged.
    shown = asyncio.run(_impressions(services["bootstrap"], names["impressions_topic"],
                                     len(served)))
    print(f"k={k}: {len(served)} lists served ({len(served) / SECONDS:.0f}/s at "
          f"{CONNECTIONS} connections), {refused} refused, {len(shown)} impressions on "
          "the topic")
    assert served, f"nothing was served: {log_path}"
    assert shown == served, log_path.read_text(errors="replace")[-2000:]


def test_lists_are_shed_while_impressions_cannot_be_recorded(services, worker_env):
    """Kafka away: impressions wait, up to the buffer's bound; past it a list is not served
    (503 with Retry-After), so none is served that could not be recorded."""
    run = f"imp{uuid.uuid4().hex[:6]}"
    with api_process(services, worker_env, name=f"api-{run}", redis_prefix=run,
                     kafka_bootstrap="127.0.0.1:9", impression_buffer="2",
                     retry_after_seconds="3") as (url, _, _):
        answers = [httpx.get(f"{url}/recommendations", params={"user_id": "ann"}, timeout=30)
                   for _ in range(3)]
    assert [answer.status_code for answer in answers] == [200, 200, 503]
    assert answers[2].headers["retry-after"] == "3"
    assert "impression_buffer" in answers[2].json()["detail"]
