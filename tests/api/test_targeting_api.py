"""A targeted experiment over HTTP with the real worker: requests that match the target
(by context or by the user's catalog properties) get the experiment and log
``targeted: true``; the rest get the default variant, logged ``targeted: false`` and
counted for no variant, so the experiment's figures hold only its population."""

from __future__ import annotations

import pytest
import redis

from streamrec.storage.feedback_store import RedisFeedback
from tests.api.conftest import wait_for

VARIANTS = [{"name": "pop", "model": "popular"}, {"name": "co", "model": "cooccurrence"},
            {"name": "base", "model": "popular"}]


@pytest.fixture(scope="module")
def feedback(services):
    client = redis.Redis.from_url(services["redis_url"])
    yield RedisFeedback(client, "sr")
    client.close()


def test_only_the_target_gets_the_experiment(client, run, feedback):
    placement = f"target-{run}"
    answer = client.put(f"/admin/placements/{placement}", json={
        "strategy": "split", "variants": [*VARIANTS[:2], {**VARIANTS[2], "weight": 0}],
        "target": {"country": ["CA", "US"], "device": "mobile"},
        "default_variant": "base"})
    assert answer.status_code == 200, answer.text
    config = client.get(f"/admin/placements/{placement}").json()
    assert config["target"] == {"country": ["CA", "US"], "device": ["mobile"]}
    assert config["default_variant"] == "base"
    # A user property counts as the context does: Canada from the catalog.
    assert client.put(f"/users/{run}-ca", json={"properties": {"country": "CA"}}
                      ).status_code == 202
    assert wait_for(lambda: client.get(f"/users/{run}-ca").status_code == 200, timeout=30)

    def shown(user: str, **context: str) -> dict:
        params = {"user_id": user, "placement": placement}
        params.update({f"context.{key}": value for key, value in context.items()})
        answer = client.get("/recommendations", params=params)
        assert answer.status_code == 200, answer.text
        return answer.json()

    inside = [shown(f"{run}-u{n}", country="US", device="mobile") for n in range(20)]
    inside.append(shown(f"{run}-ca", device="mobile"))
    outside = [shown(f"{run}-v{n}", country="FR", device="mobile") for n in range(10)]
    outside.append(shown(f"{run}-w", country="CA"))  # no device: not in the target
    assert {answer["variant"] for answer in inside} <= {"pop", "co"}
    assert {answer["variant"] for answer in outside} == {"base"}

    ids = [answer["recommendation_id"] for answer in inside + outside]
    stored = wait_for(lambda: len(found := feedback.impressions(ids)) == len(ids) and found,
                      timeout=30)
    for answer in inside:
        impression = stored[answer["recommendation_id"]]
        assert impression.allocated and impression.decision["targeted"] is True
        assert impression.decision["propensity"] == 0.5  # two live variants split evenly
    for answer in outside:
        impression = stored[answer["recommendation_id"]]
        assert not impression.allocated
        assert impression.decision == {"strategy": "split", "propensity": 1.0,
                                       "segment": None, "features": {}, "targeted": False}
    counters = feedback.variant_counters(placement)
    assert sum(c.get("impressions", 0) for c in counters.values()) == len(inside)
    assert "base" not in counters
