"""Helpers shared by the fault tests: finding supervisors and workloads in ``/proc``,
reading job files directly, and cleaning up processes a test leaves behind on purpose."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

_TESTS = str(Path(__file__).resolve().parent.parent)
if _TESTS not in sys.path:  # ``from conftest import ...`` must find tests/conftest.py
    sys.path.insert(0, _TESTS)

from conftest import Cli, CliResult, poll_until, py  # noqa: E402

__all__ = [
    "Cli",
    "CliResult",
    "assert_no_traceback",
    "find_supervisors",
    "pid_running",
    "poll_until",
    "py",
    "read_state_file",
    "stored_status",
]


def _cmdline(pid: str) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            raw = file.read()
    except OSError:
        return []
    return [word.decode(errors="replace") for word in raw.split(b"\0") if word]


def find_supervisors(job_id: str) -> list[int]:
    """Pids whose command line reads ``... _supervise --job-id <job_id> ...``.

    ``setproctitle`` may join the title into one argv word, so the words are re-split.
    """
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        words = " ".join(_cmdline(name)).split()
        for index, word in enumerate(words[:-2]):
            if word == "_supervise" and words[index + 1] == "--job-id" and words[index + 2] == job_id:
                found.append(int(name))
                break
    # A workload between fork and exec still bears its supervisor's title: leave it out.
    parents = {pid: (proc_stat_fields(pid) or ["", "0"])[1] for pid in found}
    return [pid for pid in found if int(parents[pid]) not in found]


def proc_state(pid: int) -> str | None:
    """The one-letter state of ``pid`` (``R``, ``S``, ``Z``...), ``None`` if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            raw = file.read()
    except OSError:
        return None
    return raw[raw.rindex(b")") + 2 :].split()[0].decode()


def proc_stat_fields(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name (state, ppid, pgrp, ...)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            raw = file.read()
    except OSError:
        return None
    return raw[raw.rindex(b")") + 2 :].decode().split()


def pid_running(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    state = proc_state(pid)
    return state is not None and state not in ("Z", "X")


def processes_in_group(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``pgid``."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = proc_stat_fields(int(name))
            if fields and fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
                found.append(int(name))
    return found


def read_state_file(root: Path, job_id: str) -> dict[str, Any]:
    return orjson.loads((root / job_id / "state.json").read_bytes())  # type: ignore[no-any-return]


def stored_status(root: Path, job_id: str) -> str:
    """``state.json``'s ``job.status`` exactly as written (no staleness repair)."""
    return str(read_state_file(root, job_id)["job"]["status"])


def assert_no_traceback(result: CliResult) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert "Traceback" not in result.stdout, result.stdout


@pytest.fixture
def reaper() -> Iterator[list[int]]:
    """Process groups / pids a test leaves running on purpose; SIGKILLed at teardown."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
