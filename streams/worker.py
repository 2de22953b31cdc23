"""The Faust worker class streamrec runs: Faust's own, with a stop that cannot hang."""

from __future__ import annotations

import faust

from streamrec.shutdown import exit_within


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
