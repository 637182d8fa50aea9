"""Issue 15 weakness: bytes that are not UTF-8 in argv, ``--env``, ``--cwd`` and the caller's
current directory gave ``internal_error`` (and nothing could run from such a directory).

Decision: a job's definition is recorded as JSON text, so undecodable bytes in what the
caller *asks for* are refused with ``invalid_argument`` naming the argument and the byte,
before anything is created or run; a caller's current directory that is not UTF-8 is no
reason to refuse ``run``: the job runs there, ``meta.json`` records the name with U+FFFD
in place of the bad bytes (so ``list``/``delete --all`` from that directory still find it).
``create`` refuses it (``start`` would need the exact directory from the record).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .conftest import Cli, assert_no_traceback

pytestmark = pytest.mark.faults

BAD = os.fsdecode(b"\xff\xfe")


def _invalid(cli: Cli, root: Path, *args: str, cwd: Path | None = None) -> str:
    result = cli(*args, cwd=cwd)
    assert_no_traceback(result)
    assert result.returncode == 1
    error = result.doc["error"]
    assert error["code"] == "invalid_argument", error
    assert not root.exists() or list(root.iterdir()) == []
    return str(error["message"])


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("run", "--", "echo", BAD), "command word 2"),
        (("run", "--env", f"K={BAD}", "--", "true"), "--env 'K'"),
        (("run", "--cwd", f"/tmp/{BAD}", "--", "true"), "--cwd"),
        (("create", "--", f"echo {BAD}"), "command word 1"),
        (("run", "--notify-command", f"echo {BAD}", "--", "true"), "--notify-command"),
    ],
    ids=["argv", "env", "cwd", "create", "notify"],
)
def test_undecodable_arguments_are_invalid_arguments(
    cli: Cli, root: Path, args: tuple[str, ...], named: str
) -> None:
    message = _invalid(cli, root, *args)
    assert message.startswith(named) and "0xff" in message


def test_a_job_runs_from_a_current_directory_that_is_not_utf8(cli: Cli, root: Path, tmp_path: Path) -> None:
    here = Path(os.fsdecode(bytes(tmp_path) + b"/d\xff"))
    here.mkdir()
    doc = cli("run", "--", "pwd", cwd=here).doc
    assert doc["state"] == "exited" and doc["exit_code"] == 0
    assert (root / doc["job_id"] / "stdout.log").read_bytes() == bytes(here) + b"\n"
    assert [job["job_id"] for job in cli("list", cwd=here).doc["jobs"]] == [doc["job_id"]]
    assert cli("delete", "--all", "--dry-run", cwd=here).doc["jobs"][0]["job_id"] == doc["job_id"]
    message = _invalid(
        cli, tmp_path / "other-root", "--root", str(tmp_path / "other-root"), "create", "--", "true", cwd=here
    )
    assert message.startswith("the current directory")
