"""API keys with roles against the real services: 401 without or with a wrong key, 403 for
a key whose role is too small, and an unsafe production set-up refused at start."""

from __future__ import annotations

import json
import logging

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from streamrec.settings import Settings
from tests.api.conftest import wait_for

READER, WRITER, ADMIN = "r" * 8 + "ead-key-0001", "w" * 8 + "rite-key-001", "a" * 8 + "dmin-key-01"


@pytest.fixture(scope="module")
def secured(services, tmp_path_factory):
    keys_file = tmp_path_factory.mktemp("secrets") / "keys.json"
    keys_file.write_text(json.dumps({ADMIN: "admin"}))
    settings = Settings(kafka_bootstrap=services["bootstrap"], redis_url=services["redis_url"],
                        environment="production", api_keys={READER: "read", WRITER: "write"},
                        api_keys_file=str(keys_file))
    with TestClient(create_app(settings)) as client:
        assert wait_for(lambda: client.get("/readyz").status_code == 200, timeout=60)
        yield client


def _as(key: str | None) -> dict[str, str]:
    return {} if key is None else {"X-API-Key": key}


EVENT = {"user_id": "sec-ann", "item_id": "sec-tea", "event_type": "view"}
PLACEMENT = {"variants": [{"name": "A", "model": "popular"}]}


@pytest.mark.parametrize(("method", "path", "body", "needed"), [
    ("get", "/recommendations?user_id=sec-ann", None, "read"),
    ("get", "/popular", None, "read"),
    ("post", "/events", EVENT, "write"),
    ("put", "/items/sec-tea", {}, "admin"),
    ("delete", "/items/sec-gone", None, "admin"),
    ("delete", "/users/sec-gone", None, "admin"),
    ("put", "/admin/placements/sec-home", PLACEMENT, "admin"),
])
def test_each_route_needs_its_role(secured, method, path, body, needed):
    call = getattr(secured, method)
    kwargs = {} if body is None else {"json": body}
    assert call(path, headers=_as(None), **kwargs).status_code == 401
    assert call(path, headers=_as("not-a-key-at-all-0000"), **kwargs).status_code == 401
    ranked = [READER, WRITER, ADMIN]
    enough = ranked.index({"read": READER, "write": WRITER, "admin": ADMIN}[needed])
    for position, key in enumerate(ranked):
        status = call(path, headers=_as(key), **kwargs).status_code
        if position < enough:
            assert status == 403, (path, key)
        else:
            assert status in (200, 202), (path, key, status)


def test_health_stays_open_and_keys_are_never_logged(secured, caplog):
    with caplog.at_level(logging.DEBUG):
        secured.get("/popular", headers=_as(READER))
        secured.get("/popular", headers=_as("wrong-key-wrong-key"))
    assert secured.get("/healthz").status_code == 200
    assert READER not in caplog.text and "wrong-key-wrong-key" not in caplog.text


def test_unsafe_production_set_ups_are_refused(services):
    with pytest.raises(ValueError, match="no API keys"):
        create_app(Settings(environment="production"))
    with pytest.raises(ValueError, match="16 or more characters"):
        create_app(Settings(api_keys={"changeme": "admin"}))
