"""Issue 15, defect 5 and weaknesses: a jobs root another user can change is refused at use
(``unsafe_root``, nothing created, nothing run) unless ``AGENT_EXEC_UNSAFE_ROOT=1``; a
dangling symlinked root says so instead of "File exists"."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Cli, assert_no_traceback

pytestmark = pytest.mark.faults


@pytest.fixture
def other_user() -> Iterator[str]:
    """A throwaway user (removed afterwards) to own things the caller must not trust."""
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("needs root and useradd to create a throwaway user")
    name = f"aexr{os.getpid() % 100000}"
    created = subprocess.run(["useradd", "-M", "-s", "/bin/sh", name], capture_output=True, text=True)
    if created.returncode != 0:
        pytest.skip(f"cannot create a user: {created.stderr.strip()}")
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], capture_output=True)


def _refused(cli: Cli, root: Path, marker: Path, env: dict[str, str] | None = None) -> str:
    result = cli("run", "--", "touch", str(marker), env=env)
    assert_no_traceback(result)
    assert result.returncode == 1
    error = result.doc["error"]
    assert error["code"] == "unsafe_root", error
    assert not marker.exists()
    return str(error["message"])


def test_a_root_owned_by_another_user_is_refused(
    cli: Cli, root: Path, tmp_path: Path, other_user: str, cli_env: dict[str, str]
) -> None:
    root.mkdir(mode=0o700)
    shutil.chown(root, other_user, other_user)
    message = _refused(cli, root, tmp_path / "ran")
    assert "owned by uid" in message and str(root) in message
    assert list(root.iterdir()) == []
    for args in (("list",), ("gc",), ("status", "0" * 32)):
        result = cli(*args)
        assert result.returncode == 1 and result.doc["error"]["code"] == "unsafe_root", result.stdout
    # The documented, unsafe override.
    env = {**cli_env, "AGENT_EXEC_UNSAFE_ROOT": "1"}
    assert cli("run", "--", "touch", str(tmp_path / "ran"), env=env).doc["state"] == "exited"
    assert (tmp_path / "ran").exists()


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o1777], ids=["world", "group", "sticky"])
def test_a_root_writable_by_others_is_refused(cli: Cli, root: Path, tmp_path: Path, mode: int) -> None:
    root.mkdir()
    root.chmod(mode)
    message = _refused(cli, root, tmp_path / "ran")
    assert "writable by" in message
    assert list(root.iterdir()) == []


def test_a_parent_another_user_can_rename_is_refused(cli: Cli, tmp_path: Path) -> None:
    parent = tmp_path / "shared"
    parent.mkdir()
    parent.chmod(0o777)  # not sticky: anyone may rename the root away and put another in place
    root = parent / "jobs"
    result = cli("--root", str(root), "run", "--", "true", use_root=False)
    assert result.doc["error"]["code"] == "unsafe_root"
    assert "above the jobs root" in result.doc["error"]["message"]
    parent.chmod(0o1777)  # sticky, like /tmp: others cannot rename what is not theirs
    assert cli("--root", str(root), "run", "--", "true", use_root=False).doc["state"] == "exited"


def test_roots_made_by_agent_exec_are_private_and_accepted(cli: Cli, tmp_path: Path) -> None:
    os.umask(previous := os.umask(0))
    try:
        root = tmp_path / "x" / "jobs"
        assert cli("--root", str(root), "run", "--", "true", use_root=False).doc["state"] == "exited"
    finally:
        os.umask(previous)
    assert root.stat().st_mode & 0o777 == 0o700
    # The default root under $XDG_DATA_HOME as well.
    assert cli("run", "--", "true", use_root=False).doc["state"] == "exited"


def test_a_dangling_symlinked_root_says_what_is_wrong(cli: Cli, tmp_path: Path) -> None:
    root = tmp_path / "jobs"
    root.symlink_to(tmp_path / "gone")
    for args in (("run", "--", "true"), ("create", "--", "true"), ("list",)):
        result = cli(*args)
        assert_no_traceback(result)
        error = result.doc["error"]
        assert error["code"] == "unsafe_root", error
        assert "File exists" not in error["message"]
        assert "symlink" in error["message"] and "does not exist" in error["message"]
    assert not (tmp_path / "gone").exists()
