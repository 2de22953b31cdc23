"""Learning ahead: an offline replay's engine learns in a second process.

A prequential replay alternates: the lists of a batch's events, ranked on the state before
it, then the batch learned. Learning batch b needs the state after batch b - 1 and never
the lists, so a forked copy of the engine learns every batch in turn, as far ahead as the
pipe lets it, and sends each batch's :class:`~recommender.store.StateUpdate`. The replay's
own engine ranks the lists, tries the hybrid's tally on its own state (where its lists have
just read what the trials need) and applies each update when its batch comes
(:meth:`Engine.apply_learned`: the store's writes, about a third of learning). The two
halves run at once, one core each.

The figures do not change: the same Engine code computes the same updates from the same
state (the lists read the store and never change it, nor draw from its random numbers).
``tests/unit/test_learn_ahead.py`` compares a replay learning ahead with one that learns
itself, total for total and state for state.

Why the lists stay in the replay's process: the hybrid's lists follow the tally, and the
tally counts trials made on the lists' own reads. Ranking some batches' lists in the
learning process (to share the work more evenly) would need the tally of every batch
before them, including those the replay's process tries, which is behind it: tried on
ml-latest-small's first events, the hybrid's figures changed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import pickle
import time
import traceback
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from recommender.base import Interaction
from recommender.evaluation import EngineModels, batches
from recommender.store import StateUpdate

CHUNK_BATCHES = 32  # updates sent together: one pipe write for many small batches
CHUNK_BYTES = 1 << 20


@dataclass
class Ahead:
    """What learning ahead cost: the learning process's CPU seconds (0 when the replay
    learned in its own process)."""

    cpu_seconds: float = 0.0
    used: bool = False


def usable(models: Mapping[str, object]) -> EngineModels | None:
    """The engine group whose learning can run ahead, or None: one group of engine
    models, learning nothing beside the engine (the served ease and ials learn from the
    same batches in this process, and the hybrid may rank with them), on a machine with a
    second core and fork."""
    groups = {id(group): group for model in models.values()
              if isinstance(group := getattr(model, "group", None), EngineModels)}
    if len(groups) != 1 or (os.cpu_count() or 1) < 2 \
            or "fork" not in multiprocessing.get_all_start_methods():
        return None
    (group,) = groups.values()
    return None if group.learners or group.learned_elsewhere else group


@contextlib.contextmanager
def learning_ahead(models: Mapping[str, object], events: Sequence[Interaction],
                   batch_seconds: float, max_batch: int, enabled: bool = True
                   ) -> Iterator[Ahead]:
    """While open, ``models``' engine learns in a forked process the batches
    :func:`recommender.evaluation.prequential` will make of ``events`` with
    ``batch_seconds`` and ``max_batch``; the yielded :class:`Ahead` holds that process's
    CPU seconds once closed. Does nothing (learning stays in this process) when not
    ``enabled`` or not :func:`usable`."""
    ahead = Ahead()
    group = usable(models) if enabled else None
    if group is None:
        yield ahead
        return
    context = multiprocessing.get_context("fork")
    reader, writer = context.Pipe(duplex=False)
    process = context.Process(target=_learn, daemon=True, name="streamrec-learn-ahead",
                              args=(group, events, batch_seconds, max_batch, writer))
    process.start()
    writer.close()
    receiver = _Receiver(reader, ahead)
    group.learned_elsewhere = receiver
    ahead.used = True
    try:
        yield ahead
        receiver.finish()
    finally:
        group.learned_elsewhere = None
        reader.close()
        if process.is_alive():
            process.kill()
        process.join()


class _Receiver:
    """The updates, in order: each call takes the next one, for the batch the replay is
    at (it must be the batch the learner learned: a different size is an error)."""

    def __init__(self, reader, ahead: Ahead) -> None:
        self.reader = reader
        self.ahead = ahead
        self.pending: list[bytes] = []
        self.done = False

    def __call__(self, interactions: Sequence[Interaction]) -> StateUpdate:
        if not self.pending:
            self._receive()
            if not self.pending:
                raise RuntimeError("learning ahead: the learning process ended before the "
                                   "replay's last batch")
        update: StateUpdate = pickle.loads(self.pending.pop())
        if update.events != len(interactions):
            raise RuntimeError(f"learning ahead went out of step: an update of "
                               f"{update.events} events for a batch of {len(interactions)}")
        return update

    def _receive(self) -> None:
        try:
            kind, payload = pickle.loads(self.reader.recv_bytes())
        except EOFError:
            raise RuntimeError("learning ahead: the learning process died (killed, or out "
                               "of memory?)") from None
        if kind == "error":
            raise RuntimeError(f"learning ahead: the learning process failed:\n{payload}")
        if kind == "done":
            self.ahead.cpu_seconds = payload
            self.done = True
            return
        self.pending = payload[::-1]  # popped from the end, in order

    def finish(self) -> None:
        """After the replay's last batch: the learner's closing message, with its CPU."""
        if self.pending:
            raise RuntimeError(f"learning ahead: {len(self.pending)} updates were never "
                               "applied")
        while not self.done:
            self._receive()
            if self.pending:
                raise RuntimeError("learning ahead: the learning process learned more "
                                   "batches than the replay made")


def _plain_update(update: StateUpdate) -> StateUpdate:
    """``update`` with plain dicts for the defaultdicts it was built with (whose factories
    are lambdas, which do not pickle)."""
    return dataclasses.replace(update, **{
        field.name: _plain(value) for field in dataclasses.fields(update)
        if isinstance(value := getattr(update, field.name), defaultdict)})


def _plain(value):
    if isinstance(value, defaultdict):
        return {key: _plain(inner) for key, inner in value.items()}
    return value


def _learn(group: EngineModels, events: Sequence[Interaction], batch_seconds: float,
           max_batch: int, writer) -> None:
    """The learning process: every batch learned in turn (without the blend's trials,
    which the replay's engine makes), each update pickled at once (the store keeps
    references to what an update carries, and the next batch may change them in place),
    sent in chunks."""
    started = time.process_time()
    try:
        chunk: list[bytes] = []
        size = 0
        for batch in batches(events, batch_seconds, max_batch):
            raw = pickle.dumps(_plain_update(group.engine.learn_many(batch, tally=False)),
                               pickle.HIGHEST_PROTOCOL)
            chunk.append(raw)
            size += len(raw)
            if len(chunk) >= CHUNK_BATCHES or size >= CHUNK_BYTES:
                writer.send_bytes(pickle.dumps(("updates", chunk), pickle.HIGHEST_PROTOCOL))
                chunk, size = [], 0
        if chunk:
            writer.send_bytes(pickle.dumps(("updates", chunk), pickle.HIGHEST_PROTOCOL))
        writer.send_bytes(pickle.dumps(("done", time.process_time() - started)))
    except BaseException:  # noqa: BLE001 - said to the replay, which raises it
        with contextlib.suppress(OSError):
            writer.send_bytes(pickle.dumps(("error", traceback.format_exc())))
    finally:
        writer.close()
        os._exit(0)  # no atexit handlers, no flushing of the parent's buffers twice
