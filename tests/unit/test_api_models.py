"""``GET /recommendations`` answers JSON made by orjson (api.models.recommendation_list)
while its OpenAPI schema is RecommendationList's: both must give the same document, every
score a finite number."""

from __future__ import annotations

import math
import sys

import numpy as np
import orjson
import pytest

from api.models import RecommendationList, ScoredItem, recommendation_list, scored_items

SCORES = [0.5, 0, 3, -2.25, 1e300, float("nan"), float("inf"), float("-inf"),
          np.float64(0.125), np.float32(0.75), np.float64("nan")]


@pytest.mark.parametrize("degraded", [False, True])
def test_the_fast_answer_is_the_models_document(degraded: bool) -> None:
    scored = [(f"item-{n}", score) for n, score in enumerate(SCORES)]
    backfill = frozenset({"item-1", "item-4"})
    fields = dict(recommendation_id="ab12", user_id="ann", placement="home",
                  variant="hybrid", model="hybrid", degraded=degraded, version="main")

    answer = recommendation_list(items=scored_items(scored, backfill), **fields)

    model = RecommendationList(items=[
        ScoredItem(item_id=item, score=score, backfill=item in backfill)
        for item, score in scored], **fields)
    assert answer.media_type == "application/json"
    assert orjson.loads(answer.body) == orjson.loads(model.model_dump_json())
    assert list(orjson.loads(answer.body)) == list(RecommendationList.model_fields)
    scores = [item["score"] for item in orjson.loads(answer.body)["items"]]
    assert all(math.isfinite(score) for score in scores)
    assert scores[5:8] == [0.0, sys.float_info.max, -sys.float_info.max]
