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
