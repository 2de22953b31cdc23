"""Two workers share one state: each one's tally trials must rank with what the other
learned and with the catalog the main worker stored, not with what it read at its first
trial (``streams.agents.refresh_engines``, run by the worker's ``refresh_trials`` timer)."""

from __future__ import annotations

import time

import redis

from recommender.base import Interaction
from streamrec.settings import Settings
from streamrec.wiring import Wiring
from streams.worker_parts import refresh_engines

NOW = 1_750_000_000.0


def _views(users: range, items: list[str], at: float) -> list[Interaction]:
    return [Interaction(f"u{user}", item, at + n, 1.0)
            for user in users for n, item in enumerate(items)]


def test_a_worker_refreshes_what_another_worker_learned_and_the_catalog(services):
    prefix = f"refresh{time.time_ns() % 10**9}"
    wiring = Wiring(Settings(redis_url=services["redis_url"],
                             kafka_bootstrap=services["bootstrap"], redis_prefix=prefix),
                    redis.Redis.from_url(services["redis_url"]))
    store = wiring.store()
    first, second, idle = (wiring.engine(store) for _ in range(3))
    first.learn_many(_views(range(20), ["tea", "cake", "jam"], NOW))
    # The second worker's first batch of users with a history makes its serving copies.
    second.learn_many(_views(range(20), ["cake", "tea"], NOW + 100))
    assert "scone" not in second.item_index.vectors(["scone"])
    assert second.item_index.cursor is not None

    first.learn_many(_views(range(20, 40), ["scone", "tea"], NOW + 200))
    store.put_items([("scone", {"categories": ["bakery"], "text": "a scone with jam"})],
                    first.popularity_decay)
    assert "scone" not in second.item_index.vectors(["scone"])
    assert not second.content.holds("scone")

    refresh_engines([second, idle])
    assert "scone" in second.item_index.vectors(["scone"])
    assert second.content.holds("scone")
    # An engine that never tried makes its copies when it first needs them.
    assert idle.item_index.cursor is None
