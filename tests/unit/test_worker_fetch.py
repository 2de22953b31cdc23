"""The worker's Kafka consumer waits at most STREAMREC_WORKER_FETCH_MAX_WAIT_MS on a fetch
(streams.app): Faust's own 1,500 ms made events reach the worker in 1.5-s bursts."""

from __future__ import annotations

import asyncio
import inspect

import aiokafka
import pytest
from pydantic import ValidationError

from streamrec.settings import Settings
from streams.app import create_app


def consumer_of(settings: Settings) -> aiokafka.AIOKafkaConsumer:
    async def build() -> aiokafka.AIOKafkaConsumer:
        app = create_app(settings)
        return app.consumer._thread._create_worker_consumer(app.transport)
    return asyncio.run(build())


def test_the_worker_consumer_takes_the_setting_not_faust_s_1500_ms(tmp_path):
    assert consumer_of(Settings(data_dir=str(tmp_path)))._fetch_max_wait_ms == 50
    assert consumer_of(Settings(data_dir=str(tmp_path), worker_fetch_max_wait_ms=7)
                       )._fetch_max_wait_ms == 7


def test_aiokafka_builds_its_fetcher_from_the_attribute_the_worker_sets():
    # The attribute is aiokafka's own (pinned); an upgrade that renames it fails here, not
    # silently in production as 1.5-s bursts.
    assert "fetch_max_wait_ms=self._fetch_max_wait_ms" in inspect.getsource(
        aiokafka.AIOKafkaConsumer.start)


def test_a_wait_out_of_range_is_refused_by_name():
    with pytest.raises(ValidationError, match="worker_fetch_max_wait_ms"):
        Settings(worker_fetch_max_wait_ms=0)
