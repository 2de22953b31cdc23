"""A batch the events agent fails on for a reason nobody handles (a bug, a refused write)
stops the worker, so that it starts again from the last committed offset, rather than
letting Faust restart the agent in place. A restarted agent takes the records after the
failed batch; once they are applied, the applied offsets in Redis stand past the failed
batch and a later replay skips it: its events were lost. Against the real worker, Kafka
and Redis, with a fault injected into the worker's split of a batch."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid

import pytest

from streamrec.kafka import ensure_topics
from streamrec.settings import Settings
from streamrec.sim.simulator import Simulation
from streamrec.storage.client import connect
from streamrec.storage.state_store import RedisStore
from tests.factories import produce_events

EVENTS = 6_000

# The worker, with AppParts.split raising on its third batch of the events topic (in the
# agent's own loop, which takes and splits batches) ...
FAULTY_SPLIT = """
import sys
from streams import app_parts
split, calls = app_parts.AppParts.split, []
def faulty(self, records, field=False):
    if field:
        calls.append(len(records))
        if len(calls) == 3:
            raise RuntimeError("injected fault in the third batch")
    return split(self, records, field)
app_parts.AppParts.split = faulty
from streamrec.cli import main
main(["worker", "--log-level", "warning"])
"""

# ... or with AppParts.may_go raising after its third batch was learned (in the loop that
# learns the batches the agent queued, while the agent may wait for the next batch).
FAULTY_LEARNING = """
import sys
from streams import app_parts
may_go, calls = app_parts.AppParts.may_go, []
def faulty(self, name):
    calls.append(name)
    if len(calls) == 3:
        raise RuntimeError("injected fault in the third batch")
    return may_go(self, name)
app_parts.AppParts.may_go = faulty
from streamrec.cli import main
main(["worker", "--log-level", "warning"])
"""


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("faulty_worker", [FAULTY_SPLIT, FAULTY_LEARNING],
                         ids=["taking", "learning"])
def test_a_batch_the_agent_fails_on_stops_the_worker_and_is_applied_after_a_restart(
        services, worker_env, faulty_worker):
    run = f"fail{uuid.uuid4().hex[:6]}"
    names = {"redis_prefix": run, "worker_id": run, "events_topic": f"{run}.events",
             "dead_letter_topic": f"{run}.dlq", "items_topic": f"{run}.items",
             "users_topic": f"{run}.users", "impressions_topic": f"{run}.impressions",
             "metrics_topic": f"{run}.metrics"}
    asyncio.run(ensure_topics(Settings(kafka_bootstrap=services["bootstrap"], **names)))
    events = list(Simulation(users=500, items=300, categories=8, seed=5).events(
        EVENTS, start=time.time() - 86_400))
    asyncio.run(produce_events(services["bootstrap"], names["events_topic"], events))
    env = dict(worker_env, **{f"STREAMREC_{k.upper()}": v for k, v in names.items()},
               STREAMREC_BATCH_SIZE="500", STREAMREC_SESSION_TIMEOUT_SECONDS="6")
    store = RedisStore(connect(services["redis_url"]), run)
    log_path = services["dir"] / f"worker-{run}.log"
    with open(log_path, "wb") as log:
        faulty = subprocess.Popen([sys.executable, "-c", faulty_worker], env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
        try:
            code = faulty.wait(120)
        finally:
            if faulty.poll() is None:
                faulty.kill()
                faulty.wait(30)
        applied = store.events_applied()
        assert code != 0, "the worker went on after its agent failed"
        assert applied < EVENTS, "the failed batch was applied anyway"

        worker = subprocess.Popen([sys.executable, "-m", "streamrec.cli", "worker",
                                   "--log-level", "warning"], env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
        try:
            _wait(lambda: store.events_applied() >= EVENTS, 180,
                  f"{store.events_applied()} of {EVENTS} applied after the restart "
                  f"({applied} before it)")
            time.sleep(2)  # a batch applied twice would show now
            assert store.events_applied() == EVENTS
        finally:
            worker.terminate()
            worker.wait(30)
    text = log_path.read_text(errors="replace")
    assert "injected fault in the third batch" in text, text[-3000:]
