"""``/docs`` draws the API in a real headless Chromium that can reach nothing but the API
(every other host goes to a dead proxy): Swagger UI comes from the API's own files."""

from __future__ import annotations

import shutil
import subprocess

from tests.api.conftest import api_process


def test_swagger_ui_renders_with_no_network_but_the_api(services, worker_env, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is missing: run `make system` (Debian: apt-get install chromium)"
    with api_process(services, worker_env, "api-docs") as (url, _, _):
        dom = subprocess.run(
            [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             f"--user-data-dir={tmp_path / 'profile'}",
             # Loopback is reached directly; any other host only through a proxy that is
             # not there: a CDN asset would fail to load.
             "--proxy-server=http://127.0.0.1:9", "--virtual-time-budget=20000",
             "--dump-dom", f"{url}/docs"],
            capture_output=True, text=True, timeout=120).stdout
    # Rendered by Swagger UI's script from the OpenAPI document: the title and operations.
    assert 'class="swagger-ui' in dom and "streamrec" in dom, dom[:2000]
    assert "/recommendations" in dom and "/events" in dom, dom[:2000]
    assert "opblock" in dom  # one block per operation, drawn by the script
