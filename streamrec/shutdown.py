"""A stop that cannot hang: every role ends within a stated time of SIGTERM (or Ctrl-C).

A role first stops gracefully (the worker commits what it applied, the API finishes its
requests). A broker or a Redis that is gone or hung can hold that up for good: a consumer
committing, a producer flushing, a thread blocked on a socket. So the first signal also
starts a timer, and a process still stopping when it runs out exits at once. Nothing is
lost by that: the worker's offsets stay behind the state it applied (a restart replays the
rest, skipped by the applied offsets), and the API acknowledges only what Kafka took.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

# What the README promises for worker, api and simulate: gone within this many seconds of
# SIGTERM. `streamrec up` stops its roles, then the Kafka and Redis it started: UP_STOP_SECONDS.
ROLE_STOP_SECONDS = 10.0
SERVICE_STOP_SECONDS = 10.0
UP_STOP_SECONDS = ROLE_STOP_SECONDS + SERVICE_STOP_SECONDS + 5.0
# How a process that had to be ended reports it: as a process killed by SIGTERM would.
EXIT_STATUS = 128 + signal.SIGTERM

_timer: threading.Timer | None = None
_lock = threading.Lock()


def exit_within(seconds: float = ROLE_STOP_SECONDS) -> None:
    """End the process ``seconds`` from now unless it has ended by then (the first call
    counts; later ones change nothing)."""
    global _timer
    with _lock:
        if _timer is not None:
            return
        _timer = threading.Timer(seconds, _exit_now, args=(seconds,))
        _timer.daemon = True  # it must not itself keep the process alive
        _timer.start()


def _exit_now(seconds: float) -> None:
    # Not through logging: a handler's lock may be held by the thread that hangs.
    sys.stderr.write(f"streamrec: still stopping {seconds:g} s after the signal (a broker "
                     "or Redis that does not answer); exiting now\n")
    sys.stderr.flush()
    os._exit(EXIT_STATUS)


def bound_signals(seconds: float = ROLE_STOP_SECONDS) -> None:
    """Chain :func:`exit_within` before the SIGTERM and SIGINT handlers installed now (a
    server's graceful stop), which still run. Only the main thread may set handlers:
    elsewhere (an app in a test client's thread) this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        return
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, _bounded(number, signal.getsignal(number), seconds))


def _bounded(number: int, previous: Any, seconds: float
             ) -> Callable[[int, FrameType | None], None]:
    def handler(received: int, frame: FrameType | None) -> None:
        exit_within(seconds)
        if callable(previous):
            previous(received, frame)
        elif previous == signal.SIG_DFL:  # nobody stops gracefully: the default, now
            signal.signal(number, signal.SIG_DFL)
            signal.raise_signal(number)

    return handler
