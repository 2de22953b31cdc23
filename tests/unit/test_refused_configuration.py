"""A refused configuration is one line naming the setting and what is wrong, and a non-zero
exit, for every command and role: never a traceback (the processes are real, no service is
needed: the refusal comes before anything connects)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from streamrec.cli import main

COMMANDS = sorted(main.commands)
SECRET = "s3cr3t-s3cr3t-s3cr3t"


def _streamrec(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {name: value for name, value in os.environ.items()
             if not name.startswith("STREAMREC_")}
    return subprocess.run([sys.executable, "-m", "streamrec.cli", *args], env={**clean, **env},
                          capture_output=True, text=True, timeout=60)


def _one_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and not result.stdout, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_every_command_refuses_a_bad_setting_in_one_line_naming_it():
    # Every command at once in one process each: the refusal precedes its own options.
    for command in COMMANDS:
        line = _one_line(_streamrec(command, STREAMREC_API_PORT="eighty"))
        assert line == ("Error: STREAMREC_API_PORT: Input should be a valid integer, unable "
                        "to parse string as an integer (got 'eighty')"), command


@pytest.mark.parametrize(("args", "env", "expected"), [
    (["api"], {"STREAMREC_ENVIRONMENT": "production"},
     "Error: STREAMREC_ENVIRONMENT is production but no API keys are configured: set "
     "STREAMREC_API_KEYS or STREAMREC_API_KEYS_FILE"),
    (["--log-level", "bogus", "worker"], {},
     "Error: --log-level: 'bogus' is not one of debug, info, warning, error, critical"),
    (["worker", "--log-level", "bogus"], {},
     "Error: --log-level: 'bogus' is not one of debug, info, warning, error, critical"),
    (["report"], {"STREAMREC_DEFAULT_MODEL": "best"},
     "Error: STREAMREC_DEFAULT_MODEL: 'best' is not one of ['popular', 'cooccurrence', "
     "'mf', 'hybrid'] (got 'best')"),
    (["versions"], {"STREAMREC_ENVIRONMENT": "staging"},
     "Error: STREAMREC_ENVIRONMENT: Input should be 'development' or 'production' "
     "(got 'staging')"),
    (["versions"], {"STREAMREC_EVENT_WEIGHTS": "{view: 1}"},
     "Error: STREAMREC_EVENT_WEIGHTS: not valid JSON"),
    # A NaN or a huge weight would make every view's increment NaN or infinite: the store
    # refuses such a batch, and the worker would take it again and again.
    (["versions"], {"STREAMREC_EVENT_WEIGHTS": '{"view": NaN}'},
     "Error: STREAMREC_EVENT_WEIGHTS: event type 'view' needs a name and a weight from 0 "
     "to 1,000,000 (got nan)"),
    (["versions"], {"STREAMREC_EVENT_WEIGHTS": '{"view": 1, "like": 1e308}'},
     "Error: STREAMREC_EVENT_WEIGHTS: event type 'like' needs a name and a weight from 0 "
     "to 1,000,000 (got 1e+308)"),
    (["api"], {"STREAMREC_API_KEYS_FILE": "/nonexistent/keys.json"},
     "Error: STREAMREC_API_KEYS_FILE: /nonexistent/keys.json: No such file or directory"),
])
def test_refusals_name_the_setting_and_what_is_wrong(args, env, expected):
    assert _one_line(_streamrec(*args, **env)) == expected


def test_a_secret_is_named_but_never_shown():
    for env in ({"STREAMREC_API_KEYS": f'{{"{SECRET}": "boss"}}'},
                {"STREAMREC_API_KEYS": f'{{"{SECRET}": '},
                {"STREAMREC_API_KEYS": f'{{"{SECRET[:8]}": "admin"}}'}):  # too short
        line = _one_line(_streamrec("api", **env))
        assert line.startswith("Error: STREAMREC_API_KEYS: ") and SECRET[:8] not in line


def test_help_still_shows_whatever_the_environment_holds():
    shown = _streamrec("worker", "--help", STREAMREC_API_PORT="eighty")
    assert shown.returncode == 0 and "Usage: " in shown.stdout
