"""Reports belong to their placement, and what an admin created can be read back and
removed: against the session's real Kafka, Redis and worker.

- a report counts only its placement's outcomes; one for a placement nobody configured is
  404 (API) and a non-zero exit (CLI); an unknown ``control`` is an error naming the
  variants; with no reward, comparisons say "not enough data" and bounds are rounded;
- ``GET``/``DELETE /admin/placements/{name}`` (its log, counters and outcomes go too, and
  it leaves the dashboard's snapshot), ``GET /admin/filters/{name}``,
  ``GET /users/{user_id}``.
"""

from __future__ import annotations

import subprocess
import sys

from tests.api.conftest import wait_for

SPLIT = {"strategy": "split", "variants": [{"name": "A", "model": "popular"},
                                           {"name": "B", "model": "popular"}]}


def _report(client, placement: str, **params):
    return client.get(f"/admin/placements/{placement}/report", params=params)


def _dashboard_placements(client) -> dict:
    return client.get("/metrics/snapshot").json().get("placements", {})


def _show_and_click(client, placement: str, user: str) -> dict:
    shown = client.get("/recommendations", params={"user_id": user,
                                                    "placement": placement}).json()
    click = {"user_id": user, "item_id": shown["items"][0]["item_id"], "event_type": "click",
             "recommendation_id": shown["recommendation_id"]}
    assert client.post("/events", json=[click, click]).status_code == 202
    return shown


def test_a_report_counts_only_its_own_placement(client, run):
    busy, quiet = f"busy-{run}", f"quiet-{run}"
    for name in (busy, quiet):
        assert client.put(f"/admin/placements/{name}", json=SPLIT).status_code == 200
    wait_for(lambda: len(client.get("/popular").json()["items"]) > 0)
    client.get("/recommendations", params={"user_id": f"{run}-q", "placement": quiet})
    _show_and_click(client, busy, f"{run}-b")

    report = wait_for(lambda: (r := _report(client, busy).json())["outcomes"].get(
        "duplicate") and r, timeout=30)
    assert report["outcomes"] == {"credited": 1, "duplicate": 1}
    quiet_report = _report(client, quiet).json()
    assert quiet_report["outcomes"] == {}
    # No reward on either side: no numbers that read like a verdict.
    comparison = next(iter(quiet_report["comparisons"].values()))
    assert comparison["verdict"] == "not enough data"
    assert comparison["needed_per_variant"] is None and comparison["lift"] is None
    for metrics in quiet_report["variants"].values():
        for bound in metrics["take_rate_interval"] + metrics["ctr_interval"]:
            assert bound == round(bound, 4)


def test_unknown_placements_and_controls_are_errors(client, run, worker_env):
    missing = _report(client, f"nope-{run}")
    assert missing.status_code == 404
    assert f"nope-{run}" in missing.json()["detail"]

    name = f"ctl-{run}"
    client.put(f"/admin/placements/{name}", json=SPLIT)
    bad = _report(client, name, control="Z")
    assert bad.status_code == 422
    assert "'Z'" in bad.json()["detail"] and "['A', 'B']" in bad.json()["detail"]
    assert _report(client, name, control="B").json()["control"] == "B"

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "streamrec.cli", "report", *args],
                              env=worker_env, capture_output=True, text=True, timeout=60)

    printed = cli("--placement", f"nope-{run}")
    assert printed.returncode == 1
    assert f"no placement named 'nope-{run}' is configured" in printed.stderr
    printed = cli("--placement", name, "--control", "Z")
    assert printed.returncode == 1 and "one of ['A', 'B']" in printed.stderr
    printed = cli("--placement", name)
    assert printed.returncode == 0 and "not enough data" in printed.stdout


def test_a_placement_is_read_back_and_deleted_with_what_it_owns(client, run):
    name = f"gone-{run}"
    assert client.get(f"/admin/placements/{name}").status_code == 404
    client.put(f"/admin/placements/{name}", json=SPLIT)
    stored = client.get(f"/admin/placements/{name}").json()
    assert stored["name"] == name and stored["version"] == 1
    assert [v["name"] for v in stored["variants"]] == ["A", "B"]
    wait_for(lambda: len(client.get("/popular").json()["items"]) > 0)
    _show_and_click(client, name, f"{run}-u")
    assert wait_for(lambda: _report(client, name).json()["outcomes"].get("credited"),
                    timeout=30)
    assert wait_for(lambda: name in _dashboard_placements(client), timeout=10)

    deleted = client.delete(f"/admin/placements/{name}")
    assert deleted.status_code == 200
    removed = deleted.json()["removed"]
    assert removed["configuration"] == 1 and removed["log_entries"] == 1
    assert removed["variant_counters"] >= 2 and removed["outcomes"] >= 1
    assert client.get(f"/admin/placements/{name}").status_code == 404
    assert _report(client, name).status_code == 404
    assert client.get(f"/admin/placements/{name}/log").status_code == 404
    assert client.delete(f"/admin/placements/{name}").status_code == 404
    assert name not in client.get("/admin/placements").json()
    assert wait_for(lambda: name not in _dashboard_placements(client), timeout=10)


def test_a_filter_is_read_back(client, run):
    name = f"cheap_{run}"
    assert client.get(f"/admin/filters/{name}").status_code == 404
    expression = "EXCLUDE ItemID WHERE Items.price > $MAX"
    client.put(f"/admin/filters/{name}", json={"expression": expression})
    stored = client.get(f"/admin/filters/{name}").json()
    assert stored["expression"] == expression and stored["parameters"] == ["MAX"]
    assert stored["name"] == name


def test_what_is_stored_about_a_user(client, run):
    user = f"{run}-ann"
    assert client.get(f"/users/{user}").status_code == 404
    assert client.put(f"/users/{user}", json={"properties": {"segment": "new"}}
                      ).status_code == 202
    events = [{"user_id": user, "item_id": f"{run}-tea", "event_type": "view"},
              {"user_id": user, "item_id": f"{run}-tea", "event_type": "purchase"},
              {"user_id": user, "item_id": f"{run}-cup", "event_type": "view"}]
    assert client.post("/events", json=events).status_code == 202
    stored = wait_for(lambda: (r := client.get(f"/users/{user}")).status_code == 200 and len(
        r.json()["recent_items"]) == 2 and r.json()["properties"] and r.json(), timeout=30)
    assert stored["properties"] == {"segment": "new"}
    by_item = {entry["item_id"]: entry for entry in stored["recent_items"]}
    assert by_item[f"{run}-tea"]["event_types"] == ["purchase", "view"]
    assert by_item[f"{run}-cup"]["event_types"] == ["view"]
    assert len(client.get(f"/users/{user}", params={"limit": 1}).json()["recent_items"]) == 1
    assert client.get(f"/users/{user}", params={"limit": 0}).status_code == 422
