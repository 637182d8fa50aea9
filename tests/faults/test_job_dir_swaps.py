"""Issue 15 defect 5: a job directory renamed away, or swapped for a symlink to a directory
holding a crafted ``meta.json``, while its job runs. The supervisor holds the directory by
descriptor: nothing is written through the planted symlink, the crafted ``notify_command``
never runs, and the job's real record lands in its real (moved) directory."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from .conftest import Cli, assert_no_traceback, poll_until, py

pytestmark = pytest.mark.faults

_WAIT_FOR_GO = (
    "import os, sys, time\nopen(sys.argv[1] + '.started', 'w').close()\n"
    "while not os.path.exists(sys.argv[1]): time.sleep(0.01)\nprint('done')"
)


def _terminal(job_dir: Path) -> dict[str, object] | None:
    try:
        state = orjson.loads((job_dir / "state.json").read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return state if state["job"]["status"] in ("exited", "killed", "failed") else None


def test_swapped_job_directory_is_not_written_through_and_its_meta_never_runs(
    cli: Cli, root: Path, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    marker = tmp_path / "notified"
    pwned = tmp_path / "pwned"
    doc = cli("run", "--no-wait", "--notify-command", f"touch {marker}", "--", *py(_WAIT_FOR_GO), str(go)).doc
    job_id = doc["job_id"]
    poll_until(lambda: os.path.exists(f"{go}.started"))
    real = root / job_id
    moved = root / f"{job_id}.moved"
    # The attacker's directory: a crafted meta.json whose notify_command proves it ran.
    trap = tmp_path / "trap"
    trap.mkdir()
    crafted = orjson.loads((real / "meta.json").read_bytes())
    crafted["notification"] = {"notify_command": f"touch {pwned}"}
    (trap / "meta.json").write_bytes(orjson.dumps(crafted))
    os.rename(real, moved)
    os.symlink(trap, real)
    go.touch()

    state = poll_until(lambda: _terminal(moved), timeout=30)
    assert state["job"]["status"] == "exited"
    assert state["result"]["exit_code"] == 0
    assert (moved / "stdout.log").read_bytes() == b"done\n"
    assert sorted(entry.name for entry in trap.iterdir()) == ["meta.json"]  # nothing written there
    assert not pwned.exists()
    # The user's own notify command is not run either: its event paths would lead to the trap.
    assert not marker.exists()
    # Neither the symlink nor the renamed directory is the job any more.
    for given in (job_id, job_id[:8], f"{job_id}.moved"):
        result = cli("status", given)
        assert_no_traceback(result)
        assert result.returncode == 1
        assert result.doc["error"]["code"] == "job_not_found"


def test_renamed_directory_is_not_found_by_prefix(cli: Cli, root: Path) -> None:
    job_id = cli("run", "--", "true").doc["job_id"]
    os.rename(root / job_id, root / f"{job_id}.moved")
    for given in (job_id, job_id[:6]):
        assert cli("status", given).doc["error"]["code"] == "job_not_found"
    assert cli("list").doc["jobs"] == []


def test_directory_moved_before_the_supervisor_starts_runs_nothing(
    cli: Cli, root: Path, tmp_path: Path
) -> None:
    """A ``created`` job whose directory is swapped before ``start``: never started."""
    job_id = cli("create", "--", "touch", str(tmp_path / "ran")).doc["job_id"]
    trap = tmp_path / "trap"
    os.rename(root / job_id, trap)
    os.symlink(trap, root / job_id)
    result = cli("start", job_id)
    assert_no_traceback(result)
    assert result.doc["error"]["code"] == "job_not_found"
    assert not (tmp_path / "ran").exists()
