"""Which model version serves: every API process follows the switch in Redis
(``streamrec promote`` / ``rollback``) within ``STREAMREC_VERSION_REFRESH_SECONDS``.

A version's engine is built, and its item-factor index loaded, before the switch, so the
first request after it is as fast as any; the serving and the previous version stay loaded
so that a rollback is immediate.
"""

from __future__ import annotations

import logging
import threading
from typing import NamedTuple

from recommender.engine import Engine
from streamrec.storage.model_versions import MAIN
from streamrec.wiring import Wiring

log = logging.getLogger(__name__)


class Served(NamedTuple):
    version: str  # the model version whose state the engine reads
    engine: Engine


class ServingVersions:
    def __init__(self, wiring: Wiring, main: Engine) -> None:
        self.wiring = wiring
        self.registry = wiring.versions()
        self.engines: dict[str, Engine] = {MAIN: main}
        self.current = MAIN
        self._switching = threading.Lock()

    @property
    def engine(self) -> Engine:
        return self.engines[self.current]

    def served(self) -> Served:
        """The serving version and its engine, read together (a switch between two reads
        would name one version and rank with another). The version that served before a
        switch stays loaded, so its engine is still there."""
        name = self.current
        return Served(name, self.engines[name])

    def refresh(self) -> None:
        """Follow the serving version (blocking: run it in a thread)."""
        name = self.registry.serving()
        if name == self.current:
            return
        with self._switching:
            if name not in self.engines:
                version = self.registry.get(name)
                if version is None:
                    log.warning("version %r is set to serve but is not registered", name)
                    return
                engine = self.wiring.for_version(name, version).engine()
                engine.refresh()
                self.engines[name] = engine
            previous, self.current = self.current, name
            for loaded in list(self.engines):
                if loaded not in (name, previous, MAIN):
                    del self.engines[loaded]
        log.info("serving model version %s (was %s)", name, previous)

    def refresh_factors(self) -> None:
        for engine in list(self.engines.values()):
            engine.refresh()
