"""``streamrec import`` of MovieLens ratings into real Kafka, through a real worker, into
Redis: a rating at or above the threshold is a positive, one below is a film seen."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import pytest
import redis

from streamrec.storage.state_store import RedisStore
from tests.conftest import own_worker

pytestmark = pytest.mark.integration


def test_movielens_ratings_reach_the_state_and_bad_rows_are_named(services, worker_env,
                                                                    tmp_path):
    run = uuid.uuid4().hex[:8]
    ratings = tmp_path / "ratings.csv"
    ratings.write_text("userId,movieId,rating,timestamp\n"
                       f"{run}-1,31,4.5,1260759144\n"
                       f"{run}-1,1029,2.0,1260759179\n"
                       f"{run}-2,31,five,1260759179\n")
    u_data = tmp_path / "u.data"  # recognised by its name
    u_data.write_text(f"{run}-3\t242\t5\t881250949\n{run}-3\t302\n")
    with own_worker(services, worker_env) as names:
        env = dict(worker_env, **{f"STREAMREC_{k.upper()}": v for k, v in names.items()})

        def streamrec(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, "-m", "streamrec.cli", "import", *args],
                                  env=env, capture_output=True, text=True, timeout=120)

        imported = streamrec(str(ratings), "--format", "movielens-ratings")
        assert imported.returncode == 1, imported.stderr
        assert "3 rows read, 2 sent (acknowledged by Kafka), 1 rejected" in imported.stdout
        assert "line 4: rating: 'five' is not a number" in imported.stdout
        imported = streamrec(str(u_data))
        assert "2 rows read, 1 sent (acknowledged by Kafka), 1 rejected" in imported.stdout
        assert "line 2: row: 2 tab-separated fields" in imported.stdout

        client = redis.Redis.from_url(services["redis_url"])
        store = RedisStore(client, names["redis_prefix"])
        deadline = time.monotonic() + 60
        while store.events_applied() < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        # Times are the files' own; the 2.0 is kept as seen (negative), not as a positive.
        assert store.history(f"{run}-1", 10) == [("31", 1_260_759_144.0),
                                                 ("1029", -1_260_759_179.0)]
        assert store.history(f"{run}-3", 10) == [("242", 881_250_949.0)]
        client.close()
