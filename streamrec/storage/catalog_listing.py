"""Paging through a version's catalog and users for operators (the console's catalog page,
``GET /admin/items`` and ``GET /admin/users``): a search by id (and an item's title), a
page at a time, with a cursor to ask for the next.

An item's title is its property ``title``. Items are listed from the catalog's change
index (:data:`keys.CATALOG_CHANGED`, which holds every item ever put, deleted ones too),
newest change first, the cursor being a rank in it: a page is exact, and an item put
while someone pages moves to the front, so it can be shown twice, never skipped. Users
are those with a history (the keys SCAN finds), matched by Redis itself (``MATCH``); the
cursor is SCAN's (on a Redis Cluster, the number of matches shown so far).
"""

from __future__ import annotations

from typing import Any

import orjson

from recommender.base import ItemId, UserId
from streamrec.storage import keys
from streamrec.storage.state_store import RedisStore

# How many catalog entries or keys one page may read while looking for matches: a search
# that matches little answers with what it found so far and a cursor to go on.
READ_BUDGET = 5000


def matching(text: str) -> str:
    """``text`` as a case-insensitive, literal part of a SCAN ``MATCH`` pattern.

    >>> matching("Ab*1")
    '[aA][bB]\\\\*1'
    """
    parts = []
    for char in text:
        if char.lower() != char.upper():
            parts.append(f"[{char.lower()}{char.upper()}]")
        else:
            parts.append(keys.escape(char))
    return "".join(parts)


def title_of(document: dict[str, Any] | None) -> str:
    """An item's title: its property ``title`` (items carry their own fields in
    ``properties``), else empty.

    >>> title_of({"item_id": "1", "properties": {"title": "Tea"}}), title_of(None)
    ('Tea', '')
    """
    return str(((document or {}).get("properties") or {}).get("title", ""))


class CatalogListing:
    """Search and page through the items and users of ``store``'s version."""

    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self.client = store.client

    def items(self, query: str = "", cursor: int = 0, limit: int = 20
              ) -> tuple[list[dict[str, Any]], int | None]:
        """Items whose id or title holds ``query`` (any case), from rank ``cursor`` of the
        change index; returns them (``item_id``, ``document``: None once deleted,
        ``changed_at``) and the next cursor (None at the end)."""
        needle = query.casefold()
        name = self.store.key(keys.CATALOG_CHANGED)
        found: list[dict[str, Any]] = []
        start = cursor
        while len(found) < limit and start - cursor < READ_BUDGET:
            batch = self.client.zrevrange(name, start, start + max(limit, 100) - 1,
                                          withscores=True)
            if not batch:
                return found, None
            ids: list[ItemId] = [member.decode() for member, _ in batch]
            documents = self._documents(keys.ITEM, ids)
            for (item, (_, changed)), raw in zip(zip(ids, batch, strict=True), documents,
                                                 strict=True):
                start += 1
                document = None if raw is None else orjson.loads(raw)
                title = title_of(document)
                if not needle or needle in item.casefold() or needle in title.casefold():
                    found.append({"item_id": item, "document": document,
                                  "changed_at": changed})
                    if len(found) == limit:
                        break
        more = self.client.zcard(name) > start
        return found, start if more else None

    def users(self, query: str = "", cursor: int = 0, limit: int = 20
              ) -> tuple[list[dict[str, Any]], int | None]:
        """Users with a history whose id holds ``query`` (any case), from SCAN cursor
        ``cursor``; returns them (``user_id``, ``history_length``, ``document``) and the
        next cursor (None at the end). A page may hold a few more than ``limit``: SCAN
        answers in steps, and a cursor cannot point inside one."""
        store = self.store
        middle = "*" + matching(query) + "*" if query else "*"
        if store.sharded:
            (pattern,) = keys.group_patterns(store.prefix, kind=keys.HISTORY, groups="u")
            pattern = pattern[:-1] + middle
            cut = "}:" + keys.HISTORY + ":"
        else:
            pattern = keys.escape(keys.key(store.prefix, keys.HISTORY, "")) + middle
            cut = keys.key(store.prefix, keys.HISTORY, "")
        if store.cluster:
            names, cursor = self._cluster_page(pattern, cursor, limit)
        else:
            names, cursor = self._page(pattern, cursor, limit)
        users: list[UserId] = [name.split(cut, 1)[1] for name in names]
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.zcount(name, "-inf", "(+inf")  # not the layout's marker (+inf)
        lengths = pipe.execute() if names else []
        documents = self._documents(keys.USER, users)
        return ([{"user_id": user, "history_length": length,
                  "document": None if raw is None else orjson.loads(raw)}
                 for user, length, raw in zip(users, lengths, documents, strict=True)],
                cursor or None)

    def _page(self, pattern: str, cursor: int, limit: int) -> tuple[list[str], int]:
        """Keys matching ``pattern`` from SCAN cursor ``cursor``, and SCAN's next cursor."""
        names: list[str] = []
        read = 0
        while True:
            cursor, batch = self.client.scan(cursor, match=pattern, count=200)
            names += [name.decode() for name in batch]
            read += 200
            if cursor == 0 or len(names) >= limit or read >= READ_BUDGET:
                return names, cursor

    def _cluster_page(self, pattern: str, cursor: int, limit: int) -> tuple[list[str], int]:
        """On a cluster every node is scanned, which one cursor cannot say, and the nodes'
        answers interleave differently from one scan to the next: the matches are sorted
        and the cursor is a place in them (each page scans them all again, so this is for
        a console's pages, not for walking millions of users)."""
        names = sorted({name.decode() for name in
                        self.client.scan_iter(match=pattern, count=200)})
        end = cursor + limit
        return names[cursor:end], end if end < len(names) else 0

    def _documents(self, kind: str, ids: list[str]) -> list[bytes | None]:
        # Documents are catalog keys: on a cluster they share the catalog prefix's slot.
        return self.client.mget([self.store.key(kind, id) for id in ids]) if ids else []
