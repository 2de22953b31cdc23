"""Load shedding against the real processes: a real ``streamrec api`` on a redis-server of
its own, which the tests stop with SIGSTOP (a Redis that hangs, rather than one that
refuses connections) and resume with SIGCONT. The session's shared Redis is not touched.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from email.message import Message

import orjson
import pytest

from streamrec.local.services import LocalRedis
from tests.api.conftest import api_process, wait_for

DEADLINE = 1.0
# Generous: the machine is shared; what matters is that it is far below the Redis client's
# 5 s socket timeout, which is what a request waited before.
SLACK = 2.5
IN_FLIGHT = 2


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory):
    server = LocalRedis(tmp_path_factory.mktemp("shedding-redis")).start()
    yield server
    with contextlib.suppress(ProcessLookupError):
        os.kill(server.process.pid, signal.SIGCONT)
    server.stop()


@pytest.fixture(scope="module")
def api(services, worker_env, own_redis):
    with api_process(services, worker_env, name="api-shedding", redis_url=own_redis.url,
                     request_deadline_seconds=str(DEADLINE),
                     max_requests_in_flight=str(IN_FLIGHT), retry_after_seconds="2") as (
            url, _, _):
        assert wait_for(lambda: get(url, "/readyz")[0] == 200, timeout=60)
        yield url


def get(url: str, path: str, timeout: float = 30.0) -> tuple[int, Message, bytes, float]:
    """Status, headers (any case), body and seconds taken of ``GET url+path``."""
    started = time.monotonic()
    try:
        with urllib.request.urlopen(url + path, timeout=timeout) as response:
            return (response.status, response.headers, response.read(),
                    time.monotonic() - started)
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read(), time.monotonic() - started


@contextlib.contextmanager
def hung(redis_server: LocalRedis):
    """redis-server stopped (it accepts nothing and answers nothing) until the block ends."""
    os.kill(redis_server.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(redis_server.process.pid, signal.SIGCONT)


def shed_count(url: str, reason: str) -> float:
    status, _, body, _ = get(url, "/metrics")
    assert status == 200
    line = f'streamrec_http_requests_shed_total{{reason="{reason}"}} '
    return float(next(row for row in body.decode().splitlines()
                      if row.startswith(line)).split()[-1])


def test_a_hung_redis_costs_a_read_its_deadline_and_the_operations_routes_answer(
        api, own_redis):
    assert get(api, "/recommendations?user_id=before")[0] == 200
    shed_before = shed_count(api, "deadline")
    with hung(own_redis):
        status, headers, body, seconds = get(api, "/recommendations?user_id=during")
        assert status == 503, body
        assert seconds < DEADLINE + SLACK
        assert headers["Retry-After"] == "2"
        assert "deadline" in orjson.loads(body)["detail"]
        assert "request_deadline_seconds" in orjson.loads(body)["detail"]
        # The process itself is fine: the operations routes answer meanwhile.
        status, _, body, _ = get(api, "/healthz", timeout=DEADLINE + SLACK)
        assert (status, orjson.loads(body)) == (200, {"status": "ok"})
        status, _, body, seconds = get(api, "/readyz", timeout=DEADLINE + SLACK)
        assert status == 503 and orjson.loads(body)["redis"] == "unreachable"
        assert shed_count(api, "deadline") >= shed_before + 1
    # Once Redis answers again (and the abandoned calls have ended) so does the API.
    assert wait_for(lambda: get(api, "/recommendations?user_id=after")[0] == 200,
                    timeout=30), "the API did not serve again after SIGCONT"
    assert get(api, "/readyz")[0] == 200


def refused_for_bound(answer):
    status, _, body, _ = answer
    if status == 503 and "max_requests_in_flight" in orjson.loads(body)["detail"]:
        return answer
    return None


def test_a_burst_past_the_bound_is_answered_503_at_once(api, own_redis):
    shed_before = shed_count(api, "in_flight")
    with hung(own_redis), ThreadPoolExecutor(IN_FLIGHT) as pool:
        # IN_FLIGHT reads that wait on the hung Redis hold every place...
        holding = [pool.submit(get, api, f"/recommendations?user_id=hold-{n}")
                   for n in range(IN_FLIGHT)]
        # ... so another request is refused without waiting for anything (a probe admitted
        # before them would wait for its deadline and then hold a place itself).
        refused = wait_for(lambda: refused_for_bound(get(api, "/recommendations?user_id=more")),
                           timeout=20)
        assert refused, "no request was refused by max_requests_in_flight"
        _, headers, _, _ = refused
        assert headers["Retry-After"] == "2"
        assert [future.result()[0] for future in holding] == [503] * IN_FLIGHT
        assert shed_count(api, "in_flight") >= shed_before + 1
    assert wait_for(lambda: get(api, "/recommendations?user_id=after-burst")[0] == 200,
                    timeout=30)
