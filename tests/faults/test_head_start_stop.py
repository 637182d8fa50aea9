"""A supervisor stopped during its synchronous head start (before its event loop is
loaded) does not count the stop in the workload's duration either."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import orjson
import pytest

from conftest import Cli, poll_until

pytestmark = pytest.mark.faults


def _supervisor_of(job_id: str) -> int | None:
    needle = f"_supervise --job-id {job_id}".encode()
    with os.scandir("/proc") as entries:
        for entry in entries:
            if entry.name.isdigit():
                try:
                    with open(f"/proc/{entry.name}/cmdline", "rb") as file:
                        if needle in file.read():
                            return int(entry.name)
                except OSError:
                    continue
    return None


def test_stop_right_after_the_spawn_is_not_counted_in_duration(cli: Cli, root: Path) -> None:
    job_id = orjson.loads(cli("run", "--no-wait", "--", "sleep 0.3").stdout)["job_id"]
    supervisor = poll_until(lambda: _supervisor_of(job_id))
    state_file = root / job_id / "state.json"
    poll_until(lambda: b'"workload"' in state_file.read_bytes(), interval=0.002)
    os.kill(supervisor, signal.SIGSTOP)  # at once: most likely still in the head start
    try:
        time.sleep(2.0)  # the workload ends during the stop
    finally:
        os.kill(supervisor, signal.SIGCONT)
    waited = orjson.loads(cli("wait", "--until", "10", job_id).stdout)
    assert waited["state"] == "exited", waited
    assert waited["duration_ms"] < 1500, waited
    assert 0 <= waited["supervisor_stopped_ms"] <= 2500, waited
