"""One way to open Redis: a single server, or a Redis Cluster through any of its nodes."""

from __future__ import annotations

from typing import Any

import redis
from redis.cluster import RedisCluster


def connect(url: str, cluster: bool = False, **options: Any) -> redis.Redis:
    """A client for ``url``; with ``cluster``, a :class:`redis.cluster.RedisCluster` that
    discovers the other nodes from that one and routes each command by its key's slot.

    RESP2 always: with RESP3, redis-py 8 re-encodes every sorted-set score to bytes and back
    to keep its legacy reply shapes (a third of a co-occurrence request's time).
    """
    options.setdefault("protocol", 2)
    if cluster:
        return RedisCluster.from_url(url, **options)  # type: ignore[return-value]
    return redis.Redis.from_url(url, **options)


def is_cluster(client: Any) -> bool:
    return isinstance(client, RedisCluster)
