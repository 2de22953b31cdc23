from __future__ import annotations

import uuid

import numpy as np
import pytest
import redis

from recommender.decay import RESCALE_HALF_LIVES
from recommender.engine import Engine
from recommender.hyperparameters import EngineConfig
from recommender.store import InMemoryStore
from streamrec.local.services import free_port
from streamrec.storage import keys
from streamrec.storage.client import connect
from streamrec.storage.model_versions import state_prefix
from streamrec.storage.state_store import NEIGHBOURS_SKIPLIST_FROM, RedisStore
from tests.contract_store import StoreContract
from tests.factories import update, vector


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


@pytest.fixture(params=["one Redis", "cluster layout on one Redis", "Redis Cluster"])
def client_and_prefix(request, services):
    """A client and a fresh base prefix of each key layout."""
    name = f"test-{uuid.uuid4().hex[:8]}"
    if request.param == "Redis Cluster":
        client = connect(request.getfixturevalue("redis_cluster"), cluster=True)
    else:
        client = redis.Redis.from_url(services["redis_url"])
    yield client, name if request.param == "one Redis" else keys.tagged(name)
    client.close()


def test_deleting_users_reaches_every_model_version_and_outlives_a_racing_batch(
        client_and_prefix):
    client, base = client_and_prefix
    main = RedisStore(client, base)
    other = RedisStore(client, state_prefix(base, "v2"), catalog_prefix=base)
    ann, bob = f"ann-{uuid.uuid4().hex[:6]}", f"bob-{uuid.uuid4().hex[:6]}"
    for store in (main, other):
        store.apply(update(history={ann: {"tea": 1.0}, bob: {"tea": 2.0}},
                           event_types={ann: {"tea": ["view"]}, bob: {"tea": ["view"]}},
                           user_factors={ann: vector(1.0, 0.5), bob: vector(0.5, 1.0)}))
    main.put_users([(ann, {"user_id": ann}), (bob, {"user_id": bob})])
    before = other.deletion_count()

    main.delete_users([ann], also=[other.prefix])
    assert [name for name in client.scan_iter(match=f"*{ann}")] == []
    for store in (main, other):
        assert store.user_state(ann, 10) == ([], None) and store.interaction_types(ann) == {}
        assert store.history(bob, 10) == [("tea", 2.0)] and store.user_factors([bob])
    assert main.get_user(ann) is None and main.get_user(bob) == {"user_id": bob}

    # A batch of the other version read ann's state before the deletion and writes after
    # it: the worker deletes again what it wrote.
    other.apply(update(history={ann: {"cup": 3.0}, bob: {"cup": 3.0}},
                       user_factors={ann: vector(1.0, 1.0)}))
    assert other.delete_again([bob, ann], before) == [ann]
    assert other.user_state(ann, 10) == ([], None)
    assert [item for item, _ in other.history(bob, 10)] == ["cup", "tea"]
    # A batch that began after the deletion keeps what it learned: ann may come back.
    after = other.deletion_count()
    other.apply(update(history={ann: {"jam": 4.0}}))
    assert other.delete_again([ann], after) == []
    assert other.history(ann, 10) == [("jam", 4.0)]
    main.delete_users([ann], also=[other.prefix])  # and go again, as often as asked
    assert other.history(ann, 10) == [] and main.deletion_count() == after + 1


