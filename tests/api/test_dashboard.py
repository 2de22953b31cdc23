"""The dashboard in real headless Chromium (Debian's package), driven over the DevTools
protocol: the page loads, receives snapshots from /metrics/stream and draws them."""

from __future__ import annotations

import asyncio
import os
import time
import urllib.request
from pathlib import Path

import orjson
import pytest

from streamrec.storage.keys import PLACEMENTS
from tests.api.browser import chromium, tab
from tests.api.conftest import api_process


@pytest.fixture(scope="module")
def api_url(worker_env, services):
    with api_process(services, worker_env, "api-dashboard") as (url, _, _):
        yield url


async def _load(port: int, page_url: str, seconds: float, shot: Path) -> tuple[dict, bytes]:
    async with tab(port, height=900) as page:
        await page.navigate(page_url)
        await asyncio.sleep(seconds)
        probe = ("JSON.stringify({updates: Number(document.getElementById('updates')"
                 ".dataset.count), drawn: document.body.dataset.drawn === 'true',"
                 " canvases: document.querySelectorAll('canvas').length,"
                 " rows: document.querySelectorAll('#variants tbody tr').length,"
                 " ran: document.body.dataset.xss || null,"
                 " span: Number(document.getElementById('chart-events').dataset.xSpan),"
                 " elements: document.querySelectorAll('#variants img, #variants svg,"
                 " .u-legend img, .u-legend svg').length,"
                 " cells: [...document.querySelectorAll('#variants td')]"
                 ".map((td) => td.textContent)})")
        state = orjson.loads(await page.evaluate(probe))
        return state, await page.screenshot(shot)


# Names that would run script if the page wrote them as HTML. The admin API refuses such
# names; these are written straight into Redis, as stored state from anywhere would be.
HOSTILE_VARIANT = """<img src=x onerror="document.body.dataset.xss='variant'">"""
HOSTILE_PLACEMENT = """<svg onload="document.body.dataset.xss='placement'">"""


def test_dashboard_loads_receives_updates_and_draws(client, api_url, run, tmp_path):
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
    screenshot = Path(os.environ.get("STREAMREC_DASHBOARD_SCREENSHOT",
                                      str(tmp_path / "dash.png")))
    try:
        with urllib.request.urlopen(f"{api_url}/dashboard", timeout=5) as response:
            policy = response.headers["Content-Security-Policy"]
            assert "script-src 'self'" in policy and "default-src 'none'" in policy
            assert response.headers["X-Content-Type-Options"] == "nosniff"
        with chromium(tmp_path / "profile") as port:
            state, png = asyncio.run(_load(port, f"{api_url}/dashboard", 4.5, screenshot))
    finally:
        feedback.client.hdel(feedback.key(PLACEMENTS), hostile)
    print(f"dashboard state {state}; screenshot {screenshot}")
    assert state["updates"] >= 3  # about one snapshot a second
    assert state["drawn"] and state["canvases"] >= 3
    # The time axis spans the data (a few seconds) and at least a minute; not years.
    assert 60 <= state["span"] < 600
    assert state["rows"] >= 1  # the placement's variants are listed
    assert state["ran"] is None and state["elements"] == 0  # the names ran nothing
    assert hostile in state["cells"]  # shown as text
    assert any(cell.startswith(HOSTILE_VARIANT) for cell in state["cells"])
    assert png.startswith(b"\x89PNG")
