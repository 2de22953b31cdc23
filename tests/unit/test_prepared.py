"""The events agent's prepared batches (streams.prepared): the learning loop takes every
batch prepared while it was busy as one, in order, up to the batch size; the agent waits
while a batch's worth is prepared."""

from __future__ import annotations

import asyncio
from collections import Counter

from streams.app_parts import Split
from streams.prepared import Prepared


def batch(first: int, count: int, partition: int = 0):
    events = list(range(first, first + count))
    split = Split({"default": list(events)}, {}, Counter(),
                  {f"e:{partition}": first + count - 1}, {"default": "app"})
    return events, split, {"default": [f"plain{n}" for n in events]}


def test_every_batch_prepared_meanwhile_is_learned_as_one_in_order():
    async def run():
        prepared = Prepared(limit=100)
        for first in (0, 10, 20):
            await prepared.put(*batch(first, 10))
        events, split, plain = await prepared.take()
        assert events == list(range(30))
        assert split.parts == {"default": list(range(30))}
        assert plain == {"default": [f"plain{n}" for n in range(30)]}
        assert split.through == {"e:0": 29}
        assert split.apps == {"default": "app"}
    asyncio.run(run())


def test_a_turn_takes_at_most_a_batch_s_worth_and_the_rest_waits_its_turn():
    async def run():
        prepared = Prepared(limit=25)
        for first in (0, 10, 20):
            await prepared.put(*batch(first, 10))
        assert (await prepared.take())[0] == list(range(20))
        assert (await prepared.take())[0] == list(range(20, 30))
    asyncio.run(run())


def test_the_agent_waits_while_a_batch_s_worth_is_prepared_and_goes_on_once_taken():
    async def run():
        prepared = Prepared(limit=20)
        await prepared.put(*batch(0, 20))
        putting = asyncio.ensure_future(prepared.put(*batch(20, 5)))
        await asyncio.sleep(0.01)
        assert not putting.done()  # a full batch waits: the backlog stays in Kafka
        assert (await prepared.take())[0] == list(range(20))
        await asyncio.wait_for(putting, 1)
        assert (await prepared.take())[0] == list(range(20, 25))
    asyncio.run(run())


def test_the_learning_loop_waits_for_a_batch():
    async def run():
        prepared = Prepared(limit=20)
        taking = asyncio.ensure_future(prepared.take())
        await asyncio.sleep(0.01)
        assert not taking.done()
        await prepared.put(*batch(0, 3, partition=2))
        events, split, _ = await asyncio.wait_for(taking, 1)
        assert events == [0, 1, 2] and split.through == {"e:2": 2}
    asyncio.run(run())


def test_a_cancelled_put_leaves_nothing_behind():
    async def run():
        prepared = Prepared(limit=10)
        await prepared.put(*batch(0, 10))
        putting = asyncio.ensure_future(prepared.put(*batch(10, 5)))
        await asyncio.sleep(0.01)
        putting.cancel()
        await asyncio.gather(putting, return_exceptions=True)
        assert (await prepared.take())[0] == list(range(10))
        assert prepared._batches == [] and prepared._events == 0
    asyncio.run(run())
