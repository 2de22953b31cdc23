"""``streamrec lists`` against real Redis (and Kafka for the topic path): an import with
bad rows, an app's own sets, a swap under load answered from one set or the other, an
import killed midway leaving the served set alone, lists streamed through a topic."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import orjson
import pytest
import redis

from streamrec.settings import Settings
from streamrec.wiring import Wiring
from tests.factories import list_rows, personalize_row
from tests.integration.test_import_export import streamrec, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def lists_env(services, worker_env):
    """The CLI's environment on a prefix of its own, and a wiring on it."""
    run = f"ls{uuid.uuid4().hex[:8]}"
    env = dict(worker_env, STREAMREC_REDIS_PREFIX=run, STREAMREC_LISTS_GRACE_SECONDS="1",
               STREAMREC_LISTS_REFRESH_SECONDS="0.2")
    settings = Settings(redis_url=services["redis_url"], kafka_bootstrap=services["bootstrap"],
                        redis_prefix=run, lists_grace_seconds=1, lists_refresh_seconds=0.2)
    wiring = Wiring.connect(settings)
    yield env, wiring
    wiring.close()


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_bytes(b"\n".join(orjson.dumps(row) for row in rows) + b"\n")
    return path


def served(wiring: Wiring, user: str, k: int = 5, model: str = "lists:nightly"):
    result = wiring.engine().recommend(user, k, time.time(), model=model)
    return result.model, [item for item, _ in result.items]


def test_an_import_with_bad_rows_says_which_and_serves_the_rest(lists_env, tmp_path):
    env, wiring = lists_env
    path = tmp_path / "batch-out.json.out"
    path.write_text("\n".join([
        orjson.dumps(personalize_row("ann", ("tea", "cup", "pot"), (0.9, 0.5, 0.1))).decode(),
        orjson.dumps(personalize_row("bob", ("cup",), (0.9, 0.5))).decode(),
        '{"input": {"userId": "cat"}, "error": "User not found"}',
        "{broken",
        orjson.dumps(personalize_row("ann", ("pot",))).decode(),
        orjson.dumps(personalize_row("dan", ("cup", "tea"))).decode(),
    ]) + "\n")
    done = streamrec(env, "lists", "import", "nightly", str(path), "--fallback", "popular")
    assert done.returncode == 0, done.stderr
    assert ("lists nightly: 6 rows read, 2 user lists and 0 item lists accepted (3 items), "
            "4 rejected") in done.stdout
    for line in ("1 rejected: scores: 2 for 1 items (line 2)",
                 "1 rejected: error: User not found (line 3)",
                 "1 rejected: not JSON (line 4)",
                 "1 rejected: duplicate: listed on an earlier line, which wins (line 5)"):
        assert line in done.stdout
    assert served(wiring, "ann") == ("lists:nightly", ["tea", "cup", "pot"])
    assert served(wiring, "dan") == ("lists:nightly", ["cup", "tea"])
    assert served(wiring, "nobody")[0] == "popular"  # the set's fallback

    card = wiring.list_sets().card("nightly")
    assert card["kind"] == "imported" and card["lineage"]["file"] == path.name
    assert card["lineage"]["format"] == "personalize" and card["counts"]["rejected"] == 4
    assert len(card["lineage"]["sha256"]) == 64 and card["offline"] is None
    assert orjson.loads(streamrec(env, "lists", "show", "nightly").stdout)["users"] == 2

    nothing = write_jsonl(tmp_path / "bad.jsonl", [{"user_id": 1, "items": ["a"]}])
    refused = streamrec(env, "lists", "import", "nightly", str(nothing))
    assert refused.returncode == 1 and "no row was accepted; nothing changed" in refused.stderr
    assert served(wiring, "ann")[1] == ["tea", "cup", "pot"]  # still the first set

    assert streamrec(env, "lists", "delete", "nightly").returncode == 0
    assert wiring.list_sets().all() == {} and wiring.list_sets().card("nightly") is None
    client = wiring.client
    assert not list(client.scan_iter(match=f"{wiring.settings.redis_prefix}:lrows:*"))


