"""The impressions' sender when the API stops in the middle of a round: what Kafka had not
acknowledged by then counts as dropped, once, whatever the round learns of it later."""

from __future__ import annotations

import asyncio
import time

from api import impressions
from api.impressions import ReliableSender
from streamrec.settings import Settings


class StuckProducer:
    """A producer whose deliveries stay unknown until the test settles them."""

    def __init__(self, deliveries: list[asyncio.Future]) -> None:
        self.deliveries = deliveries

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def send(self, topic: str, value: bytes, key: bytes, headers=None) -> asyncio.Future:
        delivery = asyncio.get_running_loop().create_future()
        self.deliveries.append(delivery)
        return delivery


def test_a_round_cut_by_stop_counts_as_dropped_once(monkeypatch):
    deliveries: list[asyncio.Future] = []
    monkeypatch.setattr(impressions.kafka, "producer",
                        lambda settings, **options: StuckProducer(deliveries))
    monkeypatch.setattr(impressions, "DRAIN_SECONDS", 0.1)
    sender = ReliableSender(Settings(), capacity=100, timeout=0.1)
    sender.start()
    for n in range(3):
        sender.send("impressions", b"u", b"shown %d" % n)
    deadline = time.monotonic() + 10
    while len(deliveries) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(deliveries) == 3, "the sender never handed the records to the producer"
    sender.send("impressions", b"u", b"shown later")  # waits behind the stuck round

    asyncio.run(sender.stop())
    assert (sender.sent, sender.dropped, sender.waiting()) == (0, 4, 0)

    # Kafka answers after all: the round ends, and changes no count.
    loop = deliveries[0].get_loop()
    for delivery in deliveries:
        loop.call_soon_threadsafe(delivery.set_result, None)
    sender._thread.join(10)
    assert not sender._thread.is_alive()
    assert (sender.sent, sender.dropped, sender.retried, sender.waiting()) == (0, 4, 0, 0)
