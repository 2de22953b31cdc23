"""``streamrec import`` of MovieLens ratings and of Amazon Personalize interactions into
real Kafka, through a real worker, into Redis: a rating at or above the threshold is a
positive, one below is a film seen."""

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
    ratings_dat = tmp_path / "ratings.dat"  # MovieLens 1M and 10M
    ratings_dat.write_text(f"{run}-4::1193::5::978300760\n{run}-4::661\n")
    interactions = tmp_path / "interactions.csv"  # recognised by its header
    interactions.write_text("USER_ID,ITEM_ID,TIMESTAMP,EVENT_TYPE,IMPRESSION,DEVICE\n"
                            f"{run}-5,sku-1,1700000000,Purchase,sku-1|sku-2,tv\n"
                            f"{run}-5,sku-2,1700000060,,,\n"
                            f"{run}-5,sku-3,1700000120,Watch,,\n")
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
        imported = streamrec(str(ratings_dat))
        assert "2 rows read, 1 sent (acknowledged by Kafka), 1 rejected" in imported.stdout
        assert "line 2: row: 2 '::'-separated fields" in imported.stdout
        imported = streamrec(str(interactions))
        assert "3 rows read, 2 sent (acknowledged by Kafka), 1 rejected" in imported.stdout
        assert "line 4: event_type: 'Watch' is not one of" in imported.stdout

        client = redis.Redis.from_url(services["redis_url"])
        store = RedisStore(client, names["redis_prefix"])
        deadline = time.monotonic() + 60
        while store.events_applied() < 6 and time.monotonic() < deadline:
            time.sleep(0.2)
        # Times are the files' own; the 2.0 is kept as seen (negative), not as a positive.
        assert store.history(f"{run}-1", 10) == [("31", 1_260_759_144.0),
                                                 ("1029", -1_260_759_179.0)]
        assert store.history(f"{run}-3", 10) == [("242", 881_250_949.0)]
        assert store.history(f"{run}-4", 10) == [("1193", 978_300_760.0)]
        # Personalize's "Purchase" is streamrec's purchase; a row without a type a view.
        assert store.history(f"{run}-5", 10) == [("sku-2", 1_700_000_060.0),
                                                 ("sku-1", 1_700_000_000.0)]
        assert store.interaction_types(f"{run}-5") == {"sku-1": {"purchase"},
                                                      "sku-2": {"view"}}
        client.close()
