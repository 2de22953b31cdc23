"""The worker role: its Faust worker class, and :func:`run`, which builds the App from the
composition root and starts it (``streamrec worker``)."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import faust

from streamrec import collector
from streamrec.apps import DEFAULT, AppError
from streamrec.kafka import ensure_topics
from streamrec.settings import Settings
from streamrec.shutdown import exit_within
from streamrec.storage.model_versions import MAIN
from streamrec.wiring import Wiring
from streams.serving_follower import follow_serving


class Worker(faust.Worker):
    """On SIGTERM or SIGINT Faust stops gracefully: it commits the offsets of what was
    applied and closes its consumer and producer, which can wait for good on a broker that
    is gone or a Redis that hangs. The process ends within ``ROLE_STOP_SECONDS`` anyway."""

    def _on_sigterm(self) -> None:
        exit_within()
        super()._on_sigterm()

    def _on_sigint(self) -> None:
        exit_within()
        super()._on_sigint()

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        """No terminal spinner. Faust's, kept at levels from WARN up, sets the root logger
        to DEBUG for its handler, so every debug call of aiokafka, Faust and mode built a
        record that no handler printed: 16% of the consumer thread's samples in a profile
        of a worker fetching from an idle topic."""
        self.spinner = None


def build(wiring: Wiring, only: str | None = None, log_level: str = "info") -> faust.App:
    """The App of ``wiring``'s model version, with its topics and agents declared: the
    main worker's (every app's records, ``wiring`` the deployment's) or, with ``only``,
    the worker of that app's model version ``wiring``."""
    from streams.agents import register_agents
    from streams.app import create_app
    from streams.app_parts import AppParts
    from streams.learner import Learner
    from streams.topics import declare_topics
    from streams.worker_parts import WorkerParts

    app = create_app(wiring.settings)
    register_agents(app, declare_topics(app, wiring.settings),
                    AppParts(wiring, WorkerParts.build, only),
                    Learner(wiring.settings, only, log_level))
    return app


def run(settings: Settings, version: str | None = None, log_level: str = "info",
        app_name: str = DEFAULT) -> None:
    """Keep model ``version`` (default: ``settings.state_version``, "main") up to date
    until stopped: the main worker keeps every app's main version; a version's worker
    (of app ``app_name``) runs with that version's hyperparameters, Redis namespace and
    consumer group, on that app's records."""
    if app_name != DEFAULT:
        if (version or settings.state_version) == MAIN:
            raise AppError("app: the main worker keeps every app; --app is for a model "
                           "version's worker (--version NAME)")
        base = Wiring.connect(settings, "worker")
        try:
            wiring = base.for_app(app_name).for_version(version or settings.state_version)
        except Exception:
            base.close()
            raise
    else:
        wiring = Wiring.for_process(settings, version)
    only = None if wiring.settings.state_version == MAIN else app_name
    asyncio.run(ensure_topics(wiring.settings, "worker"))
    Path(wiring.settings.data_dir, "faust").mkdir(parents=True, exist_ok=True)
    app = build(wiring, only, log_level)
    if wiring.settings.state_version == MAIN:
        # The serving version is always kept live, whoever promoted it (docs/versions.md).
        follow_serving(lambda: {name: wiring.for_app(name, app).versions().serving()
                                for name, app in wiring.apps().all().items()})
    # Faust spells two of the levels its own way.
    faust_level = {"warning": "warn", "critical": "crit"}.get(log_level, log_level)
    # --without-web: the worker serves nothing over HTTP (the API does), and two workers on
    # one machine must not fight over Faust's web port.
    sys.argv = [sys.argv[0], "worker", "--loglevel", faust_level, "--without-web"]
    collector.settle()
    app.main()
