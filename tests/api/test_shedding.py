"""Load shedding against the real processes: a real ``streamrec api`` on a redis-server of
its own, which the tests stop with SIGSTOP (a Redis that hangs, rather than one that
refuses connections) and resume with SIGCONT. The session's shared Redis is not touched.
"""

from __future__ import annotations

import asyncio
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
from streamrec.measure import load as open_loop
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


def refused_for_bound(answer) -> bool:
    status, _, body, _ = answer
    return status == 503 and "max_requests_in_flight" in orjson.loads(body)["detail"]


@pytest.fixture(scope="module")
def patient_api(services, worker_env, own_redis):
    """Reads wait as long as Redis lets them (its client's 5 s socket timeout, then the
    last known popular items): the places of the bound stay taken while Redis hangs."""
    with api_process(services, worker_env, name="api-shedding-patient",
                     redis_url=own_redis.url, request_deadline_seconds="60",
                     max_requests_in_flight=str(IN_FLIGHT), retry_after_seconds="2") as (
            url, _, _):
        assert wait_for(lambda: get(url, "/readyz")[0] == 200, timeout=60)
        yield url


def test_a_burst_past_the_bound_is_answered_503_at_once(patient_api, own_redis):
    burst = IN_FLIGHT + 4
    shed_before = shed_count(patient_api, "in_flight")
    with hung(own_redis), ThreadPoolExecutor(burst) as pool:
        answers = list(pool.map(
            lambda n: get(patient_api, f"/recommendations?user_id=burst-{n}"), range(burst)))
    refused = [answer for answer in answers if refused_for_bound(answer)]
    admitted = [answer for answer in answers if not refused_for_bound(answer)]
    # At most IN_FLIGHT were admitted (they waited on the hung Redis) ...
    assert len(refused) >= burst - IN_FLIGHT, [answer[:1] for answer in answers]
    assert all(headers["Retry-After"] == "2" for _, headers, _, _ in refused)
    # ... and the others were refused without waiting for anything: each answered before
    # any admitted one was.
    assert max(seconds for *_, seconds in refused) < min(seconds for *_, seconds in admitted)
    assert shed_count(patient_api, "in_flight") >= shed_before + len(refused)
    assert wait_for(lambda: get(patient_api, "/recommendations?user_id=after")[0] == 200,
                    timeout=30)


def test_a_flood_while_redis_hangs_gets_503s_and_never_silence(api, own_redis):
    # The bench's open-loop generator: each request leaves on time, on a connection of its
    # own when the others wait. Whatever waits in the API is answered within the deadline
    # (the admitted ones) or at once (past the bound).
    rate, seconds = 150, 2.0
    with hung(own_redis):
        result = asyncio.run(open_loop.run(api, lambda n: f"/recommendations?user_id=flood-{n}",
                                           rate, seconds, timeout=DEADLINE + SLACK))
    assert result.errors == {"HTTP 503": rate * seconds}, result.errors
    assert wait_for(lambda: get(api, "/recommendations?user_id=after")[0] == 200,
                    timeout=30)