def test_the_copy_of_the_withdrawal_times_is_reloaded_only_when_they_change(
        client_and_prefix):
    """Every version of a catalog shares one copy's version: a write that withdraws nothing
    new leaves each process's copy valid; a withdrawal in another process's store (the
    worker's) is seen by the next request, in every key layout."""
    client, base = client_and_prefix
    serving = RedisStore(client, base)
    worker = RedisStore(client, base)
    version = RedisStore(client, state_prefix(base, "v2"), catalog_prefix=base)
    worker.put_items([("tea", {"item_id": "tea"}), ("cup", {"item_id": "cup"})])
    mirror = serving.withdrawals_mirror
    assert serving.first_read("ann", 10).withdrawals.withdrawn(["tea"], 1.0) == set()
    assert mirror.reloads == 1
    worker.put_items([("tea", {"item_id": "tea", "price": 3})])  # nothing withdrawn
    for _ in range(3):
        assert serving.first_read("ann", 10, factors=False).withdrawals.times == {}
    assert mirror.reloads == 1
    worker.put_items([("cup", None)])
    assert serving.first_read("ann", 10).withdrawals.withdrawn(["tea", "cup"], 1.0) == {"cup"}
    assert version.first_read("ann", 10).withdrawals.withdrawn(["cup"], 1.0) == {"cup"}
    assert mirror.reloads == 2
    # Wiped (an app's keys unlinked) and written again: a fresh version, never a stale copy.
    client.delete(*serving._withdrawn_keys)
    worker.put_items([("tea", {"item_id": "tea", "available": False})])
    assert serving.first_read("ann", 10).withdrawals.withdrawn(["tea", "cup"], 1.0) == {"tea"}


def test_a_serving_store_keeps_the_popular_prefix_briefly_and_never_the_history(
        client_and_prefix):
    """An API process's store takes the popular prefix of its first read from its copy
    while that is young and long enough, in every key layout; the user's history is read
    every time, so their own events show at once."""
    client, base = client_and_prefix
    worker = RedisStore(client, base)
    serving = RedisStore(client, base, popular_cache_seconds=60.0)
    worker.apply(update(popularity={"tea": 4.0, "cup": 3.0}))
    first = serving.first_read("ann", 10, popular=2)
    assert first.popular.scores == [("tea", 4.0), ("cup", 3.0)] and first.history == []
    worker.apply(update(popularity={"pot": 9.0}, history={"ann": {"pot": 5.0}}))
    kept = serving.first_read("ann", 10, popular=1)
    assert kept.popular.scores == [("tea", 4.0)]  # the copy, not yet the new order ...
    assert kept.history == [("pot", 5.0)]  # ... but the user's own event at once
    # A longer prefix than the copy holds is read, and kept in its place.
    assert serving.first_read("ann", 10, popular=3).popular.scores == [
        ("pot", 9.0), ("tea", 4.0), ("cup", 3.0)]
    assert serving.first_read("ann", 10, popular=1).popular.scores == [("pot", 9.0)]
    # A store that keeps none (the constructor's default), or keeps it for no time, reads
    # every time.
    worker.apply(update(popularity={"jam": 20.0}))
    assert worker.first_read("ann", 10, popular=1).popular.scores == [("jam", 20.0)]
    serving.kept_popular.seconds = 0.0
    assert serving.first_read("ann", 10, popular=1).popular.scores == [("jam", 20.0)]


def test_a_change_committed_after_a_read_but_stamped_before_it_is_read(client_and_prefix):
    """A batch stamps its changes when it is packed, and its call may commit after a
    refresh read (a slow script, another worker's clock): the next read reaches back
    CHANGE_OVERLAP_SECONDS for it, and leaves out only what it already read."""
    client, base = client_and_prefix
    store = RedisStore(client, base)
    store.apply(update(item_factors={"tea": vector(1.0, 0.0)}))
    cursor, changed = store.changed_items(None)
    assert set(changed) == {"tea"}
    # Written now, but stamped (by a batch packed earlier) before the last read.
    store.apply(update(item_factors={"cup": vector(0.0, 2.0), "tea": vector(5.0, 5.0)}))
    client.zadd(store.key(keys.MF_CHANGED), {"cup": cursor.at - 2, "tea": cursor.at - 1})
    cursor, changed = store.changed_items(cursor)
    assert set(changed) == {"cup", "tea"}
    assert np.array_equal(changed["tea"], vector(5.0, 5.0))
    assert store.changed_items(cursor)[1] == {}
    # Stamped before the overlap the next read reaches back to: never read (the bound).
    store.apply(update(item_factors={"pot": vector(1.0, 1.0)}))
    client.zadd(store.key(keys.MF_CHANGED),
                {"pot": cursor.at - RedisStore.CHANGE_OVERLAP_SECONDS - 1})
    assert store.changed_items(cursor)[1] == {}


