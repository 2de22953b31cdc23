"""Paging through the catalog and the users (``streamrec.storage.catalog_listing``, the
console's catalog page) on a real Redis and a real Redis Cluster: every match once, in
pages of the size asked, whatever the layout."""

from __future__ import annotations

import uuid

import pytest

from streamrec.storage import keys
from streamrec.storage.catalog_listing import CatalogListing
from streamrec.storage.client import connect
from streamrec.storage.state_store import RedisStore


@pytest.fixture(params=["plain", "cluster"])
def store(request, services, redis_cluster):
    run = uuid.uuid4().hex[:8]
    if request.param == "cluster":
        client = connect(redis_cluster, cluster=True)
        made = RedisStore(client, "{" + run + "}", "{" + run + "}")
    else:
        client = connect(services["redis_url"])
        made = RedisStore(client, run)
    yield made
    client.close()


def _all(page, query: str, limit: int) -> list[dict]:
    found, cursor, pages = [], 0, 0
    while cursor is not None:
        entries, cursor = page(query, cursor or 0, limit)
        found += entries
        pages += 1
        assert pages < 100, "the cursor does not move"
    return found


def test_users_are_paged_each_once(store):
    users = [f"Buyer-{n}" for n in range(23)] + ["other"]
    for user in users:  # a history, as the worker leaves one
        store.client.zadd(store.key(keys.HISTORY, user), {"item": 1000})
    store.put_users([("Buyer-3", {"user_id": "Buyer-3", "properties": {"tier": "gold"}})])
    listing = CatalogListing(store)
    found = _all(listing.users, "buyer", 5)
    assert sorted(entry["user_id"] for entry in found) == sorted(users[:-1])
    assert all(entry["history_length"] == 1 for entry in found)
    gold = next(entry for entry in found if entry["user_id"] == "Buyer-3")
    assert gold["document"]["properties"] == {"tier": "gold"}
    assert [entry["user_id"] for entry in _all(listing.users, "THER", 5)] == ["other"]


def test_items_are_paged_newest_first_each_once(store):
    store.put_items([(f"i{n}", {"item_id": f"i{n}", "properties": {"title": f"Cup {n}"}})
                     for n in range(12)])
    store.put_items([("i3", None)])  # deleted: still listed, without a document
    listing = CatalogListing(store)
    found = _all(listing.items, "", 5)
    assert sorted(entry["item_id"] for entry in found) == sorted(f"i{n}" for n in range(12))
    assert found[0]["item_id"] == "i3" and found[0]["document"] is None
    page, after = listing.items("cup 1", 0, 2)  # the title, any case: Cup 1, 10, 11
    assert len(page) == 2 and after is not None
    rest, end = listing.items("cup 1", after, 2)
    assert end is None
    assert sorted(entry["item_id"] for entry in page + rest) == ["i1", "i10", "i11"]
