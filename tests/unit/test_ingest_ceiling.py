"""The ingest ceiling (streams/ceiling.py) takes what the worker takes."""

from __future__ import annotations

from types import SimpleNamespace

from streamrec.settings import Settings
from streams import ceiling
from streams.agents import register_agents
from streams.app import create_app
from streams.learner import Learner
from streams.topics import declare_topics


def agent_topics(app) -> set[str]:
    return {name for agent in app.agents.values() for name in agent.channel.topics}


def test_the_ceiling_takes_every_topic_the_worker_takes(tmp_path):
    """The bench compares the two over the same window; the worker takes the catalog
    meanwhile, so the do-nothing agent must take it too."""
    settings = Settings(data_dir=str(tmp_path))
    worker = create_app(settings)
    # Declaring the agents reads only the settings: no connection is made until they run.
    register_agents(worker, declare_topics(worker, settings),
                    SimpleNamespace(base=SimpleNamespace(settings=settings), only=None),
                    Learner(settings, None))
    measured = ceiling.build(settings, 100, tmp_path / "report.json")
    assert agent_topics(measured) == agent_topics(worker)
    assert settings.events_topic in agent_topics(measured)


def test_the_clock_starts_after_the_warm_up_as_the_workers_does():
    """The bench's worker applies ``--warm-up`` events (and the catalog) before its clock
    starts; the do-nothing agent passes over the same records untimed."""
    clock = ceiling.Clock(events=3000, skip=5000)
    assert clock.add(2000, 1.0) is None and clock.add(2000, 2.0) is None
    assert clock.add(2000, 3.0) is None  # 6,000 taken: the clock starts here
    assert clock.add(1000, 3.5) is None  # 7,000
    report = clock.add(1000, 5.0)  # 8,000 = 5,000 + 3,000: done, 2,000 timed
    assert report == {"events": 2000, "seconds": 2.0, "events_per_second": 1000.0}


def test_without_a_warm_up_the_first_batch_starts_the_clock():
    clock = ceiling.Clock(events=100)
    assert clock.add(40, 10.0) is None
    assert clock.add(40, 10.5) is None
    assert clock.add(40, 11.0) == {"events": 80, "seconds": 1.0, "events_per_second": 80.0}


def test_a_first_batch_that_holds_every_record_times_nothing():
    assert ceiling.Clock(events=100).add(150, 3.0) == {
        "events": 0, "seconds": 0.0, "events_per_second": 0.0}
