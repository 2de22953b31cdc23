from __future__ import annotations

import uuid

import pytest
import redis

from streamrec import keys
from streamrec.local.services import free_port
from streamrec.redis_client import connect
from streamrec.redis_store import RedisStore
from tests.contract_store import StoreContract
from tests.factories import update


class TestRedisStore(StoreContract):
    @pytest.fixture
    def store(self, services):
        client = redis.Redis.from_url(services["redis_url"])
        yield RedisStore(client, prefix=f"test-{uuid.uuid4().hex[:8]}")
        client.close()


class TestShardedLayoutOnOneRedis(StoreContract):
    """The cluster key layout (hash-tag groups, one script per group) on a single Redis."""

    @pytest.fixture
    def store(self, services):
        client = redis.Redis.from_url(services["redis_url"])
        yield RedisStore(client, prefix=keys.tagged(f"test-{uuid.uuid4().hex[:8]}"))
        client.close()


class TestRedisClusterStore(StoreContract):
    """The same contract against a real three-node Redis Cluster."""

    @pytest.fixture
    def store(self, redis_cluster):
        client = connect(redis_cluster, cluster=True)
        yield RedisStore(client, prefix=keys.tagged(f"test-{uuid.uuid4().hex[:8]}"))
        client.close()


def test_the_cluster_spreads_users_and_items_over_every_node(redis_cluster):
    client = connect(redis_cluster, cluster=True)
    store = RedisStore(client, prefix=keys.tagged(f"test-{uuid.uuid4().hex[:8]}"))
    users = [f"user-{n}" for n in range(200)]
    store.apply(update(history={user: {"tea": 1.0} for user in users},
                       pairs={f"item-{n}": {"tea": 1.0} for n in range(200)}))
    nodes = {client.get_node_from_key(store.key(keys.HISTORY, user)).name for user in users}
    nodes |= {client.get_node_from_key(store.key(keys.NEIGHBOURS, f"item-{n}")).name
              for n in range(200)}
    assert len(nodes) == 3
    assert {store.group("u", user) for user in users} == {f"u{n}" for n in range(keys.SHARDS)}
    client.close()


def test_a_plain_prefix_is_refused_on_a_cluster(redis_cluster):
    client = connect(redis_cluster, cluster=True)
    with pytest.raises(ValueError, match="hash tags"):
        RedisStore(client, prefix="sr")
    client.close()


def test_ping_is_false_when_redis_is_away():
    assert RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0").ping() is False
