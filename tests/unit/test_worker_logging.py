"""The worker's log level holds for every library in the process (streams.worker.Worker)."""

from __future__ import annotations

import logging
import sys

import faust

from streams.worker import Worker


def test_the_worker_leaves_debug_records_unmade_at_warning_level():
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    stdout, stderr = sys.stdout, sys.stderr
    try:
        app = faust.App("logging-test", broker="kafka://localhost:1", web_enabled=False)
        # redirect_stdouts=False: mode's redirection is a generator whose cleanup sets
        # sys.stdout back to sys.__stdout__ whenever the worker is garbage-collected,
        # which once landed in the middle of a later doctest and stole its output.
        worker = Worker(app, loglevel="warn", quiet=True, redirect_stdouts=False)
        worker._setup_logging()
        assert not logging.getLogger("aiokafka.conn").isEnabledFor(logging.DEBUG)
        assert not root.isEnabledFor(logging.INFO)
        assert sys.stdout is stdout and sys.stderr is stderr
    finally:
        root.setLevel(level)
        root.handlers[:] = handlers
        sys.stdout, sys.stderr = stdout, stderr
