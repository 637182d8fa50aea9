"""The key behaviours of :class:`agent_exec.JobRunner` again, under trio (anyio's pytest plugin).

This module uses only ``@pytest.mark.anyio`` (never pytest-asyncio's marker); the
process-table helpers come from ``test_api.py``.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import time
from pathlib import Path

import anyio
import pytest

from agent_exec import (
    AmbiguousJobId,
    InvalidSignal,
    InvalidState,
    Job,
    JobNotFound,
    JobRunner,
    JobStatus,
    RunnerClosed,
)
from conftest import Cli, py
from test_api import (
    apoll,
    cancel_jobs_in_flight,
    children,
    cli_doc,
    kill_leftovers,
    max_overlap,
    open_fds,
    process_gone,
    until_running,
    workload_pid,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "trio"


async def test_trio_is_the_running_backend() -> None:
    import sniffio

    assert sniffio.current_async_library() == "trio"


async def test_run_wait_result_fields(root: Path) -> None:
    code = "import sys; print('out'); print('err', file=sys.stderr); sys.exit(5)"
    async with JobRunner(root) as runner:
        job = await runner.run(py(code), stdin=b"ignored", env={"X": "1"})
        result = await job.wait()
    assert (result.job_id, result.state, result.exit_code, result.signal) == (
        job.job_id,
        JobStatus.EXITED,
        5,
        None,
    )
    assert result.ok is False and result.started_at and result.finished_at
    assert result.duration_ms is not None and result.duration_ms >= 0
    assert result.stdout_log_path.read_text() == "out\n"
    assert result.stderr_log_path.read_text() == "err\n"


async def test_cli_and_runner_share_the_store(root: Path, cli: Cli) -> None:
    from_cli = (await cli_doc(cli, "run", "--", "sh", "-c", "exit 7"))["job_id"]
    async with JobRunner(root, max_concurrency=1) as runner:
        blocker = await runner.run(["sleep", "30"])
        await until_running(blocker)  # trio does not keep queue order (see the FIFO test)
        queued = await runner.run(["true"])
        assert (await cli_doc(cli, "status", blocker.job_id))["state"] == "running"
        assert (await cli_doc(cli, "status", queued.job_id))["state"] == "created"
        other = runner.job(from_cli)
        assert (await other.wait(timeout=15)).exit_code == 7
        assert {row.job_id for row in await runner.list()} == {from_cli, blocker.job_id, queued.job_id}
        await blocker.kill("KILL")
    assert (await cli_doc(cli, "status", blocker.job_id))["state"] == "killed"
    assert (await cli_doc(cli, "status", queued.job_id))["state"] == "exited"


async def test_bounded_concurrency(root: Path, tmp_path: Path) -> None:
    limit, count = 2, 8
    peak = 0
    async with JobRunner(root, max_concurrency=limit) as runner:
        for i in range(count):
            await runner.run(
                py(
                    "import time, pathlib; s = time.monotonic(); time.sleep(0.2); "
                    f"pathlib.Path({str(tmp_path / f'iv{i}')!r}).write_text(f'{{s}} {{time.monotonic()}}')"
                )
            )
        while runner.statistics()["finished"] < count:
            peak = max(peak, runner.statistics()["running"])
            await anyio.sleep(0.005)
    assert peak == limit
    intervals = [tuple(float(w) for w in (tmp_path / f"iv{i}").read_text().split()) for i in range(count)]
    assert max_overlap(intervals) <= limit  # type: ignore[arg-type]


async def test_queued_jobs_start_in_submission_order(root: Path, tmp_path: Path) -> None:
    # trio reverses a batch of runnable tasks with probability 1/2; 20 rounds make a
    # FIFO-ignorant runner pass this with probability 2**-20.
    for round_ in range(20):
        order = tmp_path / f"order{round_}"
        async with JobRunner(root, max_concurrency=1) as runner:
            for i in range(5):
                await runner.run(f"echo {i} >> {order}")
        assert order.read_text().split() == ["0", "1", "2", "3", "4"], round_


async def test_leaving_the_block_waits_for_jobs(root: Path, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    async with JobRunner(root) as runner:
        job = await runner.run(f"sleep 0.3; echo done > {marker}")
    assert marker.read_text() == "done\n"
    assert (await job.status()).ok


async def test_cancel_kills_and_reaps_64_jobs_with_grandchildren(root: Path, tmp_path: Path) -> None:
    await cancel_jobs_in_flight(root, tmp_path)


async def test_raising_inside_the_block_kills_jobs(root: Path) -> None:
    jobs: list[Job] = []
    with pytest.raises(BaseException) as caught:
        async with JobRunner(root) as runner:
            jobs = [await runner.run(["sleep", "300"]) for _ in range(3)]
            for job in jobs:
                await until_running(job)
            raise ValueError("boom")
    value = caught.value
    assert isinstance(value, ValueError) or (
        isinstance(value, BaseExceptionGroup) and value.subgroup(ValueError) is not None
    )
    assert {(await job.status()).state for job in jobs} == {JobStatus.KILLED}
    assert children() == {}


@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
async def test_raising_right_after_run_kills_jobs(root: Path) -> None:
    jobs: list[Job] = []
    before = set(children())
    try:
        with contextlib.suppress(ValueError, BaseExceptionGroup):
            async with JobRunner(root) as runner:
                jobs = [await runner.run(["sleep", "300"]) for _ in range(3)]
                raise ValueError("boom")
        assert {(await job.status()).state for job in jobs} <= {JobStatus.KILLED, JobStatus.FAILED}
        assert set(children()) - before == set()
    finally:
        kill_leftovers(sorted(set(children()) - before))
        gc.collect()


async def test_no_fd_leak_over_500_jobs(root: Path) -> None:
    async with JobRunner(root) as runner:
        await (await runner.run(["true"])).wait()
    before = open_fds()
    async with JobRunner(root, max_concurrency=64) as runner:
        for _ in range(500):
            await runner.run(["true"])
    assert runner.statistics()["finished"] == 500
    assert open_fds() == before
    assert children() == {}


async def test_detached_job_outlives_the_block(root: Path, cli: Cli) -> None:
    async with JobRunner(root, detached=True) as runner:
        job = await runner.run(["sleep", "300"])
    assert (await cli_doc(cli, "status", job.job_id))["state"] == "running"
    await until_running(job)
    pid = workload_pid(job)
    os.kill(pid, 0)
    assert (await cli_doc(cli, "kill", "--signal", "KILL", job.job_id))["ok"] is True
    assert (await job.wait(timeout=15)).state is JobStatus.KILLED
    await apoll(lambda: process_gone(pid), timeout=10)


async def test_timeout_and_kill(root: Path) -> None:
    async with JobRunner(root) as runner:
        timed = await runner.run(["sleep", "30"], timeout=1)
        victim = await runner.run(["sleep", "30"])
        await until_running(victim)
        assert (await victim.kill(signal.SIGINT)).state is JobStatus.RUNNING
        started = time.monotonic()
        first, second = await timed.wait(), await victim.wait()
    assert time.monotonic() - started < 10
    assert (first.state, first.signal, first.reason) == (JobStatus.KILLED, signal.SIGTERM, "timeout")
    assert (second.state, second.signal) == (JobStatus.KILLED, signal.SIGINT)


async def test_errors(root: Path) -> None:
    runner = JobRunner(root, max_concurrency=1)
    with pytest.raises(RunnerClosed):
        await runner.run(["true"])
    async with runner:
        jobs = [await runner.run(["sleep", "30"])] + [await runner.run(["true"]) for _ in range(16)]
        with pytest.raises(JobNotFound):
            await runner.get("f" * 32)
        firsts = [job.job_id[0] for job in jobs]
        with pytest.raises(AmbiguousJobId):
            runner.job(next(char for char in firsts if firsts.count(char) > 1))
        with pytest.raises(InvalidState):  # the store's view of a queued job: nobody may kill it
            await runner.job(jobs[1].job_id).kill()
        with pytest.raises(InvalidSignal):
            await jobs[0].kill("SIGNOPE")
        await until_running(jobs[0])
        await jobs[0].kill("KILL")
    with pytest.raises(RunnerClosed):
        await runner.run(["true"])
