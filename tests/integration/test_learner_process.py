"""The worker's learning process (streams.learner) against the real worker, Kafka and Redis:
it dies with a worker killed by SIGKILL (nothing keeps applying behind a successor), and
one killed alone is started again with nothing lost or counted twice, whichever calls it
held. Workers stopped gracefully mid-backlog lose nothing either."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from streamrec.kafka import ensure_topics
from streamrec.settings import Settings
from streamrec.sim.simulator import Simulation
from streamrec.storage.client import connect
from streamrec.storage.state_store import RedisStore
from streams import learner
from tests.factories import produce_events

EVENTS = 12_000


def _names(run: str) -> dict[str, str]:
    return {"redis_prefix": run, "worker_id": run, "events_topic": f"{run}.events",
            "dead_letter_topic": f"{run}.dlq", "items_topic": f"{run}.items",
            "users_topic": f"{run}.users", "impressions_topic": f"{run}.impressions",
            "metrics_topic": f"{run}.metrics"}


def _learners(worker: int) -> list[int]:
    """The worker's learning processes: its children that multiprocessing spawned."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue  # it ended meanwhile
        if parent == worker and b"spawn_main" in command:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.fixture
def run(services, worker_env):
    """A backlog of EVENTS on topics of their own, and the worker's environment."""
    name = f"learn{uuid.uuid4().hex[:6]}"
    names = _names(name)
    asyncio.run(ensure_topics(Settings(kafka_bootstrap=services["bootstrap"], **names)))
    events = list(Simulation(users=800, items=300, categories=8, seed=3).events(
        EVENTS, start=time.time() - 86_400))
    asyncio.run(produce_events(services["bootstrap"], names["events_topic"], events))
    env = dict(worker_env, **{f"STREAMREC_{k.upper()}": v for k, v in names.items()},
               STREAMREC_SESSION_TIMEOUT_SECONDS="6")
    store = RedisStore(connect(services["redis_url"]), name)
    return env, store, services["dir"] / f"worker-{name}.log"


@pytest.mark.timeout(120)
def test_every_call_a_dead_learner_held_is_lost_alike_and_the_next_call_starts_another(
        services):
    """The events agent and the refresh timer call the learning process side by side. When
    it dies, both calls fail at once: each must raise LearnerLost (the agent reads its part
    again, the timer waits for its next tick), not crash the worker's App (the second used
    to shut down a pool the first had already let go: an AttributeError on None)."""
    run = f"lost{uuid.uuid4().hex[:6]}"
    settings = Settings(redis_url=services["redis_url"], kafka_bootstrap=services["bootstrap"],
                        redis_prefix=run, worker_id=run)

    async def scenario() -> None:
        calls = learner.Learner(settings, None, "warning")
        first = await calls.call(learner.ready)
        held = [asyncio.ensure_future(calls.call(time.sleep, 60)) for _ in range(3)]
        await asyncio.sleep(0.5)  # one runs in the process, two wait in its queue
        os.kill(first, signal.SIGKILL)
        lost = await asyncio.gather(*held, return_exceptions=True)
        assert [type(error) for error in lost] == [learner.LearnerLost] * 3, lost
        second = await calls.call(learner.ready)
        assert second != first and _alive(second)
        calls.close()  # the worker's process lives as long as it does

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_a_call_cancelled_mid_way_leaves_its_answer_to_be_read_past(services):
    """The worker stopping cancels a call the process is still working on: its answer
    comes later, and the next call must get its own answer, not that one."""
    run = f"cancel{uuid.uuid4().hex[:6]}"
    settings = Settings(redis_url=services["redis_url"], kafka_bootstrap=services["bootstrap"],
                        redis_prefix=run, worker_id=run)

    async def scenario() -> None:
        calls = learner.Learner(settings, None, "warning")
        try:
            pid = await calls.call(learner.ready)
            slow = asyncio.ensure_future(calls.call(time.sleep, 1.0))
            await asyncio.sleep(0.3)
            slow.cancel()
            assert await calls.call(learner.ready) == pid  # not the sleep's None
            assert await calls.call(divmod, 7, 2) == (3, 1)
            with pytest.raises(ZeroDivisionError) as raised:
                await calls.call(divmod, 1, 0)  # raised here as it was there
            assert any("in the learning process" in note for note in raised.value.__notes__)
        finally:
            calls.close()

    asyncio.run(scenario())


@pytest.mark.skipif(sys.platform != "linux", reason="the death signal is Linux's prctl")
@pytest.mark.timeout(300)
def test_a_learner_killed_alone_is_started_again_and_the_worker_takes_it_along(run):
    env, store, log_path = run
    with open(log_path, "wb") as log:
        worker = subprocess.Popen([sys.executable, "-m", "streamrec.cli", "worker",
                                   "--log-level", "warning"], env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
        try:
            kills = []
            for _ in range(3):
                before = store.events_applied()
                _wait(lambda before=before: store.events_applied() > before, 120,
                      f"nothing applied past {before}")
                learners = _learners(worker.pid)
                assert len(learners) == 1, learners
                os.kill(learners[0], signal.SIGKILL)
                kills.append(store.events_applied())
            assert any(0 < applied < EVENTS for applied in kills), kills
            _wait(lambda: store.events_applied() >= EVENTS, 240,
                  f"{store.events_applied()} of {EVENTS} applied")
            time.sleep(2)  # a part applied twice would show now
            assert store.events_applied() == EVENTS
            assert worker.poll() is None, "the worker died with its learner"

            learner = _learners(worker.pid)[0]
            worker.send_signal(signal.SIGKILL)
            worker.wait(10)
            _wait(lambda: not _alive(learner), 10, "the learner outlived the killed worker")
        finally:
            if worker.poll() is None:
                worker.terminate()
                worker.wait(30)
    text = log_path.read_text(errors="replace")
    assert text.count("the learning process died") >= 3, text[-2000:]


@pytest.mark.timeout(300)
def test_workers_stopped_mid_backlog_by_sigterm_lose_nothing_and_count_nothing_twice(run):
    """A graceful stop commits what was acked: a batch the worker held when stopped (its
    part perhaps not applied) must not be acked, or its records would be lost."""
    env, store, log_path = run
    stops = []
    with open(log_path, "wb") as log:
        for last in (False, False, False, True):
            worker = subprocess.Popen([sys.executable, "-m", "streamrec.cli", "worker",
                                       "--log-level", "warning"], env=env, stdout=log,
                                      stderr=subprocess.STDOUT)
            try:
                if last:
                    _wait(lambda: store.events_applied() >= EVENTS, 240,
                          f"{store.events_applied()} of {EVENTS} applied")
                    time.sleep(2)  # a part applied twice would show now
                else:
                    before = store.events_applied()
                    _wait(lambda before=before: store.events_applied() > before, 120,
                          f"nothing applied past {before}")
                    worker.send_signal(signal.SIGTERM)
                    worker.wait(60)
                    stops.append(store.events_applied())
            finally:
                if worker.poll() is None:
                    worker.terminate()
                    worker.wait(30)
    assert any(0 < applied < EVENTS for applied in stops), stops
    assert store.events_applied() == EVENTS
