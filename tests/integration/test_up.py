"""``streamrec up`` as a user runs it: it picks a free API port when 8000 is taken (and says
which), keeps every file under --run-dir (the worker's Faust data too), stops everything
it started within its bound of SIGTERM even with a hung role, and whichever stage fails
(a port, Kafka, the API, the worker) stops what it had started and says what failed."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from streamrec.local.up import DEFAULT_API_PORT
from streamrec.shutdown import UP_STOP_SECONDS
from tests.api.conftest import wait_for

STAGE_SECONDS = 240  # Kafka's start on a busy machine, then the roles'


def _leftovers(run_dir: Path) -> dict[int, bytes]:
    """The live processes of the stack under ``run_dir`` and their command lines: found by
    command line, environment or working directory (redis-server rewrites its command
    line)."""
    found = {}
    marker = str(run_dir)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes()
            mentions = marker.encode() in cmdline + (entry / "environ").read_bytes()
            zombie = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
            if (mentions or os.readlink(entry / "cwd").startswith(marker)) and not zombie:
                found[int(entry.name)] = cmdline.replace(b"\0", b" ")[:160]
    return found


def _env(**settings: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("STREAMREC_")}
    return env | {f"STREAMREC_{name.upper()}": value for name, value in settings.items()}


def _topics(run: str) -> dict[str, str]:
    return {"events_topic": f"{run}.events", "dead_letter_topic": f"{run}.dlq",
            "items_topic": f"{run}.items", "users_topic": f"{run}.users",
            "impressions_topic": f"{run}.impressions", "metrics_topic": f"{run}.metrics",
            "redis_prefix": run, "worker_id": run}


def _up(run_dir: Path, env: dict[str, str], cwd: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "streamrec.cli", "up", "--run-dir",
                             str(run_dir), "--rate", "20", *args], env=env, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _kill_leftovers(run_dir: Path) -> None:
    """What a failed test leaves must not run on: kill it."""
    for pid in _leftovers(run_dir):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def _fails(run_dir: Path, env: dict[str, str], cwd: Path, *args: str) -> str:
    """Run up to its failure; returns what it printed once nothing of it is left."""
    up = _up(run_dir, env, cwd, *args)
    try:
        output, _ = up.communicate(timeout=STAGE_SECONDS)
        assert up.returncode == 1, output
        assert wait_for(lambda: not _leftovers(run_dir), timeout=5), (_leftovers(run_dir),
                                                                     output)
        return output
    finally:
        up.kill()
        _kill_leftovers(run_dir)


@pytest.fixture
def taken_port():
    """A listening socket on 8000 (or 8000 already in use by someone else)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with contextlib.suppress(OSError):
            sock.bind(("127.0.0.1", DEFAULT_API_PORT))
            sock.listen()
        yield DEFAULT_API_PORT


def test_up_takes_a_free_port_keeps_files_in_the_run_dir_and_stops_within_its_bound(
        tmp_path, taken_port):
    work, run_dir = tmp_path / "work", tmp_path / "run"
    work.mkdir()
    up = _up(run_dir, _env(**_topics(f"up{uuid.uuid4().hex[:6]}")), work)
    lines: list[str] = []
    try:
        while not any("Ctrl-C stops everything" in line for line in lines):
            line = up.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
        printed = "".join(lines)
        assert f"port {taken_port} is taken; the API listens on" in printed
        port = int(printed.split("the API listens on ")[1].split()[0].rstrip(")"))
        assert port != taken_port and f"http://127.0.0.1:{port}" in printed
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
            assert answer.status == 200
        # The worker's (Faust's) data directory is under the run directory, and nothing
        # of the stack is left in the directory it was started from.
        # The worker makes that directory only once it runs, which on a loaded machine can
        # be after the API answers: wait for it to exist, not only to fill.
        faust_dir = run_dir / "faust"
        assert wait_for(lambda: faust_dir.is_dir() and any(faust_dir.iterdir()), timeout=60)
        assert list(work.iterdir()) == []

        (worker,) = [pid for pid, cmdline in _leftovers(run_dir).items()
                     if cmdline.endswith(b"streamrec.cli worker --log-level warning ")]
        os.kill(worker, signal.SIGSTOP)  # a role that cannot stop by itself
        started = time.monotonic()
        up.send_signal(signal.SIGTERM)
        up.wait(UP_STOP_SECONDS + 10)
        took = time.monotonic() - started
        assert took <= UP_STOP_SECONDS + 3, took
        assert wait_for(lambda: not _leftovers(run_dir), timeout=5), _leftovers(run_dir)
    finally:
        up.kill()
        _kill_leftovers(run_dir)


def test_an_explicit_port_that_is_taken_is_an_error_naming_it(tmp_path, taken_port):
    output = _fails(tmp_path / "run", _env(api_port=str(taken_port)), tmp_path)
    assert f"port {taken_port} (STREAMREC_API_PORT) is taken" in output
    assert "starting" not in output  # before anything was started
    output = _fails(tmp_path / "run", _env(), tmp_path, "--port", str(taken_port))
    assert f"port {taken_port} (--port) is taken" in output


def test_kafka_failing_to_start_stops_the_redis_it_started(tmp_path):
    bare = tmp_path / "bin"  # a PATH with redis-server and no java
    bare.mkdir()
    (bare / "redis-server").symlink_to(shutil.which("redis-server"))
    output = _fails(tmp_path / "run", _env() | {"PATH": str(bare)}, tmp_path)
    assert "starting redis-server" in output and "Java 17 is needed" in output


def test_the_api_failing_stops_every_role_kafka_and_redis(tmp_path):
    # An address no interface has: the API cannot listen and exits; up says so.
    settings = _topics(f"up{uuid.uuid4().hex[:6]}") | {"api_host": "192.0.2.1"}
    output = _fails(tmp_path / "run", _env(**settings), tmp_path)
    assert "api exited with" in output and str(tmp_path / "run" / "logs" / "api.log") in output


def test_the_worker_failing_stops_every_role(tmp_path, services):
    # A model version that does not exist: the worker refuses to start.
    settings = _topics(f"up{uuid.uuid4().hex[:6]}") | {
        "state_version": "missing", "kafka_bootstrap": services["bootstrap"],
        "redis_url": services["redis_url"]}
    output = _fails(tmp_path / "run", _env(**settings), tmp_path)
    assert "worker exited with" in output