def test_an_apps_sets_are_its_own(lists_env, tmp_path):
    env, wiring = lists_env
    assert streamrec(env, "apps", "create", "shop").returncode == 0
    path = write_jsonl(tmp_path / "shop.jsonl", list_rows(["ann"], ["tea", "cup", "pot"], k=2))
    done = streamrec(env, "lists", "import", "nightly", str(path), "--app", "shop")
    assert done.returncode == 0, done.stderr
    shop = wiring.for_app("shop")
    assert served(shop, "ann") == ("lists:nightly", ["tea", "cup"])
    assert wiring.list_sets().all() == {}  # default has no set
    listed = streamrec(env, "lists", "list", "--app", "shop").stdout
    assert "lists:nightly" in listed and "1 users" in listed
    gone = streamrec(env, "lists", "delete", "nightly")  # default's, not shop's
    assert gone.returncode == 1 and "no set named 'nightly'" in gone.stderr


def test_a_swap_under_load_answers_from_one_set_or_the_other(lists_env, tmp_path):
    env, wiring = lists_env
    users = [f"u{n}" for n in range(2000)]
    items = [f"i{n}" for n in range(300)]
    first = {row["user_id"]: row["items"] for row in list_rows(users, items, start=0)}
    second = {row["user_id"]: row["items"] for row in list_rows(users, items, start=100)}
    sets = wiring.list_sets()
    from streamrec import lists

    lists.import_file(sets, "nightly", write_jsonl(tmp_path / "a.jsonl",
                                                   list_rows(users, items, start=0)))
    path_b = write_jsonl(tmp_path / "b.jsonl", list_rows(users, items, start=100))
    answers: list[tuple[str, str, list[str]]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def ask(seed: int) -> None:
        engine, rng = Wiring(wiring.settings, wiring.client).engine(), random.Random(seed)
        while not stop.is_set():
            user = rng.choice(users)
            try:
                result = engine.recommend(user, 5, time.time(), model="lists:nightly")
            except BaseException as error:  # noqa: BLE001 - every failure is the finding
                errors.append(error)
                return
            answers.append((user, result.model, [item for item, _ in result.items]))

    threads = [threading.Thread(target=ask, args=(seed,)) for seed in range(2)]
    for thread in threads:
        thread.start()
    try:
        swapped = streamrec(env, "lists", "import", "nightly", str(path_b))
        assert swapped.returncode == 0, swapped.stderr
        time.sleep(0.5)  # answers after the switch, from every thread's refreshed pointer
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    assert not errors
    assert all(model == "lists:nightly" for _, model, _ in answers)
    mixed = [(user, got) for user, _, got in answers if got not in (first[user], second[user])]
    assert not mixed
    from_b = [user for user, _, got in answers if got == second[user]]
    print(f"\n{len(answers):,} answers during the swap, {len(from_b):,} from the new set")
    assert from_b and len(from_b) < len(answers)
    assert answers[-1][2] == second[answers[-1][0]]
    assert sets.leftovers("nightly") == []  # the old generation is gone after its grace


def test_an_import_killed_midway_leaves_the_served_set_and_is_cleaned_next_time(
        lists_env, tmp_path):
    env, wiring = lists_env
    sets = wiring.list_sets()
    write_jsonl(tmp_path / "small.jsonl", list_rows(["ann"], ["tea", "cup", "pot"], k=2))
    assert streamrec(env, "lists", "import", "nightly", str(tmp_path / "small.jsonl")
                     ).returncode == 0
    big = tmp_path / "big.jsonl"
    with big.open("wb") as file:
        for n in range(300_000):
            file.write(orjson.dumps({"user_id": f"u{n}", "items": ["a", "b", "c"]}) + b"\n")
    process = subprocess.Popen([sys.executable, "-m", "streamrec.cli", "lists", "import",
                                "nightly", str(big)], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        def writing() -> list:
            left = sets.leftovers("nightly")
            return [generation for generation, _ in left
                    if wiring.client.hlen(sets.rows_key("nightly", generation, "u0"))]

        partial = wait_for(writing, timeout=60)
        assert partial, "the import wrote nothing within a minute"
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
    assert served(wiring, "ann") == ("lists:nightly", ["tea", "cup"])
    # Not in the served set: its fallback, hybrid, which gives a user nobody knows popular.
    assert served(wiring, "u5")[0] == "popular"
    assert [state["state"] for _, state in sets.leftovers("nightly")] == ["writing"]

    again = streamrec(env, "lists", "import", "nightly", str(tmp_path / "small.jsonl"))
    assert again.returncode == 0, again.stderr
    assert sets.leftovers("nightly") == []
    assert not wiring.client.exists(sets.rows_key("nightly", partial[0], "u0"))


def test_lists_streamed_through_a_topic_until_the_end_marker(lists_env, services):
    env, wiring = lists_env
    topic = f"{wiring.settings.redis_prefix}.lists"

    async def produce() -> None:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=services["bootstrap"], acks="all")
        await producer.start()
        try:
            # Over two partitions: the marker ends both (the other up to where it stood).
            for partition, row in ((1, personalize_row("ann", ("tea", "cup"))),
                                   (0, personalize_row("bob", ("pot",))),
                                   (1, {"input": {"userId": "cat"}, "error": "no model"}),
                                   (0, {"end": True}), (0, personalize_row("late", ("pot",)))):
                await producer.send_and_wait(topic, orjson.dumps(row), partition=partition)
        finally:
            await producer.stop()

    asyncio.run(produce())
    done = streamrec(env, "lists", "import", "nightly", "--topic", topic, "--timeout", "60")
    assert done.returncode == 0, done.stderr
    # Records of several partitions: numbered in the order they were read.
    assert "3 rows read, 2 user lists" in done.stdout and "error: no model (line" in done.stdout
    assert served(wiring, "ann") == ("lists:nightly", ["tea", "cup"])
    assert served(wiring, "late")[0] != "lists:nightly"  # after the end marker
    card = wiring.list_sets().card("nightly")
    assert card["lineage"]["topic"] == topic and card["lineage"]["offsets"]

    until_end = streamrec(env, "lists", "import", "nightly", "--topic", topic, "--until-end")
    assert until_end.returncode == 0, until_end.stderr
    assert served(wiring, "late") == ("lists:nightly", ["pot"])
    client = redis.Redis.from_url(services["redis_url"])
    assert client.hlen(f"{wiring.settings.redis_prefix}:lists") == 1


def test_a_set_spreads_over_a_redis_cluster_and_switches_in_one_slot(redis_cluster, tmp_path):
    from streamrec import lists
    from streamrec.storage import keys

    settings = Settings(redis_url=redis_cluster, redis_cluster=True,
                        redis_prefix=f"ls{uuid.uuid4().hex[:8]}", lists_grace_seconds=0)
    wiring = Wiring.connect(settings)
    try:
        sets = wiring.list_sets()
        users = [f"u{n}" for n in range(200)]
        first = lists.import_file(sets, "nightly", write_jsonl(
            tmp_path / "a.jsonl", list_rows(users, [f"i{n}" for n in range(50)])))
        second = lists.import_file(sets, "nightly", write_jsonl(
            tmp_path / "b.jsonl", list_rows(users, [f"i{n}" for n in range(50)], start=7)))
        assert second.previous == first.generation
        sets.retire("nightly", first.generation, wait=False)
        assert served(wiring, "u3") == ("lists:nightly", [f"i{n}" for n in range(10, 15)])
        slots = {wiring.client.keyslot(sets.rows_key("nightly", second.generation, f"u{n}"))
                 for n in range(keys.SHARDS)}
        assert len(slots) == keys.SHARDS  # a bucket per slot, spread over the nodes
        assert sets.leftovers("nightly") == []
        assert sets.delete("nightly") and sets.all() == {} and sets.card("nightly") is None
        assert not any(wiring.client.exists(sets.rows_key("nightly", second.generation, f"u{n}"))
                       for n in range(keys.SHARDS))
    finally:
        wiring.close()
