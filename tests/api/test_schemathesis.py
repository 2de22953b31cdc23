"""Schemathesis against the OpenAPI spec, on an app with real Kafka, Redis and a worker:
no request, valid or not, earns a 5xx, and every answer is one the spec documents (status
code, content type, body schema)."""

from __future__ import annotations

from collections import Counter

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.main import create_app
from streamrec.settings import Settings
from tests.api.conftest import wait_for
from tests.conftest import own_worker

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
EXAMPLES = 300  # Hypothesis examples per operation: about 4,000 cases, a minute on 2 cores

# The spec does not depend on the settings, so it is read from an app built at collection.
# /dashboard and /static (HTML and scripts) are not in the spec, so not fuzzed either.
schema = schemathesis.openapi.from_dict(create_app(Settings()).openapi()).exclude(
    # An endless Server-Sent Events stream: no response ever completes to be checked.
    path="/metrics/stream",
).exclude(
    # The same handlers as the bare routes, fuzzed there; an app drawn at random does not
    # exist (404). tests/api/test_apps_isolation.py calls every one of them.
    path_regex="^/apps/",
)

# Schemathesis' own strategies draw from `random`; nothing here to act on.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Do not use the `random` module inside strategies")

cases: Counter[tuple[str, int]] = Counter()  # (operation, status) -> cases


@pytest.fixture(scope="module")
def fuzzed(services, worker_env):
    """An app and a worker of their own (topics, Redis prefix): the generated placements,
    items and events must not reach the state other tests assert on."""
    with own_worker(services, worker_env) as names:
        app_settings = Settings(kafka_bootstrap=services["bootstrap"],
                                redis_url=services["redis_url"], max_events_per_request=50,
                                **names)
        with TestClient(create_app(app_settings)) as client:
            assert wait_for(lambda: client.get("/readyz").status_code == 200, timeout=60)
            yield client
    statuses: Counter[int] = Counter()
    for (_, status), count in cases.items():
        statuses[status] += count
    print(f"\nschemathesis: {sum(cases.values())} cases over "
          f"{len({operation for operation, _ in cases})} operations; "
          f"by status: {dict(sorted(statuses.items()))}")


def _httpx_kwargs(case) -> dict:
    """Schemathesis speaks ``requests``; the test client is httpx."""
    kwargs = case.as_transport_kwargs(base_url="http://testserver")
    kwargs.pop("cookies", None)
    if "data" in kwargs:
        kwargs["content"] = kwargs.pop("data")
    return kwargs


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
def test_every_answer_is_documented_and_none_is_a_server_error(case, fuzzed):
    response = fuzzed.request(**_httpx_kwargs(case))
    cases[case.operation.label, response.status_code] += 1
    case.validate_response(response, checks=CHECKS)
