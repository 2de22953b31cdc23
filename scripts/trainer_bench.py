"""The trainer's time and memory at 100k items: one cycle's training (held-back fit and
metrics, then the fit on everything) of iALS over every item and of EASE over its
``STREAMREC_TRAINER_EASE_ITEMS``, on a synthetic log, beside numpy's raw cost for the same
N (the ceiling: EASE's Gram matrix and inversion; iALS's Gram and the users' solves of
one sweep, batched) and the ratio.

    .venv/bin/python scripts/trainer_bench.py --events 2000000 --items 100000 --users 50000

Prints one line per figure (docs/trainer.md quotes them).
"""

from __future__ import annotations

import argparse
import gc
import resource
import time

import numpy as np

from recommender.base import Interaction
from recommender.batch_models import TrainingData, dense_ceiling
from streamrec.settings import Settings
from streams.trainer import train


def synthetic(events: int, items: int, users: int, seed: int = 0) -> list[Interaction]:
    """Users in 100 taste groups, each group's items drawn Zipf-like from its own slice
    of the catalog (a few popular, a long tail), one event a second."""
    rng = np.random.default_rng(seed)
    groups = 100
    slice_size = items // groups
    user = rng.integers(0, users, events)
    rank = np.minimum(rng.zipf(1.3, events) - 1, slice_size - 1)
    item = (user % groups) * slice_size + rank
    # a fifth of the events anywhere in the catalog: tastes are not pure
    wander = rng.random(events) < 0.2
    item[wander] = rng.integers(0, items, int(wander.sum()))
    return [Interaction(f"u{u}", f"i{i}", float(t), 1.0)
            for t, (u, i) in enumerate(zip(user.tolist(), item.tolist(), strict=True))]


def raw_ease(data: TrainingData, regularization: float) -> float:
    started = time.perf_counter()
    gram = (data.matrix.T @ data.matrix).toarray().astype(np.float32)
    gram[np.diag_indices_from(gram)] += regularization
    np.linalg.inv(gram)
    return time.perf_counter() - started


def raw_ials_sweep(data: TrainingData, factors: int, iterations: int) -> float:
    """numpy's cost of ``iterations`` ALS sweeps reduced to their dense core: the Gram
    of each side's factors and one batched solve of every user's and item's system."""
    rng = np.random.default_rng(0)
    users, items = data.matrix.shape
    x = rng.random((users, factors), np.float32)
    y = rng.random((items, factors), np.float32)
    started = time.perf_counter()
    for _ in range(iterations):
        for mine, other in ((x, y), (y, x)):
            gram = other.T @ other + np.eye(factors, dtype=np.float32)
            rhs = (data.matrix @ y) if mine is x else (data.matrix.T @ x)
            mine[:] = np.linalg.solve(gram, rhs.T).T
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--models", default="ials,ease")
    args = parser.parse_args()
    settings = Settings()
    started = time.perf_counter()
    log = synthetic(args.events, args.items, args.users)
    print(f"log: {len(log):,} events, {args.users:,} users, {args.items:,} items "
          f"(made in {time.perf_counter() - started:.1f} s)")
    for model in args.models.split(","):
        cap = settings.trainer_item_cap(model)
        started = time.perf_counter()
        run, made = train(model, log, settings)
        cycle = time.perf_counter() - started
        offline = made["offline"] or {}
        print(f"{model}: N={made['items']:,} items (cap {cap:,}), {made['users']:,} users; "
              f"cycle {cycle:.1f} s (held-back fit + metrics + full fit), full fit "
              f"{made['training_seconds']:.1f} s, peak traced memory "
              f"{made['peak_memory_bytes'] / 1e6:,.0f} MB, artifact "
              f"{sum(a.nbytes for a in run.arrays().values()) / 1e6:,.1f} MB; "
              f"Recall@10 {offline.get('recall@10', float('nan')):.4f} "
              f"NDCG@10 {offline.get('ndcg@10', float('nan')):.4f} on "
              f"{offline.get('events', 0):,} held-back events")
        data = TrainingData.of(log, cap)
        if model == "ease":
            raw = raw_ease(data, settings.trainer_ease_regularization)
            print(f"ease ceiling: numpy Gram + float32 inverse at N={len(data.items):,}: "
                  f"{raw:.1f} s; full fit / raw = {made['training_seconds'] / raw:.2f}; "
                  f"EASE at N={args.items:,} would need "
                  f"{dense_ceiling(args.items) / 1e9:,.0f} GB for its dense matrix alone")
        else:
            raw = raw_ials_sweep(data, settings.trainer_ials_factors,
                                 settings.trainer_ials_iterations)
            print(f"ials ceiling: numpy's dense core of {settings.trainer_ials_iterations} "
                  f"sweeps at N={len(data.items):,}: {raw:.1f} s; full fit / raw = "
                  f"{made['training_seconds'] / raw:.2f}")
        del run, data
        gc.collect()
    print(f"process peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3:,.0f}"
          " MB")


if __name__ == "__main__":
    main()
