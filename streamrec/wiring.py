"""The composition root: settings -> Redis client -> stores -> engines, for every role.

The API's lifespan, the worker, the CLI commands, the bench and the tests ask a
:class:`Wiring` for what they need; nothing is built at import time, and nothing else
opens Redis or puts a store together. One ``Wiring`` holds one Redis client, shared by
every store it hands out, and the settings of one model version (see
:mod:`streamrec.storage.model_versions`): its state lives under ``settings.redis_prefix``,
and what every version shares (catalog, filters, placements, feedback, the version
registry) under :attr:`Wiring.shared_prefix`. :meth:`Wiring.for_version` gives another
version's wiring on the same client.

>>> from streamrec.settings import Settings
>>> Wiring(Settings(redis_prefix="sr"), client=None).shared_prefix
'sr'
>>> Wiring(Settings(redis_prefix="sr.v2", catalog_prefix="sr"), client=None).shared_prefix
'sr'
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from recommender.allocation import Allocation
from recommender.attribution import Attributor
from recommender.base import LISTS_PREFIX
from recommender.engine import Engine, ExternalModel
from streamrec.apps import App, Apps, app_settings
from streamrec.connections import check_redis, redis_options
from streamrec.settings import Settings
from streamrec.storage import snapshots
from streamrec.storage.client import connect
from streamrec.storage.event_weights import RedisEventWeights
from streamrec.storage.feedback_store import RedisFeedback
from streamrec.storage.filter_definitions import RedisFilters
from streamrec.storage.list_sets import ListSets
from streamrec.storage.model_cards import ModelCards
from streamrec.storage.model_versions import MAIN, Version, VersionError, Versions
from streamrec.storage.model_versions import version_settings as _version_settings
from streamrec.storage.ops_stats import OpsStats
from streamrec.storage.state_store import RedisStore
from streamrec.storage.trained_runs import ServingRuns, TrainedRuns

# How the roles talk to Redis unless a caller asks otherwise: a call that hangs fails
# within seconds (the roles retry), and an idle pooled connection is checked before use.
CLIENT_OPTIONS: dict[str, Any] = {"socket_timeout": 5, "health_check_interval": 30}


class Wiring:
    """The parts of one model version's process, built from its settings on one client.

    Parameters
    ----------
    settings
        The version's settings (:meth:`for_version` makes them from the base ones).
    client
        A Redis client; :meth:`connect` opens one from the settings.
    """

    def __init__(self, settings: Settings, client: redis.Redis | None) -> None:
        self.settings = settings
        self._client = client

    @classmethod
    def connect(cls, settings: Settings, role: str = "streamrec", **options: Any) -> Wiring:
        """Open Redis as the settings say, TLS and ACL user included (``options`` override
        :data:`CLIENT_OPTIONS`). Raises :class:`~streamrec.connections.ConnectionFailed`,
        naming ``role``, when Redis refuses the credentials or the certificates; a Redis
        that does not answer yet is left to the roles' retries."""
        client = connect(settings.redis_url, settings.redis_cluster,
                         **{**CLIENT_OPTIONS, **redis_options(settings), **options})
        try:
            check_redis(client, settings, role)
        except Exception:
            client.close()
            raise
        return cls(settings, client)

    @classmethod
    def for_process(cls, settings: Settings, version: str | None = None,
                    role: str = "worker", **options: Any) -> Wiring:
        """The wiring of a process that runs model ``version`` (default: the settings'
        ``state_version``): its hyperparameters, namespace and consumer group."""
        base = cls.connect(settings, role, **options)
        name = version or settings.state_version
        if name == MAIN:
            return base
        try:
            return base.for_version(name)
        except VersionError:
            base.close()
            raise

    @property
    def client(self) -> redis.Redis:
        if self._client is None:
            raise RuntimeError("this Wiring has no Redis client")
        return self._client

    @property
    def shared_prefix(self) -> str:
        """Where the keys every version shares live: ``STREAMREC_CATALOG_PREFIX``, which a
        version's settings set to the base prefix, else the Redis prefix."""
        return self.settings.catalog_prefix or self.settings.redis_prefix

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    # -- model versions ---------------------------------------------------------------

    def versions(self) -> Versions:
        """The registry of model versions and the switch of the serving one."""
        return Versions(self.client, self.shared_prefix)

    def for_version(self, name: str, version: Version | None = None) -> Wiring:
        """The wiring of model version ``name`` (registered; ``version`` when the caller
        read it already), on this client."""
        if name == MAIN and self.settings.state_version == MAIN:
            return self
        version = version or self.versions().get(name)
        if version is None:
            raise VersionError(f"version {name!r} does not exist: build it with "
                               f"streamrec rebuild --version {name}")
        return Wiring(_version_settings(self.settings, version), self._client)

    def save_snapshot(self, path: Path, progress: Callable[[int], None] | None = None,
                      settings: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write this version's state, with the offsets it reflects, to ``path``."""
        return snapshots.save_snapshot(self.client, self.settings.redis_prefix, path,
                                       progress, settings)

    def restore_snapshot(self, path: Path, prefix: str | None = None,
                         progress: Callable[[int], None] | None = None) -> dict[str, Any]:
        """Load a snapshot into this version's namespace (or ``prefix``, a new version's)."""
        return snapshots.restore_snapshot(self.client, path,
                                          prefix or self.settings.redis_prefix, progress)

    # -- apps -------------------------------------------------------------------------

    def apps(self) -> Apps:
        """The registry of apps and their API keys (under the deployment's base prefix)."""
        return Apps(self.client, self.settings.redis_prefix)

    def for_app(self, name: str, app: App | None = None) -> Wiring:
        """The wiring of app ``name``'s main version (``default``: this deployment's own
        state, with the settings the app's record overrides), on this client. Call it on
        the deployment's base wiring. Raises AppNotFound for an app not registered."""
        app = app or self.apps().require(name)
        return Wiring(app_settings(self.settings, app), self._client)

    # -- stores -----------------------------------------------------------------------

    def store(self) -> RedisStore:
        """The version's recommendation state (and the shared catalog)."""
        return RedisStore(self.client, self.settings.redis_prefix, self.shared_prefix,
                          self.settings.dedup_window_seconds,
                          self.settings.withdrawn_mirror_max,
                          self.settings.popular_cache_seconds)

    def feedback(self) -> RedisFeedback:
        """Placements, impressions and the per-variant counters."""
        return RedisFeedback(self.client, self.shared_prefix, self.settings.bandit_state_cap)

    def model_cards(self) -> ModelCards:
        """The cards (lineage, offline metrics) of what serves each batch-trained or
        imported model, for the placement report (shared by versions)."""
        return ModelCards(self.client, self.shared_prefix)

    def filter_definitions(self) -> RedisFilters:
        """The registered named filters."""
        return RedisFilters(self.client, self.shared_prefix)

    def event_types(self) -> RedisEventWeights:
        """The event types every role accepts, with their weights (shared by versions)."""
        return RedisEventWeights(self.client, self.shared_prefix)

    def read_event_types(self) -> Callable[[], dict[str, float]]:
        """Reads the shared event types, seeding them from ``STREAMREC_EVENT_WEIGHTS`` when
        absent (one round trip): what the worker calls before it decodes each batch."""
        shared, seed = self.event_types(), dict(self.settings.event_weights)
        return lambda: shared.seed(seed)

    def list_sets(self) -> ListSets:
        """The app's imported list sets (``lists:NAME``), shared by its versions."""
        settings = self.settings
        return ListSets(self.client, self.shared_prefix, settings.lists_refresh_seconds,
                        settings.lists_grace_seconds, settings.engine_config().hybrid_rank_constant)

    def ops(self) -> OpsStats:
        """The figures the worker leaves for the API's metrics (freshness, events applied)."""
        return OpsStats(self.client, self.settings.redis_prefix)

    # -- algorithms on those stores ---------------------------------------------------

    def engine(self, store: Any = None) -> Engine:
        """The version's engine, on its store (or on ``store``, a view of it)."""
        engine = Engine(self.store() if store is None else store,
                        self.settings.engine_config())
        engine.external_models = self.external_models()
        return engine

    def external_models(self) -> Callable[[str], ExternalModel | None]:
        """Model name -> its ranker outside the stream, or None: ``lists:NAME`` from the
        imported sets, any other name from the trained runs (``ease``, ``ials``)."""
        lists = self.list_sets().resolver()
        trained = self._trained_models()

        def resolve(model: str) -> ExternalModel | None:
            if model.startswith(LISTS_PREFIX):
                return lists(model)
            return trained(model)

        return resolve

    def _trained_models(self) -> Callable[[str], ExternalModel | None]:
        """The scheduled models' resolver: ``ease`` and ``ials`` from their serving runs."""
        return self.serving_runs()

    # -- models trained on a schedule (streamrec trainer) -----------------------------

    def trained_runs(self) -> TrainedRuns:
        """The app's runs of ``ease`` and ``ials``: registry, artifacts, serving switch
        (under the app's base prefix: every version of the app serves the same run)."""
        return TrainedRuns(self.client, self.shared_prefix)

    def serving_runs(self) -> ServingRuns:
        """The serving runs' artifacts, loaded once per process and run."""
        log = logging.getLogger("streamrec.trained")
        return ServingRuns(self.trained_runs(), self.settings.trained_refresh_seconds,
                           on_error=lambda message: log.warning("trained run: %s", message),
                           fresh_weight=self.settings.trained_fresh_weight)

    def attributor(self) -> Attributor:
        """Credits feedback events to the variant whose list the user acted on."""
        settings = self.settings
        return Attributor(self.feedback(), settings.attribution_window_seconds,
                          settings.attribution_grace_seconds, settings.reward_event_types,
                          settings.attribution_clock_skew_seconds)

    def allocation(self, seed: int | None = None) -> Allocation:
        """Placements and their variants, chosen per user (refresh it to read them)."""
        return Allocation(self.feedback(), self.settings.default_model,
                          self.settings.exploration_floor, seed)
