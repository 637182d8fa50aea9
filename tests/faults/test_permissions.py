"""Item 6: a job's directory is private to its owner (0700) and so is every file in it
(0600), whatever the caller's umask — output and stdin may hold secrets."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Cli, poll_until, py

pytestmark = pytest.mark.faults


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The CLI subprocesses inherit a umask that would leave new files world-writable."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def _modes(job_dir: Path) -> dict[str, int]:
    return {entry.name: stat.S_IMODE(entry.lstat().st_mode) for entry in job_dir.iterdir()}


@pytest.mark.usefixtures("open_umask")
def test_job_directories_are_0700_and_their_files_0600(cli: Cli, root: Path, tmp_path: Path) -> None:
    events = tmp_path / "events.ndjson"
    code = "import sys; print(sys.stdin.read()); print('e', file=sys.stderr)"
    doc = cli(
        "run",
        "--stdin",
        "secret",
        "--notify-file",
        str(events),
        "--output-pattern",
        "secret",
        "--",
        *py(code),
    ).doc
    job_id = doc["job_id"]
    created = cli("create", "--stdin", "x", "--", "true").doc["job_id"]
    assert cli("wait", job_id).doc["state"] == "exited"
    assert cli("tag", "set", job_id, "--tag", "t").doc["ok"] is True
    job_dir = root / job_id
    expected = {
        "meta.json",
        "state.json",
        "stdout.log",
        "stderr.log",
        "full.log",
        "stdin.bin",
        "supervisor.lock",
    }
    # completion_event.json / notification_events.ndjson appear once notifications are delivered.
    poll_until(lambda: expected <= set(_modes(job_dir)))
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    for directory in (job_dir, root / created):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
        modes = _modes(directory)
        assert modes, directory
        for name, mode in modes.items():
            assert mode == 0o600, (directory.name, name, oct(mode))
    assert {"meta.json", "state.json", "stdin.bin"} <= set(_modes(root / created))


@pytest.mark.usefixtures("open_umask")
def test_a_custom_combined_log_is_0600(cli: Cli, tmp_path: Path) -> None:
    log = tmp_path / "logs" / "combined.log"
    doc = cli("run", "--log", str(log), "--", "echo", "hi").doc
    assert cli("wait", doc["job_id"]).doc["state"] == "exited"
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
