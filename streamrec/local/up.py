"""``streamrec up``: Kafka and Redis (unless configured), worker, API, trainer and simulator,
locally.

Whatever fails (a service that does not start, a role that exits, a port that is taken) and
whenever it is told to stop (SIGTERM, Ctrl-C), it stops everything it started, within
``UP_STOP_SECONDS``: the roles first (each within its own bound), then Kafka and Redis.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import signal
import socket
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import orjson

from streamrec.local.services import (
    LocalKafka,
    LocalRedis,
    ServiceError,
    free_port,
    port_open,
)
from streamrec.local.supervisor import Supervisor
from streamrec.settings import get_settings
from streamrec.shutdown import UP_STOP_SECONDS, exit_within

DEFAULT_API_PORT = 8000
KEYS_FILE = "api-keys.json"
API_START_SECONDS = 60.0


class UpFailed(RuntimeError):
    """``streamrec up`` could not start or keep the stack; ``str()`` says what, and where
    to look."""


class _Stopped(Exception):
    """SIGTERM: stop everything, as Ctrl-C does."""


def _stop_on_signal(number: int, frame: FrameType | None) -> None:
    raise _Stopped


class Stack(Supervisor):
    """What ``up`` started, to stop it in the right order whatever happened."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__(run_dir / "logs")
        self.run_dir = run_dir

    def check_roles(self) -> None:
        """Raises UpFailed when a role other than the simulator (which may finish) exited."""
        for problem in self.exited(may_finish=("simulate",)):
            name = problem.split(" ", 1)[0]
            raise UpFailed(f"{problem}; see {self.log(name)}")


