"""The cards of what serves each model ranked outside the stream (``keys.MODEL_CARDS``:
``ease``, ``ials``, ``lists:NAME``), read for the placement report (the arena). The
trainer and ``streamrec lists import`` write them, each with the switch it describes."""

from __future__ import annotations

from typing import Any

import orjson
import redis

from streamrec.storage import keys


class ModelCards:
    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        self.key = keys.key(prefix, keys.MODEL_CARDS)

    def all(self) -> dict[str, dict[str, Any]]:
        """Every card by model name; a card that is not a JSON object is left out."""
        cards = {}
        for model, raw in self.client.hgetall(self.key).items():
            try:
                card = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if isinstance(card, dict):
                cards[model.decode() if isinstance(model, bytes) else model] = card
        return cards
