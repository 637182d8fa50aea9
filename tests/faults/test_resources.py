"""Item 5: supervising many jobs leaks nothing — no zombie, no stray process, no file
descriptor — in a long-lived :class:`~agent_exec.JobRunner` and through the CLI."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import anyio
import pytest

from agent_exec import JobRunner

from .conftest import Cli, find_supervisors, poll_until, proc_stat_fields, read_state_file

pytestmark = pytest.mark.faults


def _open_fds() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")}


def _fd_targets(fds: set[int]) -> dict[int, str]:
    targets = {}
    for fd in fds:
        try:
            targets[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass
    return targets


def _process_table() -> list[list[str]]:
    """``[pid, state, ppid, pgrp, ...]`` for every process visible now."""
    table = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = proc_stat_fields(int(name))
            if fields is not None:
                table.append([name, *fields])
    return table


def _zombie_children() -> list[int]:
    me = str(os.getpid())
    return [int(row[0]) for row in _process_table() if row[2] == me and row[1] == "Z"]


def _live_in_groups(pgids: set[int]) -> list[int]:
    return [int(row[0]) for row in _process_table() if row[1] not in ("Z", "X") and int(row[3]) in pgids]


@pytest.mark.asyncio
async def test_a_thousand_jobs_in_one_runner_leak_nothing(root: Path) -> None:
    # Warm up once: the event loop's own descriptors and worker threads exist afterwards.
    async with JobRunner(root) as runner:
        await (await runner.run(["true", "x"])).wait()
    fds_before = _open_fds()
    async with JobRunner(root, max_concurrency=32) as runner:
        jobs = []
        for index in range(1000):
            # Mixed outcomes: output on both streams, non-zero exits, and a signal death.
            command = f"echo out-{index}; echo err-{index} >&2; exit {index % 3}"
            if index % 100 == 99:
                command = "kill -9 $$"
            jobs.append(await runner.run(command, shell_wrapper=["/bin/sh", "-c"]))
        with anyio.fail_after(120):
            results = [await job.wait() for job in jobs]
    fds_after = _open_fds()
    assert fds_after - fds_before == set(), _fd_targets(fds_after - fds_before)
    for index, (job, result) in enumerate(zip(jobs, results, strict=True)):
        if index % 100 == 99:
            assert result.state == "killed" and result.signal == signal.SIGKILL, result
        else:
            assert result.state == "exited" and result.exit_code == index % 3, result
            assert job.stdout_log_path.read_bytes() == f"out-{index}\n".encode()
    assert _zombie_children() == []
    pgids = {read_state_file(root, job.job_id)["pid"] for job in jobs}
    assert len(pgids) == 1000
    assert _live_in_groups(pgids) == []


def test_cli_jobs_leave_no_zombie_and_no_stray_process(cli: Cli, root: Path) -> None:
    jobs = [cli("run", "--no-wait", "--", "sh", "-c", "sleep 0.2 & echo $!").doc["job_id"] for _ in range(10)]
    for job_id in jobs:
        assert cli("wait", "--until", "20", job_id).doc["state"] == "exited"
    pgids = {read_state_file(root, job_id)["pid"] for job_id in jobs}
    # Supervisors exit right after the terminal state; the background sleeps end by themselves.
    poll_until(lambda: not any(find_supervisors(job_id) for job_id in jobs), timeout=5)
    poll_until(lambda: not _live_in_groups(pgids), timeout=5)
    assert _zombie_children() == []
