"""The console in real headless Chromium, against a real API (its own process, with keys),
Redis, Kafka and worker: one walk through every page, acting on each and finding the
result on the page. A screenshot of each page goes to .streamrec/console-shots/."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path

import pytest

from streamrec.storage.model_versions import Version
from tests.api.browser import Tab, chromium, tab
from tests.api.conftest import api_process, wait_for

KEY = "console-test-platform-key"  # admin of every app, and creates and deletes apps
SHOTS = Path(__file__).resolve().parents[2] / ".streamrec" / "console-shots"
# A title that would run script if the page wrote it as HTML.
HOSTILE_TITLE = """<img src=x onerror="document.body.dataset.xss='title'">"""


@pytest.fixture(scope="module")
def console_url(worker_env, services):
    with api_process(services, worker_env, "api-console",
                     api_keys=json.dumps({KEY: "platform"})) as (url, _, _):
        yield url


def _text(selector: str) -> str:
    return f"(document.querySelector({json.dumps(selector)}) || {{}}).textContent || ''"


async def _go(page: Tab, where: str, ready: str) -> None:
    await page.evaluate(f"location.hash = {json.dumps(where)}")
    name = where.split("/")[1]
    await page.wait(f"document.body.dataset.page === {json.dumps(name)}")
    await page.wait(ready)


async def _fill(page: Tab, selector: str, text: str) -> None:
    """Focus a field, clear it and type into it, as a person would."""
    await page.evaluate(f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
                        " e.focus(); e.select(); })()")
    await page.type(text)


async def _click(page: Tab, text: str, scope: str = "main") -> None:
    """Click the button whose text is ``text``."""
    found = await page.evaluate(
        f"(() => {{ const b = [...document.querySelectorAll({json.dumps(scope + ' button')})]"
        f".find((b) => b.textContent === {json.dumps(text)}); if (b) {{ b.click(); }}"
        " return Boolean(b); })()")
    assert found, f"no button {text!r}"


async def _walk(port: int, url: str, run: str, names: dict) -> dict:
    seen: dict = {}
    async with tab(port) as page:
        await page.navigate(f"{url}/console")
        await page.wait("document.body.dataset.ready === 'true'")
        # The key: typed once, Enter submits; kept in sessionStorage, never in the URL.
        await page.evaluate("document.getElementById('key').focus()")
        await page.type(KEY)
        await page.press_enter()
        await page.wait("!document.getElementById('key-held').hidden")
        seen["stored"] = await page.evaluate("sessionStorage.getItem('streamrec.key')")

        # Apps: create one (its keys shown once), rotate a key, work in it, delete it.
        app = names["app"]
        await _go(page, "#/apps", "document.getElementById('create-app')")
        await _fill(page, "#create-app input", app)
        await _fill(page, "#create-app textarea", '{"default_model": "popular"}')
        await _click(page, "Create app")
        await page.wait(f"document.querySelector('tr[data-app=\"{app}\"]')")
        seen["new_keys"] = await page.evaluate(
            "[...document.querySelectorAll('#new-keys .new-key')].map((e) => e.textContent)")
        seen["copy_buttons"] = await page.evaluate(
            "document.querySelectorAll('#new-keys button').length")
        await page.screenshot(SHOTS / "apps-created.png")
        row = f"tr[data-app=\"{app}\"]"
        await page.evaluate(f"document.querySelector('{row} select').value = 'read'")
        await _click(page, "Rotate keys", row)
        await page.wait("document.querySelectorAll('#new-keys .new-key').length === 1")
        seen["rotated"] = await page.evaluate(_text("#new-keys"))
        await _click(page, "Select", row)
        await _go(page, "#/placements", f"{_text('main')}.includes('none configured')")
        seen["app_call"] = await page.evaluate("document.body.dataset.lastCall")
        await _go(page, "#/metrics", "Number(document.getElementById('updates').dataset.count)"
                  " >= 1")
        seen["app_metrics"] = await page.evaluate(_text("#state"))
        await _go(page, "#/apps", f"document.querySelector('{row}')")
        await _click(page, "Delete…", row)
        await _click(page, f"Yes, delete {app}", row)
        await page.wait("document.getElementById('deleted')")
        seen["deleted"] = await page.evaluate(_text("#deleted"))
        seen["app_after"] = await page.evaluate("document.getElementById('app').value")
        await page.screenshot(SHOTS / "apps.png")

        # Catalog: search finds the item, its hostile title shown as text.
        await _go(page, "#/catalog", "document.querySelector('#items form')")
        await _fill(page, "#items input[type=search]", f"{run}-title")
        await page.press_enter()
        await page.wait(f"{_text('#items tbody')}.includes('{run}-title')")
        seen["catalog"] = await page.evaluate(_text("#items tbody"))
        seen["catalog_rows"] = await page.evaluate(
            "document.querySelectorAll('#items tbody tr').length")
        seen["catalog_elements"] = await page.evaluate(
            "document.querySelectorAll('#items tbody img').length")
        await page.screenshot(SHOTS / "catalog.png")

        # The user page: four lists side by side, each item with its reasons.
        await _go(page, f"#/users/{names['user']}", "document.querySelectorAll("
                  "'.model-list').length === 4")
        seen["lists"] = await page.evaluate(
            "[...document.querySelectorAll('.model-list')].map((e) => e.dataset.model)")
        seen["user"] = await page.evaluate(_text("#explain"))
        await page.screenshot(SHOTS / "user.png")

        # Placements: the kill switch of variant B, then the change shows in the log.
        await _go(page, f"#/placements/{names['placement']}",
                  "document.querySelectorAll('#log-entries li').length === 1")
        await _click(page, "Kill switch: off", "tr[data-variant=B]")
        await page.wait("document.querySelectorAll('#log-entries li').length === 2")
        await page.wait(f"{_text('tr[data-variant=B]')}.includes('Switch on')")
        seen["variant"] = await page.evaluate(_text("tr[data-variant=B]"))
        seen["switched"] = await page.evaluate(_text("#message"))
        seen["log"] = await page.evaluate(_text("#log-entries"))
        await page.screenshot(SHOTS / "placements.png")

        # Filters: the parser's position marked while typing; a preview of a good one.
        await _go(page, "#/filters", "document.getElementById('expression')")
        await _fill(page, "#expression", "INCLUDE ItemID WHERE Items.price <")
        await page.wait("document.getElementById('verdict').dataset.valid === 'false'")
        seen["verdict"] = await page.evaluate(_text("#verdict"))
        seen["position"] = await page.evaluate("document.getElementById('verdict')"
                                               ".dataset.position")
        seen["marked"] = await page.evaluate(_text("#error-at"))
        await page.screenshot(SHOTS / "filters-invalid.png")
        await _fill(page, "#expression", f'INCLUDE ItemID WHERE Items.categories IN ("{run}")')
        await page.wait("document.getElementById('verdict').dataset.valid === 'true'")
        await _click(page, "Preview")
        await page.wait("document.querySelectorAll('#preview-items li').length > 0")
        seen["preview"] = await page.evaluate(_text("#preview-items"))
        await _fill(page, "main input", names["filter"])  # the editor's Name
        await _click(page, "Save filter")
        await page.wait("[...document.querySelectorAll('main h2')].some((h) => h.textContent"
                        f" === 'Edit {names['filter']}')")
        seen["saved"] = await page.evaluate(_text("main table"))
        await page.screenshot(SHOTS / "filters.png")
        await _click(page, "Delete filter")
        await page.wait("location.hash === '#/filters'")
        await page.wait(f"({_text('#message')}) === 'filter {names['filter']} deleted'")

        # Versions: a promote of a version no worker keeps live is refused, saying why.
        await _go(page, "#/versions", f"document.querySelector('tr[data-version="
                  f"\"{names['version']}\"] button')")
        row = f"tr[data-version=\"{names['version']}\"]"
        await _click(page, f"Promote {names['version']}", row)
        await page.wait("document.body.dataset.message === 'error'")
        seen["refusal"] = await page.evaluate(_text("#message"))
        # A version being built is redrawn every second (its lag is the rebuild's progress).
        drawn = await page.evaluate("Number(document.getElementById('versions-table')"
                                    ".dataset.drawn)")
        await page.wait(f"Number(document.getElementById('versions-table').dataset.drawn)"
                        f" >= {drawn + 2}", timeout=30)  # each redraw asks Kafka too
        seen["building"] = await page.evaluate(_text(f"tr[data-version=\"{names['building']}\"]"))
        await page.screenshot(SHOTS / "versions.png")

        # Live metrics: drawn, the time axis spanning minutes at most, not years.
        await _go(page, "#/metrics", "document.querySelectorAll('canvas').length >= 3")
        await page.wait("Number(document.getElementById('updates').dataset.count) >= 3")
        seen["span"] = await page.evaluate(
            "Number(document.getElementById('chart-events').dataset.xSpan)")
        await page.screenshot(SHOTS / "metrics.png")

        seen["xss"] = await page.evaluate("document.body.dataset.xss || null")
        seen["href"] = await page.evaluate("location.href")
    return seen


def test_a_walk_through_every_page_of_the_console(client, console_url, run, tmp_path):
    with urllib.request.urlopen(f"{console_url}/console", timeout=5) as response:
        policy = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "default-src 'none'" in policy
    # State to look at: an item with a hostile title, a user whose lists have reasons, a
    # placement, and a version no worker keeps live.
    client.put(f"/items/{run}-title", json={"categories": [run],
                                            "properties": {"title": HOSTILE_TITLE}})
    for item in "ab":  # popular, in the run's category: what the filter's preview shows
        client.put(f"/items/{run}-{item}", json={"categories": [run]})
    # Their category's popularity counts the events applied after the worker has their
    # documents (the items and events topics are read apart): the events wait for them.
    assert wait_for(lambda: all(client.get(f"/items/{run}-{item}").status_code == 200
                                for item in "ab"), timeout=60)
    user = f"{run}-me"
    client.post("/events", json=[{"user_id": f"{run}-u{n}", "item_id": f"{run}-{item}",
                                  "event_type": "view"} for n in (1, 2) for item in "ab"])
    client.post("/events", json={"user_id": user, "item_id": f"{run}-a", "event_type": "view"})
    placement = f"console-{run}"
    client.put(f"/admin/placements/{placement}", json={"variants": [
        {"name": "A", "model": "popular"}, {"name": "B", "model": "hybrid"}]})
    registry = client.app.state.versions.registry
    version = f"c{run}"
    registry.register(Version(version))
    building = f"b{run}"
    registry.register(Version(building, {"mf_dim": 16}, status="building"))
    def explained() -> bool:
        items = client.get(f"/admin/users/{user}/explain").json()["lists"]["cooccurrence"][
            "items"]
        return bool(items and items[0]["why"]["cooccurrence"]["from"])

    checks = {
        "the item search": lambda: client.get(f"/admin/items?query={run}-title").json()[
            "entries"],
        "the user's co-occurrence reasons": explained,
        "the filter preview": lambda: client.post("/admin/filters/preview", json={
            "expression": f'INCLUDE ItemID WHERE Items.categories IN ("{run}")'}).json()[
            "items"],
    }
    missing: list[str] = []

    def ready() -> bool:  # the worker applies the items and events asynchronously
        missing[:] = [name for name, check in checks.items() if not check()]
        return not missing

    assert wait_for(ready, timeout=60), f"the worker had not applied {missing} within 60 s"
    try:
        with chromium(tmp_path / "profile") as port:
            seen = asyncio.run(asyncio.wait_for(_walk(port, console_url, run, {
                "user": user, "placement": placement, "version": version,
                "app": f"console-{run}", "building": building,
                "filter": f"mine-{run}"}), 120))
    finally:
        registry.delete(version)
        registry.delete(building)
    print(f"console walk-through: {seen}; screenshots in {SHOTS}")
    assert seen["stored"] == KEY and KEY not in seen["href"]
    app = f"console-{run}"
    assert [key.split("_")[:3] for key in seen["new_keys"]] == [
        ["sr", app, role] for role in ("read", "write", "admin")]
    assert seen["copy_buttons"] == 3
    assert f"sr_{app}_read_" in seen["rotated"] and seen["new_keys"][0] not in seen["rotated"]
    assert seen["app_call"] == f"GET /apps/{app}/admin/placements"
    assert seen["app_metrics"] == f"live from /apps/{app}/metrics/stream"
    assert "building" in seen["building"] and '"mf_dim":16' in seen["building"]
    assert '"deleted": true' in seen["deleted"] and seen["app_after"] == "default"
    assert client.get(f"/apps/{app}/admin/placements").status_code == 404
    assert HOSTILE_TITLE in seen["catalog"] and seen["catalog_elements"] == 0
    assert seen["catalog_rows"] == 1  # the search's item alone, not the first page's too
    assert seen["xss"] is None
    assert seen["lists"] == ["popular", "cooccurrence", "mf", "hybrid"]
    assert "co-occurrence" in seen["user"] and f"from {run}-a" in seen["user"]
    assert "off" in seen["variant"] and '"weight":0' in seen["log"]
    assert seen["switched"] == "B switched off"
    assert seen["verdict"] == "filter: expected a value after < at position 35"
    assert seen["position"] == "35" and seen["marked"] == " "
    assert run in seen["preview"]
    assert f"mine-{run}" in seen["saved"] and f'IN ("{run}")' in seen["saved"]
    assert client.get(f"/admin/filters/mine-{run}").status_code == 404  # deleted
    assert seen["refusal"].startswith(f"refused: no worker consumes for version {version}")
    assert 60 <= seen["span"] < 600