def test_items_are_listed_as_changed_only_once_their_factors_are_written(services):
    """Sharded, a batch is several calls: the changed items are listed by the last one,
    after every group wrote its factors, so a refresh that finds an item listed reads its
    new vector (and reads it only once)."""
    client = redis.Redis.from_url(services["redis_url"])
    store = RedisStore(client, prefix=keys.tagged(f"test-{uuid.uuid4().hex[:8]}"))
    calls: list[tuple[str | None, list]] = []
    call = store._call

    def recording(group, prefixes, payload, *rest):
        calls.append((group, list(payload["mfchg"])))
        return call(group, prefixes, payload, *rest)

    store._call = recording
    store.apply(update(item_factors={f"item-{n}": vector(n, 1.0) for n in range(40)}))
    assert [group for group, _ in calls][-1] is None  # the commit
    assert [listed for _, listed in calls[:-1]] == [[]] * (len(calls) - 1)
    assert sorted(calls[-1][1]) == sorted(f"item-{n}" for n in range(40))
    _, changed = store.changed_items(None)
    assert {item: vector.tolist() for item, vector in changed.items()} == {
        f"item-{n}": [float(n), 1.0] for n in range(40)}
    client.close()


def test_withdrawal_times_without_a_copy_are_read_per_request(client_and_prefix):
    """Too many to copy, or stored before their version was kept: each request screens
    with the store's read, as before, and still never shows a withdrawn item."""
    client, base = client_and_prefix
    store = RedisStore(client, base, withdrawn_mirror_max=2)
    engine = Engine(store, EngineConfig())
    store.apply(update(popularity={"tea": 4.0, "cup": 3.0, "pot": 2.0, "jam": 1.0}))
    store.put_items([("tea", None), ("cup", None)])
    assert store.first_read("ann", 10).withdrawals.withdrawn(["tea", "pot"], 1.0) == {"tea"}
    store.put_items([("pot", {"item_id": "pot", "available": False})])  # three: too many
    assert store.first_read("ann", 10).withdrawals is None
    assert [item for item, _ in engine.recommend("ann", 2, 1.0, "popular").items] == ["jam"]
    # Written by a version of streamrec that kept no version: nothing tells when it changes.
    legacy = RedisStore(client, f"{base}-legacy" if not keys.is_tagged(base)
                        else keys.tagged(f"{base[1:-1]}-legacy"))
    client.zadd(legacy.key(keys.WITHDRAWN), {"tea": 0.0})
    assert legacy.first_read("ann", 10).withdrawals is None
    assert legacy.screen(["tea", "cup"], 1.0)[0] == {"tea"}


