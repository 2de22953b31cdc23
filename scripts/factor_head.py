"""How much of a catalog an MF list must score: the head's reach (recommender.mf._Head).

For sampled users, the share of items whose Cauchy-Schwarz bound (the user's length times
the item's) reaches the user's n-th best score among unseen items: only those can be in
the top n, so a head of the longest columns at least that share long answers for the user.
Over a ``scripts/serving_reads.py fill`` state in Redis, or over an engine that learned a
ratings file in memory (MovieLens ``ratings.csv``, ``u.data``, ``ratings.dat``):

    .venv/bin/python scripts/factor_head.py redis://127.0.0.1:46379/0
    .venv/bin/python scripts/factor_head.py ../shared/data/ml-latest-small/ratings.csv
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np

from recommender.base import Interaction
from recommender.engine import Engine
from recommender.hyperparameters import EngineConfig
from recommender.store import InMemoryStore
from streamrec.data import datasets
from streamrec.settings import Settings
from streamrec.wiring import Wiring


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="a Redis URL, or a ratings file")
    parser.add_argument("--prefix", default="reads")
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 210, 410])
    arguments = parser.parse_args()
    if arguments.source.startswith(("redis://", "rediss://", "unix://")):
        engine = Wiring.connect(Settings(redis_url=arguments.source,
                                         redis_prefix=arguments.prefix)).engine()
        users = [f"user-{n}" for n in range(20_000)]
    else:
        engine, users = learned(Path(arguments.source))
    engine.refresh()
    index = engine.item_index
    columns = index._columns[:, :len(index)]
    lengths = np.sqrt(np.einsum("ij,ij->j", columns, columns))
    print(f"{len(index):,} items; item lengths p50 {np.median(lengths):.3f}, "
          f"p90 {np.percentile(lengths, 90):.3f}, max {lengths.max():.3f}")
    sample = random.Random(1).sample(users, min(arguments.users, len(users)))
    for size in arguments.sizes:
        shares = []
        for user in sample:
            first = engine.store.first_read(user, engine.config.history_length)
            if first.vector is None:
                continue
            vector = first.vector.astype(np.float32)
            scores = vector @ columns
            scores[[index._rows[item] for item, _ in first.history
                     if item in index._rows]] = -np.inf
            finite = scores[np.isfinite(scores)]
            if len(finite) < size:
                continue
            nth = np.partition(finite, len(finite) - size)[len(finite) - size]
            shares.append(float((np.linalg.norm(vector) * lengths >= nth).mean()))
        print(f"top {size}: {len(shares)} users; share of the catalog to score: "
              f"p50 {np.median(shares):.2%}, p90 {np.percentile(shares, 90):.2%}, "
              f"max {max(shares):.2%}")


def learned(path: Path) -> tuple[Engine, list[str]]:
    weights = Settings().weights()
    events = [Interaction(e.user_id, e.item_id, e.timestamp, weights.weight(e.event_type,
                                                                            e.value),
                          e.event_type)
              for e in sorted(datasets.read(path, None, weights), key=lambda e: e.timestamp)]
    engine = Engine(InMemoryStore(), EngineConfig())
    for start in range(0, len(events), 1000):
        engine.learn_many(events[start:start + 1000])
    return engine, sorted({event.user_id for event in events})


if __name__ == "__main__":
    main()
