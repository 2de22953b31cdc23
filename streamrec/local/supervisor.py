"""The one process supervisor: starts streamrec's roles (``python -m streamrec.cli ...``)
and local services, and stops them all, whatever happened. ``streamrec up``, the bench and
the soak use it.

Roles stop first, each within ``ROLE_STOP_SECONDS`` of SIGTERM (one that does not, a
stopped process say, is killed), then the services, newest first, in their own process
groups.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from streamrec.shutdown import ROLE_STOP_SECONDS, SERVICE_STOP_SECONDS

# How a role is started: the CLI of the Python that runs this (so a venv's stays a venv's).
CLI = (sys.executable, "-m", "streamrec.cli")
# Where the code this process runs was imported from: the roles import theirs from there
# too (role_env), whatever the directory they start in holds.
CODE_ROOT = Path(__file__).resolve().parents[2]


def role_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` for a role, so that it runs the code this process runs. ``python -m`` puts
    the current directory first on ``sys.path``, ahead of ``PYTHONPATH``: a bench started
    from one checkout with ``PYTHONPATH`` naming another ran its roles from the first.
    ``PYTHONSAFEPATH`` leaves the directory out, and :data:`CODE_ROOT` comes first."""
    path = [str(CODE_ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    return {**env, "PYTHONPATH": os.pathsep.join(path), "PYTHONSAFEPATH": "1"}


def code_identity() -> str:
    """Which code runs: :data:`CODE_ROOT`, with its git commit (``+`` when its files
    differ from it) where it is a checkout."""
    try:
        commit = subprocess.run(["git", "-C", str(CODE_ROOT), "describe", "--always",
                                 "--dirty=+", "--abbrev=7"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{CODE_ROOT}" + (f" ({commit})" if commit else "")


class Service(Protocol):
    """A local service the supervisor stops (``streamrec.local.services``)."""

    @property
    def processes(self) -> list[subprocess.Popen]: ...


@dataclass
class Supervisor:
    """Roles and services started for one run; each role logs to ``log_dir/<name>.log``."""

    log_dir: Path
    services: list[Service] = field(default_factory=list)
    processes: list[subprocess.Popen] = field(default_factory=list)
    roles: dict[str, subprocess.Popen] = field(default_factory=dict)  # the latest per name

    def log(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def spawn(self, name: str, arguments: list[str], env: dict[str, str]
              ) -> subprocess.Popen:
        """Start ``streamrec <arguments>`` as role ``name``, logging to :meth:`log`."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log(name), "ab") as log:
            process = subprocess.Popen([*CLI, *arguments], env=role_env(env), stdout=log,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.processes.append(process)
        self.roles[name] = process
        return process

    def exited(self, may_finish: tuple[str, ...] = ()) -> list[str]:
        """Each role that exited (but those in ``may_finish``), as "name exited with N"."""
        return [f"{name} exited with {process.returncode}"
                for name, process in self.roles.items()
                if name not in may_finish and process.poll() is not None]

    def stop_roles(self) -> None:
        _stop_all(self.processes, ROLE_STOP_SECONDS + 2, os.kill)
        self.processes.clear()
        self.roles.clear()

    def stop(self) -> None:
        """The roles, then the services, newest first."""
        self.stop_roles()
        _stop_all([process for service in reversed(self.services)
                   for process in service.processes],
                  SERVICE_STOP_SECONDS, os.killpg)  # their own process groups


def _stop_all(processes: list[subprocess.Popen], seconds: float,
              send: Callable[[int, int], None]) -> None:
    running = [p for p in processes if p.poll() is None]
    for process in running:
        send(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + seconds
    for process in running:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            send(process.pid, signal.SIGKILL)  # works on a stopped (SIGSTOP) process too
            process.wait()
