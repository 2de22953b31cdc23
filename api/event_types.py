"""The API's copy of the shared event types (:mod:`streamrec.storage.event_weights`):
re-read every ``event_types_refresh_seconds``, at once by the process that changes them.
Until the first read succeeds ``POST /events`` answers 503: accepting by the settings'
table could accept a type the shared one (hence the worker) does not have."""

from __future__ import annotations

from recommender.weights import EventWeights
from streamrec.settings import Settings
from streamrec.storage.event_weights import RedisEventWeights


class EventTypes:
    def __init__(self, shared: RedisEventWeights, settings: Settings) -> None:
        self.shared = shared
        self.seed = dict(settings.event_weights)
        self.weights = EventWeights(self.seed, settings.rating_positive_threshold)
        self.read = False  # True once the shared table was read

    def refresh(self) -> None:
        self.use(self.shared.seed(self.seed))

    def use(self, table: dict[str, float]) -> None:
        self.weights.use(table)
        self.read = True
