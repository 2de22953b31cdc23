"""Content similarity for items nobody has interacted with yet: hashed TF-IDF of what the
catalog says about an item (categories, tags, title, description, other string
properties), compared by cosine.

Co-occurrence needs interactions; a new item has none. Its properties are known the moment
it is put in the catalog, so its neighbours can be too.
"""

from __future__ import annotations

import math
import re
import threading
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import sparse

from recommender.base import ItemId, Scored

WORD = re.compile(r"[^\W_]+", re.UNICODE)
TEXT_PROPERTIES = ("title", "name", "description", "brand", "genre", "genres", "tags")


def features(document: Mapping[str, Any]) -> Counter[str]:
    """The terms of an item document: each category as a whole, and the words of its
    text-like properties (a list property counts each element).

    >>> sorted(features({"categories": ["Sci-Fi"], "properties": {"title": "Alien Alien"}}))
    ['cat:sci-fi', 'w:alien']
    >>> features({"properties": {"title": "Alien Alien"}})["w:alien"]
    2
    """
    terms: Counter[str] = Counter()
    for category in document.get("categories") or ():
        terms[f"cat:{str(category).lower()}"] += 1
    properties = document.get("properties") or {}
    for name, value in properties.items():
        values = value if isinstance(value, list) else [value]
        for one in values:
            if not isinstance(one, str):
                continue
            if name in TEXT_PROPERTIES:
                terms.update(f"w:{word}" for word in WORD.findall(one.lower()))
            elif len(one) <= 64:  # a short categorical string: the value as a whole
                terms[f"p:{name}={one.lower()}"] += 1
    return terms


def bucket(term: str, dim: int) -> int:
    """A stable hash of a term into ``dim`` buckets (the same in every process)."""
    return zlib.crc32(term.encode()) % dim


class ContentIndex:
    """Hashed TF-IDF vectors of item documents, searched by cosine.

    Term weights are ``(1 + log tf) * idf`` with ``idf = log((1 + n) / (1 + df)) + 1`` over
    the items indexed, then L2-normalised; IDF is taken when the matrix is rebuilt, which
    :meth:`similar` does lazily after changes.

    Parameters
    ----------
    dim
        Hash buckets.

    Examples
    --------
    >>> index = ContentIndex()
    >>> index.upsert({
    ...     "alien": {"categories": ["sci-fi"], "properties": {"title": "Alien"}},
    ...     "aliens": {"categories": ["sci-fi"], "properties": {"title": "Aliens: the return"}},
    ...     "heat": {"categories": ["crime"], "properties": {"title": "Heat"}},
    ... })
    >>> [item for item, _ in index.similar("aliens", 2)]
    ['alien']
    >>> index.upsert({"heat": None})
    >>> index.documents(), index.holds("heat")
    (2, False)
    """

    def __init__(self, dim: int = 1 << 18) -> None:
        self.dim = dim
        self._rows: dict[ItemId, int] = {}
        self._present: set[ItemId] = set()  # items with a document (a deleted one keeps its row)
        self._ids: list[ItemId] = []
        self._terms: list[dict[int, float]] = []  # per row: bucket -> 1 + log tf
        self._df: Counter[int] = Counter()
        self._matrix: sparse.csr_matrix | None = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._rows

    def documents(self) -> int:
        """How many items have a document (the catalog's size as indexed)."""
        return len(self._present)

    def holds(self, item_id: ItemId) -> bool:
        """Whether ``item_id`` has a document (was put and not deleted since)."""
        return item_id in self._present

    def upsert(self, documents: Mapping[ItemId, Mapping[str, Any] | None]) -> None:
        """Add or replace items; a ``None`` document removes the item's terms."""
        with self._lock:
            for item_id, document in documents.items():
                if document is None:
                    self._present.discard(item_id)
                else:
                    self._present.add(item_id)
                weights: dict[int, float] = {}
                if document is not None:
                    for term, count in features(document).items():
                        b = bucket(term, self.dim)
                        weights[b] = weights.get(b, 0.0) + 1.0 + math.log(count)
                row = self._rows.get(item_id)
                if row is None:
                    row = self._rows[item_id] = len(self._ids)
                    self._ids.append(item_id)
                    self._terms.append({})
                elif self._terms[row] == weights:
                    continue  # read again, not changed: keep the built matrix
                self._df.subtract(self._terms[row].keys())
                self._df.update(weights.keys())
                self._terms[row] = weights
                self._matrix = None

    def _built(self) -> sparse.csr_matrix:
        with self._lock:
            if self._matrix is not None:
                return self._matrix
            n = len(self._ids)
            indptr, indices, data = [0], [], []
            for weights in self._terms:
                for b, tf in weights.items():
                    indices.append(b)
                    data.append(tf * (math.log((1 + n) / (1 + self._df[b])) + 1.0))
                indptr.append(len(indices))
            matrix = sparse.csr_matrix(
                (np.asarray(data, np.float32), np.asarray(indices, np.int64), indptr),
                shape=(n, self.dim))
            norms = np.sqrt(matrix.multiply(matrix).sum(axis=1)).A1
            norms[norms == 0] = 1.0
            self._matrix = sparse.csr_matrix(sparse.diags(1.0 / norms) @ matrix)
            return self._matrix

    def similar(self, item_id: ItemId, k: int, exclude: Iterable[ItemId] = (),
                among: Sequence[ItemId] | None = None) -> list[Scored]:
        """The ``k`` items most like ``item_id`` by content (cosine > 0), best first;
        ``among`` restricts the candidates."""
        row = self._rows.get(item_id)
        if row is None or k <= 0:
            return []
        matrix = self._built()
        scores = (matrix @ matrix[row].T).toarray().ravel()
        scores[row] = 0.0
        banned = set(exclude)
        if among is not None:
            allowed = np.zeros(len(scores), bool)
            allowed[[self._rows[i] for i in among if i in self._rows]] = True
            scores[~allowed] = 0.0
        candidates = np.flatnonzero(scores > 0)
        if len(candidates) > k + len(banned):
            keep = k + len(banned)
            candidates = candidates[np.argpartition(-scores[candidates], keep - 1)[:keep]]
        ranked = sorted(((self._ids[r], float(scores[r])) for r in candidates),
                        key=lambda pair: (-pair[1], pair[0]))
        return [(item, score) for item, score in ranked if item not in banned][:k]
