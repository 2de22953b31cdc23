"""The roles a supervisor starts run the code that started them, not whatever the
directory they start in holds (``python -m`` puts it first on ``sys.path``)."""

from __future__ import annotations

import os

from streamrec.local.supervisor import CODE_ROOT, Supervisor, code_identity, role_env


def test_a_role_started_beside_another_checkout_runs_this_code(tmp_path, monkeypatch):
    decoy = tmp_path / "checkout" / "streamrec"
    (decoy / "cli").mkdir(parents=True)
    (decoy / "__init__.py").write_text("")
    (decoy / "cli" / "__init__.py").write_text("")
    (decoy / "cli" / "__main__.py").write_text("print('the other checkout')\n")
    monkeypatch.chdir(decoy.parent)
    supervisor = Supervisor(tmp_path / "logs")
    process = supervisor.spawn("role", ["--help"], dict(os.environ, PYTHONPATH=""))
    assert process.wait(timeout=60) == 0
    log = supervisor.log("role").read_text()
    assert "streamrec: real-time recommendations" in log
    assert "the other checkout" not in log


def test_the_role_environment_puts_this_code_first_and_says_which_it_is():
    env = role_env({"PYTHONPATH": "/elsewhere", "OTHER": "kept"})
    assert env["PYTHONPATH"].split(os.pathsep) == [str(CODE_ROOT), "/elsewhere"]
    assert env["PYTHONSAFEPATH"] == "1" and env["OTHER"] == "kept"
    assert code_identity().startswith(str(CODE_ROOT))