def test_histories_written_before_the_scored_event_types_read_the_same_and_are_rewritten(
        client_and_prefix):
    """State of the layout before (history scores in milliseconds, every event type in the
    hash, no field for an item without one) reads back the same; the first batch that
    touches the user rewrites their history into the scored layout (the types in the
    scores, the hash keeps only others), and every answer stays what it was."""
    client, base = client_and_prefix
    store = RedisStore(client, base)
    ann, bob = f"ann-{uuid.uuid4().hex[:6]}", f"bob-{uuid.uuid4().hex[:6]}"
    history, types = store.key(keys.HISTORY, ann), store.key(keys.EVENT_TYPES, ann)
    client.zadd(history, {"tea": 1000, "cup": 2000, "jam": 3000, "pot": 3000, "mug": -500})
    client.hset(types, mapping={"tea": "view", "cup": "click\x1fshare\x1fview",
                                "pot": "purchase", "mug": "view"})
    old = {"tea": {"view"}, "cup": {"click", "share", "view"}, "pot": {"purchase"},
           "mug": {"view"}}
    times = [("pot", 3.0), ("jam", 3.0), ("cup", 2.0), ("tea", 1.0), ("mug", -0.5)]

    def answers(user):
        return (store.interaction_types(user), store.history(user, 10),
                store.history(user, 2), store.windows([user], 10)[user],
                store.histories([user], 3)[user], store.user_state(user, 4)[0])

    before = answers(ann)
    assert before[:4] == (old, times, times[:2], times[:4])

    store.apply(update(history={bob: {"tea": 1.0}}, event_types={bob: {"tea": ["view"]}}))
    assert answers(ann) == before  # another user's batch leaves ann's layout alone
    assert client.zscore(history, "") is None

    store.apply(update(history={ann: {"tea": 0.5}}, event_types={ann: {"tea": ["view"]}}))
    assert client.zscore(history, "") == float("inf")
    assert answers(ann) == before
    assert client.hgetall(types) == {b"cup": b"share"}

    store.apply(update(history={ann: {"cup": 4.0, "ink": 4.0}},
                       event_types={ann: {"cup": ["share", "rating"], "ink": ["like"]}}))
    assert store.interaction_types(ann) == old | {"cup": {"click", "share", "view", "rating"},
                                                  "ink": {"like"}}
    assert store.history(ann, 3) == [("ink", 4.0), ("cup", 4.0), ("pot", 3.0)]
    assert client.hgetall(types) == {b"cup": b"share", b"ink": b"like"}
    assert store.interaction_types(bob) == {"tea": {"view"}}
    assert client.exists(store.key(keys.EVENT_TYPES, bob)) == 0


def test_a_history_the_layout_cannot_hold_is_refused_with_what_is_wrong(services):
    store = RedisStore(redis.Redis.from_url(services["redis_url"]),
                       prefix=f"test-{uuid.uuid4().hex[:8]}")
    with pytest.raises(ValueError, match="history of user 'ann': an empty item id"):
        store.apply(update(history={"ann": {"": 1.0}}))
    with pytest.raises(ValueError,
                       match="history of user 'ann': time -1000000000000.0 is more than"):
        store.apply(update(history={"ann": {"tea": 1.0, "cup": -1e12}}))
    assert store.history("ann", 10) == [] and store.events_applied() == 0


def test_a_long_neighbour_list_moves_to_the_skiplist_encoding_and_reads_the_same(
        client_and_prefix):
    """A list reaching NEIGHBOURS_SKIPLIST_FROM members leaves the listpack (linear writes)
    before the batch's ZADD, stays trimmed to max_neighbours, goes back through a rescale's
    rewrite and returns at the next batch, and reads as the in-memory store's throughout."""
    client, base = client_and_prefix
    store, memory = RedisStore(client, base), InMemoryStore()
    key = store.key(keys.NEIGHBOURS, "tea")

    def both(reference: float, weights: dict[str, float]) -> None:
        batch = update(reference=reference, pairs={"tea": weights}, item_counts={"tea": 1.0})
        store.apply(batch)
        memory.apply(batch)

    def same() -> None:
        ours = store.neighbours(["tea"], 300)["tea"]
        theirs = memory.neighbours(["tea"], 300)["tea"]
        assert [item for item, _ in ours.scores] == [item for item, _ in theirs.scores]
        assert [score for _, score in ours.scores] == pytest.approx(
            [score for _, score in theirs.scores], rel=1e-12)
        assert ours.landmark == theirs.landmark

    short = NEIGHBOURS_SKIPLIST_FROM - 28
    both(0.0, {f"item-{n}": 1.0 + n / 1000 for n in range(short)})
    assert client.object("encoding", key) == b"listpack"
    same()
    # 40 join and 20 already there grow: the list is moved before they are written.
    both(0.0, {f"item-{n}": 0.5 + n / 997 for n in range(short - 20, short + 40)})
    assert client.object("encoding", key) == b"skiplist"
    assert client.zcard(key) == short + 40
    same()
    # Past max_neighbours (200): trimmed as before.
    both(0.0, {f"item-{n}": 2.0 + n / 991 for n in range(short + 40, 260)})
    assert client.zcard(key) == 200
    same()
    # A batch far ahead rescales the list (ZUNIONSTORE writes a listpack of 200) and
    # moves it again before its ZADD.
    both(3 * RESCALE_HALF_LIVES, {"item-3": 1.0, "item-300": 4.0})
    assert client.object("encoding", key) == b"skiplist"
    assert client.zcard(key) == 200
    same()


