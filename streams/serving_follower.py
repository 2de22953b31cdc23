"""The serving version is always kept live: the main worker (``streamrec worker``) runs a
worker of the version that serves whenever that is not ``main``, for every app.

Every ``FOLLOW_SECONDS`` it reads the switch (``streamrec promote`` / ``rollback``); when
another version serves, it starts ``streamrec worker --version NAME`` as its child (which
joins that version's consumer group beside any worker an operator runs), and stops it
once that version no longer serves. The child ends with its parent (the kernel sends it
SIGTERM when the main worker dies, however it dies), so no orphan keeps learning.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable

from streamrec.apps import DEFAULT
from streamrec.shutdown import ROLE_STOP_SECONDS
from streamrec.storage.model_versions import MAIN

log = logging.getLogger(__name__)

FOLLOW_SECONDS = 2.0
PR_SET_PDEATHSIG = 1  # prctl(2): the signal a child gets when its parent thread ends


def _end_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class ServingFollower:
    """Keeps one child worker for the serving version (of ``app``) while it is not main."""

    def __init__(self, serving: Callable[[], str], env: dict[str, str] | None = None,
                 every: float = FOLLOW_SECONDS, app: str = DEFAULT) -> None:
        self.serving = serving
        self.env = env
        self.every = every
        self.app = app
        self.child: subprocess.Popen | None = None
        self.version: str | None = None
        self._stop = threading.Event()

    def start(self) -> threading.Thread:
        # Its own thread for good: PDEATHSIG follows the thread that started the child.
        thread = threading.Thread(target=self._run, name="serving-follower", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.follow_round()
            except Exception as error:  # noqa: BLE001 - Redis away: try again next round
                log.warning("serving follower: %s", error)
            self._stop.wait(self.every)
        self.finish()

    def follow_round(self) -> None:
        self.follow(self.serving())

    def finish(self) -> None:
        self.follow(MAIN)

    def follow(self, serving: str) -> None:
        """Run a worker for ``serving`` unless it is main; stop one for another version."""
        if self.child is not None and (self.version != serving or self.child.poll() is not None):
            self._end_child()
        if serving != MAIN and self.child is None:
            self.child = subprocess.Popen(
                [sys.executable, "-m", "streamrec.cli", "worker", "--version", serving,
                 "--log-level", "warning", "--app", self.app], env=self.env,
                preexec_fn=_end_with_parent)
            self.version = serving
            log.info("model version %s of app %s serves: keeping it live with a worker of "
                     "its own (pid %d)", serving, self.app, self.child.pid)

    def _end_child(self) -> None:
        child, self.child = self.child, None
        assert child is not None
        if child.poll() is None:
            log.info("model version %s no longer serves: stopping its worker", self.version)
            child.terminate()
            try:
                child.wait(ROLE_STOP_SECONDS + 2)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        elif child.returncode:
            log.warning("the worker of model version %s exited with %d; starting it again",
                        self.version, child.returncode)


class AppsServingFollower(ServingFollower):
    """One :class:`ServingFollower` per app, all from one thread (PDEATHSIG follows the
    thread that started a child): ``servings()`` gives each app's serving version, and an
    app gone from it (deleted) has its child stopped."""

    def __init__(self, servings: Callable[[], dict[str, str]],
                 env: dict[str, str] | None = None, every: float = FOLLOW_SECONDS) -> None:
        super().__init__(lambda: MAIN, env, every)
        self.servings = servings
        self.apps: dict[str, ServingFollower] = {}

    def follow_round(self) -> None:
        self.follow_all(self.servings())

    def finish(self) -> None:
        self.follow_all({})

    def follow_all(self, servings: dict[str, str]) -> None:
        for app in [app for app in self.apps if app not in servings]:
            self.apps.pop(app).follow(MAIN)
        for app, serving in servings.items():
            if app not in self.apps:
                self.apps[app] = ServingFollower(lambda: MAIN, self.env, self.every, app)
            self.apps[app].follow(serving)


def follow_serving(servings: Callable[[], dict[str, str]]) -> ServingFollower:
    """Start following every app's serving version; the main worker's process calls it
    once."""
    follower = AppsServingFollower(servings, dict(os.environ))
    follower.start()
    return follower
