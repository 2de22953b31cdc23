"""Which model version serves: every API process follows the switch in Redis
(``streamrec promote`` / ``rollback``) within ``STREAMREC_VERSION_REFRESH_SECONDS``.

A version's engine is built, and its item-factor index loaded, before the switch, so the
first request after it is as fast as any; the serving and the previous version stay loaded
so that a rollback is immediate.
"""

from __future__ import annotations

import logging
import threading

import redis

from recommender.engine import Engine
from streamrec.settings import Settings
from streamrec.storage.model_versions import MAIN, Versions, version_settings
from streamrec.storage.state_store import RedisStore

log = logging.getLogger(__name__)


class ServingVersions:
    def __init__(self, settings: Settings, client: redis.Redis, main: Engine) -> None:
        self.settings = settings
        self.client = client
        self.registry = Versions(client, settings.redis_prefix)
        self.engines: dict[str, Engine] = {MAIN: main}
        self.current = MAIN
        self._switching = threading.Lock()

    @property
    def engine(self) -> Engine:
        return self.engines[self.current]

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
                effective = version_settings(self.settings, version)
                store = RedisStore(self.client, effective.redis_prefix,
                                   effective.catalog_prefix)
                engine = Engine(store, effective.engine_config())
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
