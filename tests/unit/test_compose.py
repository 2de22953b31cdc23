"""Static checks of docker-compose.yml and the Dockerfile against the code they run.

No Docker engine is needed: the point is to catch drift (a renamed setting, a new package, a
Kafka upgrade) that would only show up when someone runs ``docker compose up``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
import subprocess
import tomllib
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import yaml
from dotenv import dotenv_values

from streamrec.local.services import KAFKA_VERSION, REDIS_MEMORY_ARGS
from streamrec.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "STREAMREC_"
ROLES = ("worker", "api", "trainer", "simulator")
SUBCOMMANDS = {"worker", "api", "trainer", "simulate"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    # safe_load resolves the `<<: *anchor` merge keys the same way Compose does.
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


# Compose's interpolation: ${VAR}, ${VAR:-default}, ${VAR:?error} (the forms this file uses).
VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:-|:\?)(?P<arg>[^}]*))?\}")


class Refused(Exception):
    """``${VAR:?message}`` with VAR unset: Compose stops with the message."""


def interpolate(text: str, variables: dict[str, str]) -> str:
    def value(match: re.Match) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        if variables.get(name):
            return variables[name]
        if op == ":?":
            raise Refused(f"{name}: {arg}")
        return arg if op == ":-" else ""

    return VARIABLE.sub(value, text)


@pytest.fixture(scope="module")
def dotenv(tmp_path_factory) -> dict[str, str]:
    """The .env scripts/compose-env.sh writes, as Compose reads it."""
    path = tmp_path_factory.mktemp("compose") / ".env"
    subprocess.run([ROOT / "scripts" / "compose-env.sh", str(path)], check=True,
                   capture_output=True)
    return {k: v or "" for k, v in dotenv_values(path).items()}


def environment(service: dict[str, Any], variables: dict[str, str] | None = None
                ) -> dict[str, str]:
    """A service's environment as a dict, whichever of Compose's two forms it uses,
    interpolated with ``variables`` (as from .env) when given."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    found = {str(key): "" if value is None else str(value) for key, value in env.items()}
    if variables is not None:
        found = {key: interpolate(value, variables) for key, value in found.items()}
    return found


