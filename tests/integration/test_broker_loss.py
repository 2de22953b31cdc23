"""A broker lost under load: a three-node KRaft cluster, topics with replication factor 3 and
``min.insync.replicas=2``, the API producing with acks=all. One broker is killed (SIGKILL)
while a steady client posts events and another reads lists; it is started again and
catches up. Every event that got a 202 is in the events topic exactly once and applied
exactly once; lists keep being served. Prints the figures.

"Applied exactly once" is counted exactly without event ids: each event has a user of its
own, the worker adds every applied record to ``events_applied`` in the same atomic Redis
call that records the partition offsets (a record is never applied twice), so once the
worker has caught up, ``events_applied`` equals the records in the topic, and the topic
holds each accepted event once.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
import time
import urllib.error
import urllib.request
import uuid

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from streamrec.local.services import LocalKafkaCluster, LocalRedis
from streamrec.settings import Settings
from streamrec.wiring import Wiring
from tests.api.conftest import api_process, wait_for
from tests.conftest import own_worker

pytestmark = pytest.mark.integration

PARTITIONS = 4
WRITERS = 4  # steady clients posting events, each one request at a time


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    base = tmp_path_factory.mktemp("broker-loss")
    redis_server = LocalRedis(base / "redis")
    kafka = LocalKafkaCluster(base / "kafka", size=3)
    try:
        redis_server.start()
        kafka.start()
        env = {key: value for key, value in os.environ.items()
               if not key.startswith("STREAMREC_")}
        env |= {
            "STREAMREC_KAFKA_BOOTSTRAP": kafka.bootstrap,
            "STREAMREC_REDIS_URL": redis_server.url,
            "STREAMREC_TOPIC_PARTITIONS": str(PARTITIONS),
            "STREAMREC_TOPIC_REPLICATION": "3",
            "STREAMREC_TOPIC_MIN_INSYNC_REPLICAS": "2",
            "STREAMREC_DATA_DIR": str(base / "worker"),
        }
        yield kafka, {"dir": base}, env
    finally:
        kafka.stop()
        redis_server.stop()


class Client(threading.Thread):
    """Calls ``request`` back to back until stopped; keeps the time of every success."""

    def __init__(self, request) -> None:
        super().__init__(daemon=True)
        self.request = request
        self.successes: list[float] = []
        self.failures = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.stopping.is_set():
            if self.request(n):
                self.successes.append(time.monotonic())
            else:
                self.failures += 1
                time.sleep(0.05)
            n += 1



def longest_gap(clients: list[Client], since: float) -> float:
    """The longest time after ``since`` in which none of ``clients`` succeeded."""
    times = [since, *sorted(t for client in clients for t in client.successes if t >= since)]
    return max(b - a for a, b in zip(times, times[1:], strict=False))


def call(url: str, body: dict | None = None) -> int:
    data = None if body is None else orjson.dumps(body)
    request = urllib.request.Request(url, data=data,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


async def _describe(settings: Settings, timeout: float = 60.0
                    ) -> tuple[dict[int, tuple[int, int, int]], str]:
    """Per partition of the events topic: (leader, replicas, in-sync replicas); and the
    topic's min.insync.replicas. A broker that has not learned of the topic yet answers
    the configs with an error and no entries: asked again until every broker has."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    deadline = time.monotonic() + timeout
    try:
        while True:
            (described,) = await admin.describe_topics([settings.events_topic])
            (configs,) = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, settings.events_topic)])
            error, message, *_, entries = configs.resources[0]
            found = {entry[0]: entry[1] for entry in entries}
            if not error and "min.insync.replicas" in found:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"describe_configs of {settings.events_topic}: error "
                                     f"{error} ({message}), entries {sorted(found)}")
            await asyncio.sleep(0.5)
    finally:
        await admin.close()
    return ({p["partition"]: (p["leader"], len(p["replicas"]), len(p["isr"]))
             for p in described["partitions"]}, found["min.insync.replicas"])


