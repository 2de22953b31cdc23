"""The dashboard in real headless Chromium (Debian's package), driven over the DevTools
protocol: the page loads, receives snapshots from /metrics/stream and draws them."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import subprocess
import time
import urllib.request

import aiohttp
import orjson
import pytest

from streamrec.local.services import free_port
from streamrec.storage.keys import PLACEMENTS
from tests.api.conftest import api_process, wait_for


@pytest.fixture(scope="module")
def api_url(worker_env, services):
    with api_process(services, worker_env, "api-dashboard") as (url, _, _):
        yield url


async def _devtools(port: int, page_url: str, seconds: float) -> tuple[dict, bytes]:
    async with aiohttp.ClientSession() as session:
        async with session.put(f"http://127.0.0.1:{port}/json/new?about:blank") as response:
            target = await response.json(content_type=None)
        async with session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            counter = 0

            async def call(method: str, **params):
                nonlocal counter
                counter += 1
                await ws.send_str(orjson.dumps({"id": counter, "method": method,
                                                "params": params}).decode())
                async for message in ws:
                    data = orjson.loads(message.data)
                    if data.get("id") == counter:
                        return data.get("result", {})
                raise RuntimeError("DevTools closed the connection")

            await call("Page.enable")
            await call("Emulation.setDeviceMetricsOverride", width=1280, height=900,
                       deviceScaleFactor=1, mobile=False)
            await call("Page.navigate", url=page_url)
            await asyncio.sleep(seconds)
            probe = ("JSON.stringify({updates: Number(document.getElementById('updates')"
                     ".dataset.count), drawn: document.body.dataset.drawn === 'true',"
                     " canvases: document.querySelectorAll('canvas').length,"
                     " rows: document.querySelectorAll('#variants tbody tr').length,"
                     " ran: document.body.dataset.xss || null,"
                     " elements: document.querySelectorAll('#variants img, #variants svg,"
                     " .u-legend img, .u-legend svg').length,"
                     " cells: [...document.querySelectorAll('#variants td')]"
                     ".map((td) => td.textContent)})")
            result = await call("Runtime.evaluate", expression=probe, returnByValue=True)
            shot = await call("Page.captureScreenshot", format="png")
            return orjson.loads(result["result"]["value"]), base64.b64decode(shot["data"])


# Names that would run script if the page wrote them as HTML. The admin API refuses such
# names; these are written straight into Redis, as stored state from anywhere would be.
HOSTILE_VARIANT = """<img src=x onerror="document.body.dataset.xss='variant'">"""
HOSTILE_PLACEMENT = """<svg onload="document.body.dataset.xss='placement'">"""


def test_dashboard_loads_receives_updates_and_draws(client, api_url, run, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is missing: run `make system` (Debian: apt-get install chromium)"
    client.put(f"/admin/placements/dash-{run}", json={"variants": [
        {"name": "A", "model": "popular"}, {"name": "B", "model": "hybrid"}]})
    feedback = client.app.state.allocation.feedback
    hostile = f"{HOSTILE_PLACEMENT}{run}"
    feedback.put_placement({"name": hostile, "strategy": "split", "variants": [
        {"name": HOSTILE_VARIANT, "model": "popular", "weight": 1.0, "params": {}}]},
        "test", time.time())
    client.post("/events", json=[{"user_id": f"{run}-u", "item_id": f"{run}-i{n}",
                                  "event_type": "view"} for n in range(5)])
    for n in range(10):
        client.get("/recommendations", params={"user_id": f"{run}-u{n}",
                                               "placement": f"dash-{run}"})
    port = free_port()
    browser = subprocess.Popen(
        [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--remote-debugging-port={port}", f"--user-data-dir={tmp_path / 'profile'}",
         "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with urllib.request.urlopen(f"{api_url}/dashboard", timeout=5) as response:
            policy = response.headers["Content-Security-Policy"]
            assert "script-src 'self'" in policy and "default-src 'none'" in policy
            assert response.headers["X-Content-Type-Options"] == "nosniff"

        def devtools_up() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/version", timeout=1):
                    return True
            except OSError:
                return False

        assert wait_for(devtools_up, timeout=30), "Chromium's DevTools did not come up"
        state, png = asyncio.run(_devtools(port, f"{api_url}/dashboard", seconds=4.5))
    finally:
        browser.terminate()
        browser.wait(20)
        feedback.client.hdel(feedback.key(PLACEMENTS), hostile)
    screenshot = os.environ.get("STREAMREC_DASHBOARD_SCREENSHOT", str(tmp_path / "dash.png"))
    with open(screenshot, "wb") as file:
        file.write(png)
    print(f"dashboard state {state}; screenshot {screenshot}")
    assert state["updates"] >= 3  # about one snapshot a second
    assert state["drawn"] and state["canvases"] >= 3
    assert state["rows"] >= 1  # the placement's variants are listed
    assert state["ran"] is None and state["elements"] == 0  # the names ran nothing
    assert hostile in state["cells"]  # shown as text
    assert any(cell.startswith(HOSTILE_VARIANT) for cell in state["cells"])
    assert png.startswith(b"\x89PNG")
