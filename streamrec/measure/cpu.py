"""CPU time of the bench's processes, read from ``/proc`` (Linux): where an ingest's events
spend the machine's cores. Elsewhere every reading is ``None`` and the bench leaves the
figure out."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

PROC = Path("/proc")


def _ticks(pid: int, proc: Path) -> tuple[int, list[int]] | None:
    """User and system ticks of ``pid`` with its reaped children's (``cutime``, ``cstime``:
    Redis's AOF rewrites, for one), and its live children's pids; None once it is gone."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
        children = [int(child) for task in (proc / str(pid) / "task").iterdir()
                    for child in (task / "children").read_text().split()]
    except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the name, in parentheses, may hold spaces
    return sum(int(field) for field in fields[11:15]), children


def cpu_seconds(pid: int, below: bool = True, proc: Path = PROC) -> float | None:
    """CPU seconds ``pid`` has used so far, with ``below`` every process under it too (the
    live ones and those reaped). None when ``pid`` is gone or there is no ``/proc``.

    >>> cpu_seconds(os.getpid()) > 0
    True
    >>> cpu_seconds(2 ** 22 + 1) is None
    True
    """
    walk = _tree(pid, proc)
    tree = dict(walk if below else itertools.islice(walk, 1))  # pid itself comes first
    if pid not in tree:
        return None
    return sum(tree.values()) / os.sysconf("SC_CLK_TCK")


def descendants(pid: int, proc: Path = PROC) -> set[int]:
    """Every live process under ``pid`` (none once it is gone).

    >>> import subprocess, sys
    >>> child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    >>> child.pid in descendants(os.getpid())
    True
    >>> child.kill(); child.wait()
    -9
    """
    return {found for found, _ in _tree(pid, proc) if found != pid}


def _tree(pid: int, proc: Path) -> Iterable[tuple[int, int]]:
    """``pid`` and every live process under it, each with its ticks (each read once)."""
    pending = [pid]
    while pending:
        current = pending.pop()
        read = _ticks(current, proc)
        if read is not None:
            yield current, read[0]
            pending.extend(read[1])


def snapshot(roles: Mapping[str, Iterable[int]], alone: Iterable[str] = (),
             proc: Path = PROC) -> dict[str, float]:
    """CPU seconds per role (each role's processes summed, with the processes under them
    unless the role is in ``alone``), for the roles that can be read."""
    taken = {}
    for role, pids in roles.items():
        seconds = [cpu_seconds(pid, role not in alone, proc) for pid in pids]
        if seconds and all(value is not None for value in seconds):
            taken[role] = sum(seconds)
    return taken


def per_event(before: Mapping[str, float], after: Mapping[str, float], events: int,
              seconds: float) -> dict[str, dict[str, float]]:
    """Each role's CPU between two snapshots: µs per event and share of a core.

    >>> per_event({"redis": 1.0}, {"redis": 1.5, "kafka": 2.0}, 10_000, 2.0)
    {'redis': {'us_per_event': 50.0, 'cores': 0.25}}
    """
    return {role: {"us_per_event": 1e6 * (after[role] - before[role]) / max(events, 1),
                   "cores": (after[role] - before[role]) / max(seconds, 1e-9)}
            for role in before if role in after}
