"""Every role's process escapes what it logs: the CLI (worker, simulate, up, import ...) and
the API (however uvicorn starts its processes) install one log record factory, so no
value from outside can start a new line or send a terminal escape, whoever logs it."""

from __future__ import annotations

import subprocess
import sys

import pytest

FORGED = "x\\n[2026-01-01 00:00:00,000] CRITICAL forged\\x1b[31m\\u2028"
LOG = f"""
import logging, sys
logging.basicConfig(stream=sys.stdout, format="%(levelname)s %(message)s", force=True)
try:
    raise ValueError("{FORGED}")
except ValueError as error:
    logging.getLogger("any.library").exception("failed: %s %r", "{FORGED}", error)
"""


@pytest.mark.parametrize("start", [
    # The CLI group's callback runs before any subcommand, here one that does nothing else.
    "from click.testing import CliRunner\nfrom streamrec.cli import main\n"
    "assert CliRunner().invoke(main, ['simulate', '--help']).exit_code == 0",
    # The API role, as uvicorn's factory builds it (importing the module builds nothing).
    "from api.main import create_app\ncreate_app()",
])
def test_each_role_writes_outside_data_escaped_on_one_line(start):
    result = subprocess.run([sys.executable, "-c", start + LOG], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    # FORGED is written here as its escaped text: what the log must show, on one line.
    assert lines[0] == f"ERROR failed: {FORGED} ValueError('{FORGED}')"
    assert lines[1] == "Traceback (most recent call last):"
    assert lines[-1] == f"ValueError: {FORGED}"
    assert not any(line.startswith("[2026") for line in lines)
    assert "\x1b" not in result.stdout and "\u2028" not in result.stdout
