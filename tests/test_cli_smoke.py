"""The main job, as a user runs it."""

from __future__ import annotations

from conftest import Cli


def test_run_echo_hello_returns_exited_with_output(cli: Cli) -> None:
    result = cli("run", "--", "echo", "hello")
    assert result.returncode == 0, result.stderr
    doc = result.doc
    assert doc["ok"] is True
    assert doc["type"] == "run"
    assert doc["state"] == "exited"
    assert doc["exit_code"] == 0
    assert doc["stdout"] == "hello\n"
    assert len(doc["job_id"]) == 32
