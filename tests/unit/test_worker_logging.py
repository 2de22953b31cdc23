"""The worker's log level holds for every library in the process (streams.worker.Worker)."""

from __future__ import annotations

import logging

import faust

from streams.worker import Worker


def test_the_worker_leaves_debug_records_unmade_at_warning_level():
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        app = faust.App("logging-test", broker="kafka://localhost:1", web_enabled=False)
        worker = Worker(app, loglevel="warn", quiet=True)
        worker._setup_logging()
        assert not logging.getLogger("aiokafka.conn").isEnabledFor(logging.DEBUG)
        assert not root.isEnabledFor(logging.INFO)
    finally:
        root.setLevel(level)
        root.handlers[:] = handlers