async def _read_users(settings: Settings) -> list[str]:
    """The user of every record in the events topic, from its start to its end now."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        partitions = [TopicPartition(settings.events_topic, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        users: list[str] = []
        async def behind() -> bool:
            return any([await consumer.position(tp) < ends[tp] for tp in partitions])

        while await behind():
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                users += [orjson.loads(record.value)["user_id"] for record in records]
        return users
    finally:
        await consumer.stop()


def test_a_broker_lost_under_load_loses_and_doubles_nothing(cluster, capsys):
    kafka, services, env = cluster
    with own_worker(services, env) as names, \
            api_process(services, env, "api", **names) as (url, _, api_log):
        settings = Settings(**{"kafka_bootstrap": kafka.bootstrap, "redis_url": env[
            "STREAMREC_REDIS_URL"], **names})
        store = Wiring.connect(settings, "test").store()
        assert wait_for(lambda: call(f"{url}/readyz") == 200, timeout=90)
        leaders, min_insync = asyncio.run(_describe(settings))
        assert min_insync == "2"
        assert {replicas for _, replicas, _ in leaders.values()} == {3}

        run = uuid.uuid4().hex[:6]
        accepted: list[str] = []

        def post(writer: int, n: int) -> bool:
            user = f"{run}-{writer}-{n}"
            ok = call(f"{url}/events", {"user_id": user, "item_id": f"item-{n % 50}",
                                        "event_type": "view"}) == 202
            if ok:
                accepted.append(user)
            return ok

        writers = [Client(functools.partial(post, w)) for w in range(WRITERS)]
        reader = Client(lambda n: call(f"{url}/recommendations?user_id={run}-0-{n}&k=10")
                        == 200)
        for client in (*writers, reader):
            client.start()
        started = time.monotonic()
        time.sleep(6)
        victim = kafka.nodes[leaders[0][0] - 1]  # the leader of partition 0
        killed = time.monotonic()
        victim.kill()
        time.sleep(10)
        victim.launch()
        victim.wait_ready(120)
        restarted = time.monotonic()

        def caught_up() -> bool:
            partitions, _ = asyncio.run(_describe(settings))
            return all(isr == 3 for _, _, isr in partitions.values())

        assert wait_for(caught_up, timeout=120, every=1.0), "the broker never rejoined the ISR"
        caught = time.monotonic()
        time.sleep(3)
        for client in (*writers, reader):
            client.stopping.set()
        for client in (*writers, reader):
            client.join(30)

        users = asyncio.run(_read_users(settings))
        assert wait_for(lambda: store.events_applied() >= len(users), timeout=120)
        time.sleep(2)  # nothing more arrives: a double application would show now
        applied = store.events_applied()
        in_topic = {user: users.count(user) for user in set(users)} if len(users) < 50_000 \
            else {}
        lost = [user for user in accepted if user not in in_topic]
        doubled = [user for user, count in in_topic.items() if count > 1]
        missing_state = [user for user in accepted if not store.history(user, 1)]
        with capsys.disabled():
            print(f"\nbroker loss: {len(accepted)} events accepted (202), "
                  f"{sum(w.failures for w in writers)} refused (503), {len(users)} in the "
                  f"topic, {applied} applied; longest gap between 202s after the kill "
                  f"{longest_gap(writers, killed):.1f} s, between served lists "
                  f"{longest_gap([reader], killed):.1f} s ({reader.failures} reads "
                  f"failed); broker back {restarted - killed:.1f} s after the kill, in sync "
                  f"{caught - restarted:.1f} s later; {len(accepted) / (caught + 3 - started):.0f} "
                  "events/s accepted over the run")
        assert not lost, f"{len(lost)} accepted events are not in the topic"
        assert not doubled, f"{len(doubled)} events are in the topic twice"
        assert applied == len(users), "applied differs from the records in the topic"
        assert not missing_state, f"{len(missing_state)} accepted events are not in the state"
        assert len(accepted) > 100 and len(reader.successes) > 100
        assert api_log.exists()