def test_a_snapshot_of_the_layout_before_restores_and_reads_the_same(client_and_prefix,
                                                                     tmp_path):
    """A format-3 snapshot (histories without the marker, every type in the hash) restores
    into another version's namespace, reads as it was, and is rewritten on touch."""
    import orjson

    from streamrec.storage.snapshots import restore_snapshot, save_snapshot

    client, base = client_and_prefix
    store = RedisStore(client, base)
    ann = f"ann-{uuid.uuid4().hex[:6]}"
    client.zadd(store.key(keys.HISTORY, ann), {"tea": 1000, "cup": 2000})
    client.hset(store.key(keys.EVENT_TYPES, ann), mapping={"cup": "click\x1fview"})
    path = tmp_path / "before.snapshot"
    save_snapshot(client, store.prefix, path)
    header, rest = path.read_bytes().split(b"\n", 1)
    path.write_bytes(orjson.dumps(orjson.loads(header) | {"format": "streamrec-snapshot-3"})
                     + b"\n" + rest)

    target = RedisStore(client, state_prefix(base, "v3"), catalog_prefix=base)
    restore_snapshot(client, path, target.prefix)
    assert target.history(ann, 10) == [("cup", 2.0), ("tea", 1.0)]
    assert target.interaction_types(ann) == {"cup": {"click", "view"}}
    target.apply(update(history={ann: {"tea": 3.0}}, event_types={ann: {"tea": ["view"]}}))
    assert target.history(ann, 10) == [("tea", 3.0), ("cup", 2.0)]
    assert target.interaction_types(ann) == {"cup": {"click", "view"}, "tea": {"view"}}
    assert client.exists(target.key(keys.EVENT_TYPES, ann)) == 0


def test_rewriting_every_history_of_the_layout_before_keeps_every_answer(client_and_prefix):
    """`streamrec versions rewrite-histories`: the users a worker has not touched yet are
    rewritten too, each once, with the same answers."""
    client, base = client_and_prefix
    store = RedisStore(client, base)
    run = uuid.uuid4().hex[:6]
    old_users = [f"{run}-u{n}" for n in range(5)]
    for n, user in enumerate(old_users):
        client.zadd(store.key(keys.HISTORY, user), {"tea": 1000 + n, "cup": 2000})
        client.hset(store.key(keys.EVENT_TYPES, user), mapping={"cup": "purchase\x1fview",
                                                                "tea": "like"})
    new_user = f"{run}-new"
    store.apply(update(history={new_user: {"tea": 1.0}}, event_types={new_user: {"tea": ["view"]}}))
    before = {user: (store.history(user, 10), store.interaction_types(user))
              for user in [*old_users, new_user]}
    looked: list[int] = []
    assert store.rewrite_histories(batch=2, progress=looked.append) == 5
    assert sum(looked) == 6
    assert {user: (store.history(user, 10), store.interaction_types(user))
            for user in before} == before
    for user in old_users:
        assert client.zscore(store.key(keys.HISTORY, user), "") == float("inf")
        assert client.hgetall(store.key(keys.EVENT_TYPES, user)) == {b"tea": b"like"}
    assert store.rewrite_histories() == 0
