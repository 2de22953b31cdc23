"""``/docs`` works offline: its page names only assets the API serves itself, and those are
the vendored swagger-ui-dist files, unchanged (``api/static/swagger-ui/README.md``)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from fastapi.testclient import TestClient

from api.main import create_app
from streamrec.settings import Settings

ASSETS = Path(__file__).resolve().parents[2] / "api" / "static" / "swagger-ui"


def _client() -> TestClient:
    return TestClient(create_app(Settings()))  # no lifespan: the page needs no service


def test_the_docs_page_references_only_local_assets_and_they_are_served():
    client = _client()
    page = client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    referenced = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    referenced += re.findall(r"url: '([^']+)'", page.text)
    assert len(referenced) == 4, referenced  # css, favicon, js, the OpenAPI document
    assert all(url.startswith("/") and not url.startswith("//") for url in referenced)
    assert "http" not in page.text  # no CDN, no validator badge
    for url in referenced:
        served = client.get(url)
        assert served.status_code == 200, url
    assert client.get("/docs/assets/LICENSE").status_code == 404  # a fixed list only
    assert client.get("/redoc").status_code == 404  # it loads from a CDN: not offered


def test_the_vendored_assets_are_the_pinned_package_files_with_their_licence():
    pinned = dict(re.findall(r"\| `([^`]+)` \| `([0-9a-f]{64})` \|",
                             (ASSETS / "README.md").read_text()))
    assert set(pinned) == {"swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"}
    client = _client()
    for name, digest in pinned.items():
        assert hashlib.sha256((ASSETS / name).read_bytes()).hexdigest() == digest, name
        assert client.get(f"/docs/assets/{name}").content == (ASSETS / name).read_bytes()
    assert "Apache License" in (ASSETS / "LICENSE").read_text()
