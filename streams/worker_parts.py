"""What a worker's agents write through, per app: built in the worker for the catalog,
the feedback and the dead letters, and in its learning process (:mod:`streams.learner`)
for the learning."""

from __future__ import annotations

from dataclasses import dataclass

from recommender.attribution import Attributor
from streamrec.settings import Settings
from streamrec.storage.model_versions import MAIN, Versions
from streamrec.storage.ops_stats import OpsStats
from streamrec.storage.state_store import RedisStore
from streamrec.wiring import Wiring
from streams.batch import EventBatches


@dataclass(frozen=True)
class WorkerParts:
    """What the agents of one model version's worker write through."""

    settings: Settings
    store: RedisStore
    batches: EventBatches
    ops: OpsStats
    attributor: Attributor
    versions: Versions
    # A model version's worker only learns; the main worker also keeps the catalog and the
    # feedback (shared by every version).
    main: bool

    @classmethod
    def build(cls, wiring: Wiring) -> WorkerParts:
        settings = wiring.settings
        store = wiring.store()
        batches = EventBatches(wiring.engine(store), store, settings.weights(),
                               settings.max_event_time_skew_seconds, wiring.read_event_types())
        return cls(settings, store, batches, wiring.ops(), wiring.attributor(),
                   wiring.versions(), settings.state_version == MAIN)


def refresh_engines(engines) -> None:
    """Refresh the serving copies of engines that have made them (a first tally trial
    does); an engine that never tried keeps reading the store when it first does."""
    for engine in engines:
        if engine.item_index.cursor is not None:
            engine.refresh()
