"""``streamrec bench`` runs every stage end to end, prints every target of issue 17 with
PASS or MISS and writes its figures (tiny sizes: this checks that the benchmark works, not
how fast anything is; the figures are in docs/benchmarks.md)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import orjson
import pytest

from streamrec.measure.cpu import descendants

SMALL = ["--events", "3000", "--items", "400", "--users", "300", "--categories", "5",
         "--probes", "5", "--freshness-rate", "100", "--duration", "2", "--connections", "2",
         "--models", "popular,hybrid", "--serve-rates", "50", "--rate-seconds", "2",
         "--target-rate", "50"]


@pytest.mark.parametrize("layout", ["single", "cluster"])
def test_bench_prints_and_writes_every_figure(services, redis_cluster, tmp_path, layout):
    cluster = layout == "cluster"
    env = dict(os.environ, STREAMREC_KAFKA_BOOTSTRAP=services["bootstrap"],
               STREAMREC_REDIS_URL=redis_cluster if cluster else services["redis_url"])
    output = tmp_path / "figures.json"
    argv = [sys.executable, "-m", "streamrec.cli", "bench", *SMALL, "--output", str(output)]
    # One layout times its backlog after a warm-up (an older state), the other from empty.
    layout_argv = ["--redis-cluster"] if cluster else ["--warm-up", "500"]
    done = subprocess.run(argv + layout_argv, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    figures = orjson.loads(output.read_bytes())
    assert figures["redis"] == ("cluster of 3" if cluster else "single")
    assert figures["ingest"]["events"] == 3000
    assert figures["ingest"]["warm_up"] == (0 if cluster else 500)
    if not cluster:
        assert "3000 events after 500 untimed ones" in done.stdout, done.stdout
    assert figures["ingest"]["apply_per_second"] > 0
    assert figures["redis_memory"]["bytes_per_user"] > 0
    assert figures["freshness_ms"]["p99"] > 0
    # Probes start on a schedule; each is asked of the API once Redis holds its user's
    # history, and a user with a history is served their model's list at the first GET.
    assert figures["freshness_probes"] == 5
    assert figures["freshness_polls"] - figures["freshness_polls_shed"] == 5
    # Each probe's start in the stage (0.25 s apart) and latency: the slow ones placed.
    starts = [at for at, _ in figures["freshness_timeline"]]
    assert len(starts) == 5 and starts[0] < 0.1 and starts[-1] >= 1.0, starts
    assert starts == sorted(starts), starts
    assert max(took for _, took in figures["freshness_timeline"]) == pytest.approx(
        figures["freshness_ms"]["max"], abs=0.1)
    assert abs(figures["freshness_started_at"] - time.time()) < 3600
    assert "slowest probes, started s into the stage" in done.stdout, done.stdout
    # The freshness run's events (background and probes) are applied before serving.
    assert "serving is measured from then on" in done.stdout, done.stdout
    for model in ("popular", "hybrid"):
        assert figures["serve"][model]["requests_per_second"] > 0
        assert figures["open_loop"][model][0]["answered"] > 0
    assert "events/s" in done.stdout and "bytes per user" in done.stdout
    # The ceilings the targets are judged against, measured in the same run ...
    assert figures["ingest_ceiling"] > 0
    # Where the ingest's events spent the CPU: the worker's processes (Kafka and Redis are
    # the fixture's here, not the bench's, so they are not read), and the agent's.
    assert set(figures["ingest"]["cpu"]) == {"worker main process", "learning process"}
    assert all(row["us_per_event"] >= 0 for row in figures["ingest"]["cpu"].values())
    assert figures["ingest_ceiling_cpu_us_per_event"] >= 0
    assert "CPU per timed event: " in done.stdout, done.stdout
    assert figures["healthz"]["requests_per_second"] > 0
    # ... and every target printed with its verdict (tiny sizes: the verdicts themselves
    # mean nothing here).
    judged = {target["name"].split(",")[0].split(" at ")[0] for target in figures["targets"]}
    assert judged == {"serving saturation", "open loop p99", "shedding",
                      "ingest vs a do-nothing Faust agent", "freshness p99",
                      "Redis per million users"}, judged
    assert all(target["verdict"] in ("PASS", "MISS") for target in figures["targets"])
    for target in figures["targets"]:
        assert f"{target['name']}: " in done.stdout and target["verdict"] in done.stdout


def _command(pid: int) -> str:
    """The command line, words joined by spaces (redis-server rewrites its own into one
    string: the program and its address)."""
    with contextlib.suppress(FileNotFoundError), open(f"/proc/{pid}/cmdline", "rb") as line:
        return line.read().replace(b"\0", b" ").decode().strip()
    return ""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_bench_and_everything_it_started(services, number):
    """Stopped in its freshness stage (an event loop with producers in flight), the bench
    stops its worker, its API and the Redis it started, removes its temporary directory
    and exits with 128 + the signal, within seconds."""
    env = dict(os.environ, STREAMREC_KAFKA_BOOTSTRAP=services["bootstrap"])
    env.pop("STREAMREC_REDIS_URL", None)  # the bench starts a redis-server of its own
    argv = [sys.executable, "-m", "streamrec.cli", "bench", *SMALL[:8], "--probes", "5000",
            "--freshness-rate", "100", "--models", "popular", "--serve-rates", ""]
    bench = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    started: set[int] = set()
    try:
        for line in bench.stdout:  # the freshness stage starts after the memory line
            if line.startswith("Redis:"):
                break
        else:
            pytest.fail(f"the bench ended early: {bench.wait()}: {bench.stderr.read()}")
        time.sleep(2)
        started = descendants(bench.pid)
        commands = {pid: _command(pid) for pid in started}
        for role in ("redis-server", "streamrec.cli worker", "streamrec.cli api"):
            assert any(role in command for command in commands.values()), commands
        # The run's temporary directory: redis-server works in its redis/ directory.
        redis_pid = next(pid for pid, command in commands.items() if "redis-server" in command)
        run_dir = os.path.dirname(os.readlink(f"/proc/{redis_pid}/cwd"))
        assert os.path.basename(run_dir).startswith("streamrec-bench-"), run_dir
        bench.send_signal(number)
        assert bench.wait(timeout=40) == 128 + number
        assert f"bench: {number.name}; stopping what it started" in bench.stderr.read()
        deadline = time.monotonic() + 10
        while any(map(_alive, started)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in started if _alive(pid)]
        assert not os.path.exists(run_dir)
    finally:
        if bench.poll() is None:
            bench.kill()
        for pid in descendants(bench.pid) | started:  # what a failed stop left behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
