from __future__ import annotations

import uuid

import pytest
import redis

from streamrec.local.services import free_port
from streamrec.redis_store import RedisStore
from tests.contract_store import StoreContract


class TestRedisStore(StoreContract):
    @pytest.fixture
    def store(self, services):
        client = redis.Redis.from_url(services["redis_url"])
        yield RedisStore(client, prefix=f"test-{uuid.uuid4().hex[:8]}")
        client.close()


def test_ping_is_false_when_redis_is_away():
    assert RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0").ping() is False
