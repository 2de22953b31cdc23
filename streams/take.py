"""Batches from a Faust stream that fill while the agent handles the last one.

Faust's ``Stream.take_events`` stops buffering while the agent holds a batch: the first
record that arrives meanwhile waits until the batch is acked. Faust's path for each record
(the conductor, the stream, its processors) then runs only between two batches, taking
turns with the agent instead of overlapping it. With the learning in a process of its own
(:mod:`streams.learner`) the agent mostly waits for that process, so the next batch can
fill in the meantime.

A batch's events are acked when the agent asks for the next batch, and only then, so an
offset is committed only once its record has been handled (Faust's ``take_events`` also
acks the batch of an agent that is stopped or fails while it holds it).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any


async def take_events(stream: Any, max_: int, within: float, acked_here: bool = True
                      ) -> AsyncIterator[Sequence[Any]]:
    """Up to ``max_`` events at a time, or those that came within ``within`` seconds of
    the last batch; the next batch fills (up to ``max_``) while this one is handled.

    Without ``acked_here`` the caller acks each batch itself (:func:`ack`), once handled:
    an agent that takes the next batch while it still handles this one."""
    filling: list[Any] = []
    full = asyncio.Event()
    room = asyncio.Event()
    room.set()

    async def add_to_buffer(value: Any) -> Any:
        event = stream.current_event
        if event is None:
            raise RuntimeError("take_events: the stream has no current event")
        filling.append(event)
        if len(filling) >= max_:
            full.set()
            room.clear()
            await stream.wait(room)  # at most max_ events wait for the agent
        return value

    enable_acks = stream.enable_acks
    stream.enable_acks = False  # acked here, once handled
    stream.add_processor(add_to_buffer)
    stream._enable_passive(aiter(stream.channel))
    loop = asyncio.get_running_loop()
    taken = loop.time()
    try:
        while not stream.should_stop:
            # What came while the last batch was handled waits only what is left of
            # ``within``; a batch that took longer than that is followed at once.
            left = taken + within - loop.time()
            if left > 0 or not filling:
                await stream.wait_for_stopped(full, timeout=left if left > 0 else within)
            if not filling:
                continue
            taken = loop.time()
            batch = filling[:]
            filling.clear()
            full.clear()
            room.set()
            yield batch
            # The agent asks for the next batch: this one is handled. An agent stopped or
            # failed while it held the batch acks none of it (Faust's own take_events acks
            # it then too): its records are read again, and the applied offsets in Redis
            # leave out what was applied.
            if acked_here:
                await ack(stream, batch)
    finally:
        stream.enable_acks = enable_acks
        stream._processors.remove(add_to_buffer)


async def ack(stream: Any, batch: Sequence[Any]) -> None:
    """Ack ``batch`` (taken with ``acked_here`` False) once it is handled; batches are
    acked in the order they were taken."""
    for event in batch:
        await stream.ack(event)
