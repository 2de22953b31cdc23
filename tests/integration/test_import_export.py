"""``streamrec import`` into real Kafka through a real worker into Redis, and ``streamrec
export`` from real Redis: lists equal to the engine's, memory flat in the user count."""

from __future__ import annotations

import random
import subprocess
import sys
import time
import uuid

import orjson
import pytest
import redis

from recommender.allocation import Allocator, Placement
from recommender.base import MODELS, Interaction
from recommender.engine import Engine
from recommender.store import StateUpdate
from schemas.models import Item, User
from streamrec.data import export as exporting
from streamrec.settings import Settings
from streamrec.storage.feedback_store import RedisFeedback
from streamrec.storage.filter_definitions import RedisFilters
from streamrec.storage.model_versions import Version, Versions, state_prefix, version_settings
from streamrec.storage.state_store import RedisStore
from tests.conftest import own_worker

pytestmark = pytest.mark.integration


def streamrec(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamrec.cli", *args], env=env,
                          capture_output=True, text=True, timeout=300)


def wait_for(check, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while not (result := check()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return result


@pytest.fixture(scope="module")
def pipeline(services, worker_env):
    """A worker of its own; yields the CLI's environment and a store on its prefix."""
    with own_worker(services, worker_env) as names:
        env = dict(worker_env, **{f"STREAMREC_{k.upper()}": v for k, v in names.items()})
        client = redis.Redis.from_url(services["redis_url"])
        yield env, RedisStore(client, names["redis_prefix"])
        client.close()


def test_import_items_csv_sends_the_good_rows_and_names_the_bad(pipeline, tmp_path):
    env, store = pipeline
    items = tmp_path / "items.csv"
    items.write_text("item_id,categories,price,available,properties.colour,properties.size\n"
                     "tea,drinks|hot,3.5,true,green,12\n"
                     "cup,kitchen,-1,true,white,\n"
                     "pot,kitchen,2,maybe,,\n"
                     "jam,food,,no,red,007\n"
                     ",food,1,true,,\n")
    rejects = tmp_path / "rejects.jsonl"
    result = streamrec(env, "import", str(items), "--kind", "items", "--rejects", str(rejects))
    assert result.returncode == 1
    assert "5 rows read, 2 sent (acknowledged by Kafka), 3 rejected" in result.stdout
    assert "line 3: price: Input should be greater than or equal to 0" in result.stdout
    assert "line 4: available: Input should be a valid boolean" in result.stdout
    assert "line 6: item_id: Field required" in result.stdout
    assert "3 rows were rejected" in result.stderr
    written = [orjson.loads(line) for line in rejects.read_bytes().splitlines()]
    assert [(row["line"], row["reason"].split(":")[0]) for row in written] == [
        (3, "price"), (4, "available"), (6, "item_id")]
    assert written[0]["row"]["price"] == "-1"

    assert wait_for(lambda: store.get_item("jam"))
    assert store.get_item("tea") == Item(
        item_id="tea", categories=["drinks", "hot"], price=3.5,
        properties={"colour": "green", "size": 12.0}).model_dump(mode="json")
    assert store.get_item("jam") == Item(
        item_id="jam", categories=["food"], available=False,
        properties={"colour": "red", "size": "007"}).model_dump(mode="json")
    assert store.get_item("cup") is None and store.get_item("pot") is None


def test_import_events_jsonl_and_users_reach_the_state(pipeline, tmp_path):
    env, store = pipeline
    run = uuid.uuid4().hex[:6]
    good = [{"user_id": f"{run}-ann", "item_id": "tea", "event_type": "view"},
            {"user_id": f"{run}-ann", "item_id": "cup", "event_type": "click",
             "timestamp": 1_750_000_000},
            {"user_id": f"{run}-bob", "item_id": "tea", "event_type": "purchase",
             "timestamp": "2025-06-15T15:06:40+00:00", "context": {"device": "mobile"}}]
    lines = [orjson.dumps(good[0]).decode(), "",
             orjson.dumps({**good[0], "event_type": "teleport"}).decode(),
             orjson.dumps(good[1]).decode(),
             '{"user_id": "x", "item_id": "tea"',
             orjson.dumps({**good[1], "timestamp": 1_750_000_000_000}).decode(),
             orjson.dumps(good[2]).decode()]
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(lines) + "\n")
    before = store.events_applied()
    result = streamrec(env, "import", str(events))
    assert result.returncode == 1
    assert "6 rows read, 3 sent (acknowledged by Kafka), 3 rejected" in result.stdout
    assert "line 3: event_type: 'teleport' is not one of" in result.stdout
    assert "line 5: body: Invalid JSON" in result.stdout
    assert "line 6: timestamp:" in result.stdout
    assert wait_for(lambda: store.events_applied() >= before + 3)
    assert store.events_applied() == before + 3
    assert {item for item, _ in store.history(f"{run}-ann", 10)} == {"tea", "cup"}
    assert store.history(f"{run}-bob", 10) == [("tea", 1_750_000_000.0)]  # the RFC 3339 time

    users = tmp_path / "users.csv"
    users.write_text(f"user_id,properties.tier,properties.vip\n{run}-ann,gold,true\n")
    result = streamrec(env, "import", str(users), "--kind", "users")
    assert result.returncode == 0, result.stderr
    assert "1 rows read, 1 sent" in result.stdout
    assert wait_for(lambda: store.get_user(f"{run}-ann")) == User(
        user_id=f"{run}-ann", properties={"tier": "gold", "vip": True}).model_dump(mode="json")


def test_import_movielens_movies(pipeline, tmp_path):
    env, store = pipeline
    movies = tmp_path / "movies.csv"
    movies.write_text('movieId,title,genres\n'
                      'ml-1,Toy Story (1995),Adventure|Animation|Children\n'
                      'ml-2,"American President, The (1995)",Comedy|Drama|Romance\n'
                      'ml-3,Some Documentary (2015),(no genres listed)\n')
    result = streamrec(env, "import", str(movies), "--format", "movielens-movies")
    assert result.returncode == 0, result.stderr
    assert "3 rows read, 3 sent (acknowledged by Kafka), 0 rejected" in result.stdout
    assert wait_for(lambda: store.get_item("ml-3"))
    assert store.item_categories(["ml-1", "ml-2", "ml-3"]) == {
        "ml-1": ["Adventure", "Animation", "Children"], "ml-2": ["Comedy", "Drama", "Romance"],
        "ml-3": []}
    assert store.get_item("ml-2")["properties"] == {"title": "American President, The (1995)"}
    # The movies.dat of MovieLens 1M (Latin-1), recognised by its name, as items.
    dat = tmp_path / "movies.dat"
    dat.write_bytes("ml-4::Misérables, Les (1995)::Drama|Musical\n".encode("latin-1"))
    result = streamrec(env, "import", str(dat))
    assert result.returncode == 0, result.stderr
    assert "1 rows read, 1 sent (acknowledged by Kafka), 0 rejected" in result.stdout
    assert wait_for(lambda: store.get_item("ml-4"))["properties"] == {
        "title": "Misérables, Les (1995)"}
    assert store.item_categories(["ml-4"]) == {"ml-4": ["Drama", "Musical"]}


def test_import_personalize_items_and_users(pipeline, tmp_path):
    """The items and users datasets a team moving off Amazon Personalize has, recognised
    by their headers, reach the catalog: genres as categories, the rest as properties."""
    env, store = pipeline
    run = uuid.uuid4().hex[:8]
    items = tmp_path / "items.csv"
    items.write_text("ITEM_ID,GENRES,PRICE,CREATION_TIMESTAMP,YEAR\n"
                     f"{run}-i1,Comedy|Drama,9.5,1700000000,1995\n")
    result = streamrec(env, "import", str(items))
    assert result.returncode == 0, result.stderr
    assert "1 rows read, 1 sent (acknowledged by Kafka), 0 rejected" in result.stdout
    item = wait_for(lambda: store.get_item(f"{run}-i1"))
    assert (item["categories"], item["price"], item["created_at"], item["properties"]) == (
        ["Comedy", "Drama"], 9.5, 1_700_000_000.0, {"YEAR": 1995.0})
    users = tmp_path / "users.csv"
    users.write_text(f"USER_ID,MEMBERSHIP\n{run}-u1,gold\n")
    result = streamrec(env, "import", str(users))
    assert result.returncode == 0, result.stderr
    assert wait_for(lambda: store.get_user(f"{run}-u1"))["properties"] == {
        "MEMBERSHIP": "gold"}


def test_import_without_kafka_sends_nothing_and_says_so(worker_env, tmp_path):
    from streamrec.local.services import free_port

    events = tmp_path / "events.jsonl"
    events.write_text('{"user_id": "ann", "item_id": "tea", "event_type": "view"}\n')
    env = dict(worker_env, STREAMREC_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}")
    result = streamrec(env, "import", str(events))
    assert result.returncode == 1
    assert "not reachable" in result.stderr and "nothing was sent" in result.stderr


# Export ---------------------------------------------------------------------------------


def seed(store: RedisStore, users: int, base_users: int = 300, items: int = 1000) -> set[str]:
    """Learned state for ``base_users`` (co-occurrence, popularity, MF factors), then
    ``users`` more users whose three-item histories are written straight through the
    store's apply. Returns every user id with a history."""
    engine = Engine(store, Settings().engine_config())
    rng = random.Random(7)
    learned = [Interaction(f"base-{n % base_users}", f"item-{rng.randrange(items)}",
                           1_800_000_000.0 + n, 1.0) for n in range(10 * base_users)]
    for start in range(0, len(learned), 2000):
        engine.learn_many(learned[start:start + 2000])
    for start in range(0, users, 10_000):
        store.apply(StateUpdate(200, 200, history={
            f"user-{u}": {f"item-{rng.randrange(items)}": 1_800_000_000.0 + j
                          for j in range(3)}
            for u in range(start, min(users, start + 10_000))}))
    return {f"base-{n}" for n in range(base_users)} | {f"user-{u}" for u in range(users)}


def read_lines(path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


@pytest.fixture
def export_settings(services):
    """Settings on a Redis prefix of its own, and a store on it."""
    settings = Settings(redis_url=services["redis_url"],
                        redis_prefix=f"export-{uuid.uuid4().hex[:8]}")
    store = RedisStore.from_url(settings.redis_url, settings.redis_prefix)
    yield settings, store
    store.client.close()


def test_exported_lists_equal_what_the_engine_recommends(export_settings, tmp_path):
    settings, store = export_settings
    seed(store, users=500)
    chosen = [f"base-{n}" for n in range(0, 300, 3)] + [f"user-{n}" for n in range(0, 500, 7)]
    users = chosen + ["nobody-knows-me", "base-0"]  # an unknown user; a repeated one
    users_file = tmp_path / "users.txt"
    users_file.write_text("\n".join(users) + "\n\n")
    engine = Engine(store, settings.engine_config())
    now = time.time()
    for model in MODELS:
        output = tmp_path / f"{model}.jsonl"
        version, report = exporting.run(settings, output, users_file, 10, model, "default",
                                        chunk=64, now=now)
        assert version == "main"
        lines = read_lines(output)
        assert report.users == len(lines) == len(users)
        assert [line["user_id"] for line in lines] == users
        for line in lines:
            expected = engine.recommend(line["user_id"], 10, now, model)
            assert line["model"] == expected.model, line["user_id"]
            assert [(i["item_id"], i["score"]) for i in line["items"]] == expected.items
            assert [i["item_id"] for i in line["items"] if i["backfill"]] == [
                item for item, _ in expected.items if item in expected.backfill]
        assert {line["model"] for line in lines} >= {"popular"}  # the unknown user


def test_export_follows_the_placements_split(export_settings, tmp_path):
    settings, store = export_settings
    everyone = seed(store, users=200, base_users=100)
    config = {"name": "home", "strategy": "split", "variants": [
        {"name": "blend", "model": "hybrid", "weight": 1.0, "params": {"hybrid_popular": 1.0}},
        {"name": "pairs", "model": "cooccurrence", "weight": 1.0}]}
    RedisFeedback(store.client, settings.redis_prefix).put_placement(config, "test", time.time())
    output = tmp_path / "home.jsonl"
    now = time.time()
    exporting.run(settings, output, None, 5, None, "home", chunk=50, now=now)
    lines = read_lines(output)
    assert {line["user_id"] for line in lines} == everyone
    placement = Placement.from_dict(config)
    engine = Engine(store, settings.engine_config())
    for line in lines:
        variant = Allocator().choose(placement, line["user_id"], {})
        assert line["variant"] == variant.name
        expected = engine.recommend(line["user_id"], 5, now, variant.model, variant.params)
        assert [(i["item_id"], i["score"]) for i in line["items"]] == expected.items
    assert {line["variant"] for line in lines} == {"blend", "pairs"}
    # Each exported list's impression logs its decision, as the API's lists do.
    rid = lines[0]["recommendation_id"]
    shown = RedisFeedback(store.client, settings.redis_prefix).impressions([rid])[rid]
    assert shown.decision == {"strategy": "split", "propensity": 0.5, "segment": None,
                              "features": {}, "targeted": None}


def test_export_reads_what_a_targeted_placement_looks_at(export_settings, tmp_path):
    """A placement targeted on a user property chooses per user from their stored
    properties, as the API does: users outside the target get the default variant,
    uncredited; those inside are split."""
    settings, store = export_settings
    everyone = seed(store, users=0, base_users=100)
    inside = {f"base-{n}" for n in range(0, 100, 2)}
    store.put_users((user, {"properties": {"country": "de" if user in inside else "fr"}})
                    for user in everyone)
    config = {"name": "home", "strategy": "split", "target": {"country": ["de"]},
              "default_variant": "pairs", "variants": [
                  {"name": "blend", "model": "hybrid", "weight": 1.0},
                  {"name": "pairs", "model": "cooccurrence", "weight": 1.0}]}
    feedback = RedisFeedback(store.client, settings.redis_prefix)
    feedback.put_placement(config, "test", time.time())
    output = tmp_path / "home.jsonl"
    exporting.run(settings, output, None, 5, None, "home", chunk=30, now=time.time())
    lines = read_lines(output)
    assert {line["user_id"] for line in lines} == everyone
    placement = Placement.from_dict(config)
    for line in lines:
        expected = (Allocator().choose(placement, line["user_id"], {}).name
                    if line["user_id"] in inside else "pairs")
        assert line["variant"] == expected, line["user_id"]
    shown = feedback.impressions([line["recommendation_id"] for line in lines])
    for line in lines:
        impression = shown[line["recommendation_id"]]
        assert impression.allocated == (line["user_id"] in inside)
        assert impression.decision["targeted"] == (line["user_id"] in inside)
    assert {line["variant"] for line in lines if line["user_id"] in inside} == {
        "blend", "pairs"}


def test_export_applies_a_named_filter_and_withdrawn_items(export_settings, tmp_path):
    settings, store = export_settings
    seed(store, users=300, base_users=100, items=200)
    store.put_items([(f"item-{n}", {"item_id": f"item-{n}", "price": float(n % 50),
                                    "available": n % 10 != 0}) for n in range(200)])
    RedisFilters(store.client, settings.redis_prefix).put(
        "cheap", {"expression": "INCLUDE ItemID WHERE Items.price < $MAX_PRICE"})
    users = [f"base-{n}" for n in range(0, 100, 5)] + [f"user-{n}" for n in range(0, 300, 9)]
    users_file = tmp_path / "users.txt"
    users_file.write_text("\n".join(users))
    output = tmp_path / "cheap.jsonl"
    now = time.time()
    exporting.run(settings, output, users_file, 8, "hybrid", "default",
                  filter_name="cheap", filter_values='{"MAX_PRICE": 20}', chunk=16, now=now)
    bound = exporting.bind_filter(store.client, settings, "cheap", '{"MAX_PRICE": 20}')
    engine = Engine(store, settings.engine_config())
    lines = read_lines(output)
    assert [line["user_id"] for line in lines] == users
    for line in lines:
        expected = engine.recommend(line["user_id"], 8, now, "hybrid", None, bound)
        assert [(i["item_id"], i["score"]) for i in line["items"]] == expected.items
        for item in line["items"]:
            number = int(item["item_id"].split("-")[1])
            assert number % 50 < 20 and number % 10 != 0  # cheap, and not withdrawn

    for name, values, message in [("dear", None, "no filter named 'dear'"),
                                  ("cheap", "[20]", "JSON object"),
                                  ("cheap", "{", "not JSON"),
                                  ("cheap", "{}", "MAX_PRICE")]:
        with pytest.raises(exporting.ExportError, match=message):
            exporting.run(settings, output, users_file, 8, "hybrid", "default",
                          filter_name=name, filter_values=values)


def test_export_ranks_with_the_serving_version(export_settings, tmp_path):
    """A version's state lives under its own prefix with its own settings; the export
    follows the serving one (as the API does) unless --version names another."""
    settings, store = export_settings
    seed(store, users=50, base_users=50)
    registry = Versions(store.client, settings.redis_prefix)
    registry.register(Version("v2", {"hybrid_popular": 1.0, "history_length": 2}))
    v2 = RedisStore(store.client, state_prefix(settings.redis_prefix, "v2"),
                    settings.redis_prefix)
    v2.apply(StateUpdate(2, 200, popularity={"v2-only": 1e9}, reference=time.time(),
                         half_life=settings.decay_half_life_seconds,
                         history={"user-1": {f"item-{n}": 1_800_000_000.0 + n
                                             for n in range(3)}}))
    users_file = tmp_path / "users.txt"
    users_file.write_text("user-1\nuser-2\n")
    now = time.time()
    outputs = {}
    for promoted in (False, True):
        if promoted:
            registry.promote("v2", "test")
        output = tmp_path / f"{promoted}.jsonl"
        version, _ = exporting.run(settings, output, users_file, 5, "hybrid", "default",
                                   now=now)
        assert version == ("v2" if promoted else "main")
        outputs[version] = {line["user_id"]: line for line in read_lines(output)}
    engine = Engine(v2, version_settings(settings, registry.get("v2")).engine_config())
    for user in ("user-1", "user-2"):
        expected = engine.recommend(user, 5, now, "hybrid")
        assert [(i["item_id"], i["score"]) for i in outputs["v2"][user]["items"]] == \
            expected.items
    assert outputs["v2"]["user-2"]["items"][0]["item_id"] == "v2-only"
    assert "v2-only" not in {i["item_id"] for i in outputs["main"]["user-2"]["items"]}
    version, _ = exporting.run(settings, tmp_path / "main.jsonl", users_file, 5, "popular",
                               "default", version="main")
    assert version == "main"
    with pytest.raises(exporting.ExportError, match="'v9' does not exist"):
        exporting.run(settings, tmp_path / "v9.jsonl", users_file, 5, None, "default",
                      version="v9")


# The peak RSS of an export process, read as it ends: VmHWM, the high-water mark of this
# process's own memory (getrusage's ru_maxrss would start from the forking test's RSS).
MEASURED_EXPORT = """
import re, sys
from streamrec.cli import main
try:
    main(sys.argv[1:], prog_name="streamrec")
finally:
    status = open("/proc/self/status").read()
    print("peak_rss_kib", re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1), file=sys.stderr)
"""

# A list of the 90,000 more user ids alone would take about 6 MiB; every exported list
# held in memory about 100 MiB.
MEMORY_BOUND_KIB = 4 * 1024


@pytest.mark.timeout(900)
def test_export_memory_does_not_grow_with_the_user_count(services, worker_env, tmp_path):
    """--all-users (a SCAN) over 10,000 and over 100,000 users, through the CLI, in a process
    each: every user exported once, and the peak RSS the same within MEMORY_BOUND_KIB."""
    peaks = {}
    client = redis.Redis.from_url(services["redis_url"])
    for count in (10_000, 100_000):
        prefix = f"export-{count}-{uuid.uuid4().hex[:6]}"
        everyone = seed(RedisStore(client, prefix), users=count)
        output = tmp_path / f"{count}.jsonl"
        env = dict(worker_env, STREAMREC_REDIS_PREFIX=prefix)
        result = subprocess.run(
            [sys.executable, "-c", MEASURED_EXPORT, "export", "--all-users", "--output",
             str(output)], env=env, capture_output=True, text=True, timeout=800)
        assert result.returncode == 0, result.stderr
        print(result.stdout.strip())
        exported = [orjson.loads(line)["user_id"] for line in output.read_bytes().splitlines()]
        # SCAN may repeat a key while Redis resizes its table (other tests write meanwhile).
        assert set(exported) == everyone and len(exported) >= len(everyone)
        peaks[count] = int(result.stderr.rsplit("peak_rss_kib", 1)[1].split()[0])
    client.close()
    print(f"peak RSS: 10k users {peaks[10_000]} KiB, 100k users {peaks[100_000]} KiB")
    assert peaks[100_000] - peaks[10_000] < MEMORY_BOUND_KIB, peaks