def port_taken(port: int, host: str = "127.0.0.1") -> bool:
    """True when another process listens on ``port`` (a bind says so, as the API's would)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as error:
            return error.errno == errno.EADDRINUSE
    return False


def choose_api_port(env: dict[str, str], port: int | None) -> tuple[int, str | None]:
    """The API's port and a note when it is not the default: the one asked for (``--port``
    or ``STREAMREC_API_PORT``), which must be free, else 8000, else any free port."""
    host = env.get("STREAMREC_API_HOST", "127.0.0.1")
    asked = port if port is not None else env.get("STREAMREC_API_PORT")
    if asked is not None:
        where = "--port" if port is not None else "STREAMREC_API_PORT"
        if not str(asked).isdigit():
            raise UpFailed(f"{where}: {asked!r} is not a port number")
        if port_taken(int(asked), host):
            raise UpFailed(f"port {asked} ({where}) is taken by another process: free it, or "
                           "leave the port out and up picks a free one")
        return int(asked), None
    if not port_taken(DEFAULT_API_PORT, host):
        return DEFAULT_API_PORT, None
    chosen = free_port()
    return chosen, f"port {DEFAULT_API_PORT} is taken; the API listens on {chosen}"


def local_api_keys(env: dict[str, str], run_dir: Path) -> dict[str, str]:
    """Keys for a local stack: unless keys are configured, make one per role (kept in
    ``run_dir/api-keys.json``, readable only by this user, and reused on the next run), hand
    the file to the API and a write key to the simulator. Returns a key per role known."""
    if "STREAMREC_API_KEYS" in env or "STREAMREC_API_KEYS_FILE" in env:
        try:
            return {role: key for key, role in get_settings().load_api_keys().items()}
        except ValueError as error:
            raise UpFailed(str(error)) from None
    path = run_dir / KEYS_FILE
    if not path.exists():
        run_dir.mkdir(parents=True, exist_ok=True)
        keys = {f"sr-{role}-{secrets.token_urlsafe(24)}": role
                for role in ("read", "write", "admin")}
        path.touch(mode=0o600)
        path.write_text(json.dumps(keys, indent=2))
    keys = json.loads(path.read_text())
    env["STREAMREC_API_KEYS_FILE"] = str(path)
    by_role = {role: key for key, role in keys.items()}
    env.setdefault("STREAMREC_CLIENT_API_KEY", by_role["write"])
    return by_role


def describe_keys(env: dict[str, str], run_dir: Path) -> str:
    path = run_dir / KEYS_FILE
    if env.get("STREAMREC_API_KEYS_FILE") != str(path):
        return "  API keys     as configured (STREAMREC_API_KEYS / STREAMREC_API_KEYS_FILE)\n"
    lines = [f"  API keys     send as X-API-Key (kept in {path}):"]
    for key, role in orjson.loads(path.read_bytes()).items():
        lines.append(f"               {role:<6} {key}")
    return "\n".join(lines) + "\n"


def wait_for_api(base: str, admin_key: str | None, stack: Stack,
                 timeout: float = API_START_SECONDS) -> None:
    """Wait for the API to answer, giving up as soon as a role exits. (The simulator
    configures the demo's "home" bandit: streamrec.sim.loop.ensure_demo_placement.)"""
    headers = {} if admin_key is None else {"X-API-Key": admin_key}
    deadline = time.monotonic() + timeout
    while True:
        stack.check_roles()
        try:
            request = urllib.request.Request(f"{base}/admin/placements", headers=headers)
            urllib.request.urlopen(request, timeout=2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise UpFailed(f"the API at {base} did not come up in {timeout:.0f} s; see "
                               f"{stack.log('api')}") from None
            time.sleep(0.5)


def run(run_dir: Path, rate: float, port: int | None, echo: Callable[[str], None]) -> None:
    """Start the stack, print where to look, and keep it until a signal or a failure; stop
    everything it started either way. Raises UpFailed naming what failed."""
    env = dict(os.environ)
    run_dir = run_dir.resolve()
    # Every file of the stack under the run directory, the worker's (Faust's) included.
    env.setdefault("STREAMREC_DATA_DIR", str(run_dir))
    api_port, note = choose_api_port(env, port)
    if note:
        echo(note)
    env["STREAMREC_API_PORT"] = str(api_port)
    keys = local_api_keys(env, run_dir)  # refuses bad keys before anything starts
    stack = Stack(run_dir)
    previous = signal.signal(signal.SIGTERM, _stop_on_signal)
    try:
        _start(stack, env, rate, echo)
        base = f"http://127.0.0.1:{api_port}"
        wait_for_api(base, keys.get("admin"), stack)
        echo(_banner(base, env, run_dir, keys, note))
        while True:
            stack.check_roles()
            time.sleep(1)
    except (KeyboardInterrupt, _Stopped):
        pass
    except ServiceError as error:
        raise UpFailed(str(error)) from None
    finally:
        for number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(number, signal.SIG_IGN)  # a second signal must not cut the stop
        exit_within(UP_STOP_SECONDS)  # a last resort: the stop below is bounded itself
        echo("stopping ...")
        stack.stop()
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _start(stack: Stack, env: dict[str, str], rate: float, echo: Callable[[str], None]
           ) -> None:
    if "STREAMREC_REDIS_URL" not in env:
        redis_server = LocalRedis(stack.run_dir / "redis",
                                  port=6379 if not port_open(6379) else free_port())
        stack.services.append(redis_server)  # before it starts: a failed start stops it
        echo(f"starting redis-server on port {redis_server.port} ...")
        redis_server.start()
        env["STREAMREC_REDIS_URL"] = redis_server.url
    if "STREAMREC_KAFKA_BOOTSTRAP" not in env:
        kafka = LocalKafka(stack.run_dir / "kafka",
                           port=9092 if not port_open(9092) else free_port())
        stack.services.append(kafka)
        echo(f"starting Kafka {kafka.bootstrap} (KRaft) ...")
        kafka.start()
        env["STREAMREC_KAFKA_BOOTSTRAP"] = kafka.bootstrap
    stack.spawn("worker", ["worker", "--log-level", "warning"], env)
    stack.spawn("api", ["api"], env)
    # ease and ials, retrained every 5 minutes of the demo (the first cycles find too few
    # events, say so in its log, and try again).
    stack.spawn("trainer", ["trainer", "--all-apps", "--every", "300"], env)
    stack.spawn("simulate", ["simulate", "--rate", str(rate), "--loop-api",
                             f"http://127.0.0.1:{env['STREAMREC_API_PORT']}"], env)


def _banner(base: str, env: dict[str, str], run_dir: Path, keys: dict[str, str],
            note: str | None) -> str:
    reader = f"-H 'X-API-Key: {keys['read']}' " if "read" in keys else ""
    admin = f"-H 'X-API-Key: {keys['admin']}' " if "admin" in keys else ""
    writer = f"-H 'X-API-Key: {keys['write']}' " if "write" in keys else ""
    return (
        "\nstreamrec is up:\n"
        f"  API          {base}   (docs: {base}/docs)"
        + (f"   ({note})" if note else "") + "\n"
        f"  dashboard    {base}/dashboard   (live CTR, take-rate, freshness, latency)\n"
        f"  try          curl {reader}'{base}/recommendations?user_id=user-1&k=5"
        "&placement=home'\n"
        f"               curl {admin}'{base}/admin/placements/home/report'\n"
        f"               curl {reader}'{base}/popular?k=5'\n"
        f"               curl {writer}-H 'Content-Type: application/json' {base}/events "
        "-d '{\"user_id\": \"ann\", \"item_id\": \"item-1\", \"event_type\": \"view\"}'\n"
        f"  Kafka        {env['STREAMREC_KAFKA_BOOTSTRAP']}"
        "   (topics: events, events.dlq, items, users, impressions, metrics)\n"
        f"  Redis        {env['STREAMREC_REDIS_URL']}\n"
        f"  logs         {run_dir / 'logs'}\n"
        + describe_keys(env, run_dir) +
        "Ctrl-C stops everything.\n"
    )