def command(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command") or []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(part) for part in cmd]


def container_ports(service: dict[str, Any]) -> list[int]:
    """Container-side ports of ``ports``, short ("[ip:]host:container[/proto]") or long form."""
    ports: list[int] = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            ports.append(int(entry["target"]))
        else:
            ports.append(int(str(entry).split("/", 1)[0].rsplit(":", 1)[-1]))
    return ports


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with comments dropped and continuations joined."""
    logical: list[str] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    if pending:
        logical.append(pending)
    pairs = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        pairs.append((keyword.upper(), args.strip()))
    return pairs


def copied_sources() -> set[str]:
    """Every source path named by a COPY/ADD (not --from= stages), normalised ("./x/" -> "x")."""
    sources: set[str] = set()
    for keyword, args in dockerfile_instructions():
        if keyword not in {"COPY", "ADD"}:
            continue
        if "--from=" in args:
            continue  # copies out of another build stage, not out of the repository
        if args.startswith("["):
            parts = yaml.safe_load(args)  # the JSON form is valid YAML
        else:
            parts = [p for p in shlex.split(args) if not p.startswith("--")]
        for src in parts[:-1]:
            sources.add(str(src).removeprefix("./").rstrip("/") or ".")
    return sources


def test_the_five_services_exist(services: dict[str, dict[str, Any]]) -> None:
    assert {"kafka", "redis", *ROLES} <= services.keys()


def test_redis_runs_with_the_memory_settings_of_the_local_one(
        services: dict[str, dict[str, Any]]) -> None:
    command = services["redis"]["command"]
    pairs = list(zip(REDIS_MEMORY_ARGS[::2], REDIS_MEMORY_ARGS[1::2], strict=True))
    assert all(command[command.index(name) + 1] == value for name, value in pairs)


def test_kafka_image_matches_the_local_broker_version(services: dict[str, dict[str, Any]]) -> None:
    image, _, tag = services["kafka"]["image"].partition(":")
    assert image == "apache/kafka"
    assert tag == KAFKA_VERSION


@pytest.mark.parametrize("name", ["kafka", "redis", *ROLES])
def test_streamrec_env_vars_are_settings_fields(
    services: dict[str, dict[str, Any]], name: str, monkeypatch: pytest.MonkeyPatch,
    dotenv: dict[str, str],
) -> None:
    env = {k: v for k, v in environment(services[name], dotenv).items()
           if k.startswith(PREFIX)}
    unknown = {k for k in env if k.removeprefix(PREFIX).lower() not in Settings.model_fields}
    # extra="ignore" means a misspelt name would be dropped silently at run time.
    assert not unknown, f"{name}: not fields of Settings: {sorted(unknown)}"

    # The values must also parse, read exactly as the container would read them.
    for key in [k for k in os.environ if k.startswith(PREFIX)]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    for key, value in env.items():
        parsed = getattr(settings, key.removeprefix(PREFIX).lower())
        assert (parsed == yaml.safe_load(value)) if isinstance(parsed, dict) else (
            str(parsed) == value)


@pytest.mark.parametrize(("name", "variable"), [("api", "STREAMREC_API_KEYS"),
                                                ("simulator", "STREAMREC_CLIENT_API_KEY")])
def test_compose_refuses_to_start_without_keys(
        services: dict[str, dict[str, Any]], name: str, variable: str) -> None:
    raw = environment(services[name])[variable]
    assert re.fullmatch(r"\$\{" + variable + r":\?[^}]+\}", raw), raw
    with pytest.raises(Refused, match="scripts/compose-env.sh"):
        environment(services[name], {})


def test_compose_env_writes_a_key_per_role_for_this_user_only(
        dotenv: dict[str, str], tmp_path: Path) -> None:
    keys = Settings(api_keys=json.loads(dotenv["STREAMREC_API_KEYS"]),
                    environment="production").load_api_keys()  # refuses weak keys
    assert sorted(keys.values()) == ["admin", "read", "write"]
    assert keys[dotenv["STREAMREC_CLIENT_API_KEY"]] == "write"
    path = tmp_path / ".env"
    script = ROOT / "scripts" / "compose-env.sh"
    subprocess.run([script, str(path)], check=True, capture_output=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    written = path.read_text()
    subprocess.run([script, str(path)], check=True, capture_output=True)
    assert path.read_text() == written  # a second run keeps the keys
    assert dotenv_values(path)["STREAMREC_API_KEYS"] != dotenv["STREAMREC_API_KEYS"]


def test_every_port_is_published_on_loopback_unless_opted_in(
        services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for entry in service.get("ports") or []:
            published = interpolate(str(entry), {})
            assert published.startswith("127.0.0.1:"), f"{name}: {entry}"
    api_ports = [str(entry) for entry in services["api"]["ports"]]
    opened = [interpolate(entry, {"API_PUBLISH_ADDRESS": "0.0.0.0"}) for entry in api_ports]
    assert opened == ["0.0.0.0:8000:8000"]


@pytest.mark.parametrize("name", ROLES)
def test_roles_wait_for_healthy_kafka_and_redis(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    depends_on = services[name].get("depends_on")
    # The list form of depends_on only waits for "started", which is too early for Kafka.
    assert isinstance(depends_on, dict), f"{name}: depends_on needs the long (mapping) form"
    for dependency in ("kafka", "redis"):
        assert depends_on.get(dependency, {}).get("condition") == "service_healthy", (
            f"{name} must wait for {dependency} to be healthy"
        )


def test_healthy_conditions_point_at_services_with_healthchecks(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in ("kafka", "redis", "api"):
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    for name, service in services.items():
        for dependency, spec in (service.get("depends_on") or {}).items():
            if spec.get("condition") == "service_healthy":
                # Otherwise `docker compose up` fails: the dependency never becomes healthy.
                assert services[dependency].get("healthcheck"), f"{name} -> {dependency}"


def test_kafka_healthcheck_asks_the_broker_for_metadata(
    services: dict[str, dict[str, Any]],
) -> None:
    test = services["kafka"]["healthcheck"]["test"]
    assert "kafka-broker-api-versions.sh" in " ".join(test if isinstance(test, list) else [test])


def test_api_publishes_and_probes_its_configured_port(
    services: dict[str, dict[str, Any]],
) -> None:
    api = services["api"]
    env = environment(api)
    assert env.get("STREAMREC_API_HOST") == "0.0.0.0"
    port = int(env["STREAMREC_API_PORT"])
    assert container_ports(api) == [port]
    probe = " ".join(api["healthcheck"]["test"])
    assert f":{port}/readyz" in probe


@pytest.mark.parametrize("name", ROLES)
def test_role_commands_are_streamrec_subcommands(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    argv = command(services[name])
    assert argv[:1] == ["streamrec"], f"{name}: {argv}"
    assert len(argv) >= 2 and argv[1] in SUBCOMMANDS, f"{name}: {argv}"


@pytest.mark.parametrize("name", ROLES)
def test_roles_are_built_from_this_repository(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    build = services[name].get("build")
    context = build.get("context") if isinstance(build, dict) else build
    assert context in {".", "./"}


def test_named_volumes_are_declared(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for volume in service.get("volumes") or []:
            source = volume.get("source") if isinstance(volume, dict) else volume.split(":")[0]
            if source and not source.startswith((".", "/", "~")):
                assert source in declared, f"{name}: volume {source!r} is not declared"


def test_dockerfile_installs_every_package() -> None:
    runs = [args for keyword, args in dockerfile_instructions() if keyword == "RUN"]
    installs = [shlex.split(args) for args in runs if "pip install" in args]
    assert installs, "the Dockerfile never runs pip install"
    assert any("." in argv for argv in installs), "pip install must install this project (.)"

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {p.split(".", 1)[0].rstrip("*") for p in patterns}
    sources = copied_sources()
    missing = sorted(package for package in packages if package not in sources)
    # setuptools would just leave an uncopied package out of the image, with no error.
    assert not missing, f"the Dockerfile does not COPY: {missing}"
    needed = {"pyproject.toml"}
    readme = pyproject["project"].get("readme")
    if isinstance(readme, str):
        needed.add(readme)  # the build fails when the declared readme is absent
    file_options = {"-c", "-r", "--constraint", "--requirement"}
    for argv in installs:
        # Requirement and constraint files given to pip must be in the image too.
        needed.update(value for option, value in pairwise(argv) if option in file_options)
    assert needed <= sources, f"pip install needs these COPY'd: {sorted(needed - sources)}"
