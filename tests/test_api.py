"""The embedded async API (:class:`agent_exec.JobRunner`) under asyncio (pytest-asyncio).

The same key behaviours run under trio in ``test_api_trio.py``; the process-table helpers
defined here are shared with it. Every test works on a private jobs root and checks what
a user can observe: results, the CLI's view of the store, the process table, open fds.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from agent_exec import (
    AgentExecError,
    AmbiguousJobId,
    InvalidSignal,
    InvalidState,
    InvalidTag,
    Job,
    JobNotFound,
    JobResult,
    JobRunner,
    JobStatus,
    RunnerClosed,
)
from conftest import Cli, py

# -- process-table helpers (shared with test_api_trio.py) ------------------------------


def proc_stat(pid: int) -> tuple[str, int] | None:
    """``(state letter, ppid)`` of ``pid`` from ``/proc``, or None once it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[1])


def children(pid: int | None = None) -> dict[int, str]:
    """Live or zombie children of ``pid`` (default: this test process): pid -> state letter."""
    parent = os.getpid() if pid is None else pid
    found: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = proc_stat(int(entry))
            if stat is not None and stat[1] == parent:
                found[int(entry)] = stat[0]
    return found


def zombie_children() -> list[int]:
    """Children of this process that exited and were never reaped."""
    return [pid for pid, state in children().items() if state == "Z"]


def process_gone(pid: int) -> bool:
    """True once ``pid`` is dead: gone from /proc, or a zombie someone else must reap
    (a grandchild re-parented to init). Our own children must be gone, not zombies."""
    stat = proc_stat(pid)
    if stat is None:
        return True
    return stat[0] == "Z" and stat[1] != os.getpid()


def workload_pid(job: Job) -> int:
    """The workload pid the supervisor recorded in ``state.json``."""
    pid = orjson.loads((job.job_dir / "state.json").read_bytes())["pid"]
    assert isinstance(pid, int)
    return pid


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def kill_leftovers(pids: list[int]) -> None:
    """Clean up processes a buggy teardown left behind (so one failure stays local)."""
    for pid in pids:
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    for pid in pids:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, 0)


async def apoll(predicate: Callable[[], Any], timeout: float = 15.0) -> Any:
    """Call (and await, if async) ``predicate()`` until it is truthy; fail after ``timeout`` s."""
    with anyio.fail_after(timeout):
        while True:
            value = predicate()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
            await anyio.sleep(0.01)


async def until_running(job: Job, timeout: float = 15.0) -> JobResult:
    async def check() -> JobResult | None:
        result = await job.status()
        return result if result.state is JobStatus.RUNNING else None

    return await apoll(check, timeout)  # type: ignore[no-any-return]


def read_int_file(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text else None


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    peak = current = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak


async def cli_doc(cli: Cli, *args: str) -> dict[str, Any]:
    """Run the CLI in a worker thread so the runner's jobs keep being supervised."""
    result = await anyio.to_thread.run_sync(lambda: cli(*args))
    return result.doc


# -- run / wait ------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_run_wait_returns_every_result_field(root: Path) -> None:
    code = "import sys; print('to-out'); print('to-err', file=sys.stderr); sys.exit(3)"
    async with JobRunner(root) as runner:
        failing = await runner.run(py(code), tags=["api"])
        passing = await runner.run("echo fine")
        assert len(failing.job_id) == 32
        assert failing.job_dir == root / failing.job_id
        assert failing.stdout_log_path == failing.job_dir / "stdout.log"
        result = await failing.wait()
        ok = await passing.wait()
    assert isinstance(result, JobResult)
    assert result.job_id == failing.job_id
    assert result.state is JobStatus.EXITED
    assert result.exit_code == 3
    assert result.signal is None and result.reason is None
    assert result.ok is False and ok.ok is True
    assert result.started_at and result.finished_at and result.updated_at
    assert result.started_at <= result.finished_at
    assert isinstance(result.duration_ms, int) and result.duration_ms >= 0
    assert result.stdout_log_path.read_text() == "to-out\n"
    assert result.stderr_log_path.read_text() == "to-err\n"
    assert ok.stdout_log_path.read_text() == "fine\n"
    tail = await failing.tail()
    assert tail.job_id == failing.job_id and tail.stdout.text == "to-out\n"
    assert tail.stderr.total_bytes == len("to-err\n")
    assert result.stdout is not None and result.stdout.text == "to-out\n"
    assert result.stderr is not None and result.stderr.text == "to-err\n"
    assert await failing.status(max_bytes=65536) == result


@pytest.mark.asyncio
async def test_env_cwd_stdin_reach_the_workload(root: Path, tmp_path: Path) -> None:
    code = "import os, sys; print(os.environ['GREETING'], os.getcwd(), sys.stdin.read())"
    async with JobRunner(root) as runner:
        job = await runner.run(py(code), env={"GREETING": "hi"}, cwd=tmp_path, stdin=b"piped")
        result = await job.wait()
    assert result.ok, result
    assert result.stdout_log_path.read_text() == f"hi {tmp_path} piped\n"


@pytest.mark.asyncio
async def test_wait_with_timeout_returns_current_state(root: Path) -> None:
    async with JobRunner(root) as runner:
        job = await runner.run(["sleep", "30"])
        started = time.monotonic()
        result = await job.wait(timeout=0.2)
        assert time.monotonic() - started < 5
        assert result.state in (JobStatus.CREATED, JobStatus.RUNNING)
        await until_running(job)
        assert (await job.kill("KILL")).state is JobStatus.RUNNING  # sent; not yet recorded
        final = await job.wait()
    assert final.state is JobStatus.KILLED and final.signal is signal.SIGKILL


# -- the CLI and the runner share one store ----------------------------------------------


@pytest.mark.asyncio
async def test_cli_reads_every_job_the_runner_wrote(root: Path, cli: Cli) -> None:
    async with JobRunner(root, max_concurrency=1) as runner:
        blocker = await runner.run(["sleep", "30"])
        queued = await runner.run(["sh", "-c", "exit 4"])
        await until_running(blocker)
        running_doc = await cli_doc(cli, "status", blocker.job_id)
        assert running_doc["state"] == "running"
        # Queued beyond max_concurrency: ``created`` to the CLI, and ``start`` cannot steal it.
        queued_doc = await cli_doc(cli, "status", queued.job_id)
        assert (queued_doc["state"], queued_doc["reason"]) == ("created", "queued")
        stolen = await anyio.to_thread.run_sync(lambda: cli("start", queued.job_id))
        assert stolen.returncode == 1 and stolen.doc["error"]["code"] == "invalid_state"
        killed = await cli_doc(cli, "kill", "--signal", "KILL", blocker.job_id)
        assert killed["ok"] is True
        results = [await blocker.wait(), await queued.wait()]
    assert [result.state for result in results] == [JobStatus.KILLED, JobStatus.EXITED]
    for job, result in zip((blocker, queued), results, strict=True):
        doc = await cli_doc(cli, "status", job.job_id)
        assert doc["state"] == result.state.value
        assert doc.get("exit_code") == result.exit_code
    listed = await cli_doc(cli, "list", "--all")
    assert {row["job_id"] for row in listed["jobs"]} == {blocker.job_id, queued.job_id}


@pytest.mark.asyncio
async def test_runner_reads_jobs_the_cli_started(root: Path, cli: Cli) -> None:
    started = await cli_doc(cli, "run", "--tag", "from-cli", "--", "sh", "-c", "echo cli-out; exit 2")
    job_id = started["job_id"]
    async with JobRunner(root) as runner:
        job = runner.job(job_id[:8])
        assert job.job_id == job_id and job.job_dir == root / job_id
        assert (await runner.get(job_id)).job_id == job_id
        result = await job.wait(timeout=15)
        assert result.state is JobStatus.EXITED and result.exit_code == 2
        assert result.stdout_log_path.read_text() == "cli-out\n"
        mine = await runner.run(["true"], tags=["from-api"])
        await mine.wait()
        rows = await runner.list()
        assert {row.job_id for row in rows} == {job_id, mine.job_id}
        tagged = await runner.list(tags=["from-cli"])
        assert [(row.job_id, row.state, row.tags, row.exit_code) for row in tagged] == [
            (job_id, JobStatus.EXITED, ("from-cli",), 2)
        ]
        assert [row.job_id for row in await runner.list(state="exited", tags=["from-api"])] == [mine.job_id]


# -- bounded concurrency ---------------------------------------------------------------------


def _interval_job(path: Path, hold: float) -> list[str]:
    """A job that records when its workload started and when it is about to exit."""
    return py(
        "import time, pathlib; s = time.monotonic(); "
        f"time.sleep({hold}); pathlib.Path({str(path)!r}).write_text(f'{{s}} {{time.monotonic()}}')"
    )


@pytest.mark.asyncio
async def test_max_concurrency_bounds_running_jobs_and_starts_fifo(root: Path, tmp_path: Path) -> None:
    limit, count = 3, 12
    seen: list[dict[str, int]] = []
    async with JobRunner(root, max_concurrency=limit) as runner:
        jobs = [await runner.run(_interval_job(tmp_path / f"iv{i}", 0.3)) for i in range(count)]

        async def sample() -> None:
            while runner.statistics()["finished"] < count:
                seen.append(runner.statistics())
                await anyio.sleep(0.005)

        async with anyio.create_task_group() as tg:
            tg.start_soon(sample)
        results = [await job.wait() for job in jobs]
    assert all(result.ok for result in results)
    assert runner.statistics() == {"running": 0, "queued": 0, "finished": count}
    assert max(stats["running"] for stats in seen) == limit
    assert all(stats["running"] + stats["queued"] + stats["finished"] == count for stats in seen)
    intervals = []
    for i in range(count):
        start, end = (float(word) for word in (tmp_path / f"iv{i}").read_text().split())
        intervals.append((start, end))
    assert max_overlap(intervals) <= limit
    # FIFO: the m-th job may only start once m - limit + 1 earlier slots were given back.
    for m, (start, _) in enumerate(intervals):
        ended_before = sum(1 for _, end in intervals if end <= start)
        assert ended_before >= m - limit + 1, (m, ended_before)


@pytest.mark.asyncio
async def test_max_concurrency_one_runs_jobs_in_submission_order(root: Path, tmp_path: Path) -> None:
    order = tmp_path / "order"
    async with JobRunner(root, max_concurrency=1) as runner:
        for i in range(8):
            await runner.run(f"echo {i} >> {order}")
    assert order.read_text().split() == [str(i) for i in range(8)]


# -- leaving the block -------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_leaving_the_block_normally_waits_for_jobs(root: Path, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    async with JobRunner(root, max_concurrency=2) as runner:
        jobs = [await runner.run(f"sleep 0.3; echo {i} >> {marker}") for i in range(4)]
    assert sorted(marker.read_text().split()) == ["0", "1", "2", "3"]
    for job in jobs:
        assert (await job.status()).state is JobStatus.EXITED
    assert runner.statistics() == {"running": 0, "queued": 0, "finished": 4}


async def cancel_jobs_in_flight(root: Path, tmp_path: Path, limit: int = 48, count: int = 64) -> None:
    """Shared scenario: ``count`` jobs in flight (``limit`` running, each with a grandchild in
    its process group; the rest queued), then the runner is cancelled with ``move_on_after``.

    Which jobs got the slots is not asserted here (FIFO has its own tests): a job counts as
    running once its shell recorded its grandchild's pid.
    """
    pidfiles = [tmp_path / f"gc{i}" for i in range(count)]
    jobs: list[Job] = []
    with anyio.move_on_after(60) as scope:
        async with JobRunner(root, max_concurrency=limit) as runner:
            jobs = [await runner.run(f"sleep 300 & echo $! > {path}; wait") for path in pidfiles]
            await apoll(lambda: sum(1 for path in pidfiles if read_int_file(path)) == limit, timeout=30)
            assert runner.statistics() == {"running": limit, "queued": count - limit, "finished": 0}
            cancelled_at = time.monotonic()
            scope.cancel()
            await anyio.sleep_forever()
    assert scope.cancelled_caught
    assert time.monotonic() - cancelled_at < 10
    assert runner.statistics() == {"running": 0, "queued": 0, "finished": count}
    ran = [i for i, path in enumerate(pidfiles) if read_int_file(path)]
    assert len(ran) == limit
    results = [await job.status() for job in jobs]
    running = {(results[i].state, results[i].signal, results[i].reason) for i in ran}
    queued = {(r.state, r.reason) for i, r in enumerate(results) if i not in ran}
    assert running == {(JobStatus.KILLED, signal.SIGKILL, "runner_cancelled")}
    assert queued == {(JobStatus.FAILED, "runner_cancelled_before_start")}
    workloads = [workload_pid(jobs[i]) for i in ran]
    grandchildren = [int(pidfiles[i].read_text()) for i in ran]
    assert zombie_children() == []
    # Every workload (our child) is killed and reaped; every grandchild is dead.
    assert [pid for pid in workloads if proc_stat(pid) is not None] == []
    await apoll(lambda: all(process_gone(pid) for pid in grandchildren), timeout=10)


@pytest.mark.asyncio
async def test_cancelling_the_runner_kills_and_reaps_every_process_group(root: Path, tmp_path: Path) -> None:
    await cancel_jobs_in_flight(root, tmp_path)


@pytest.mark.asyncio
async def test_raising_inside_the_block_kills_running_jobs(root: Path) -> None:
    jobs: list[Job] = []
    with pytest.raises(BaseException) as caught:
        async with JobRunner(root) as runner:
            jobs = [await runner.run(["sleep", "300"]) for _ in range(4)]
            for job in jobs:
                await until_running(job)
            raise ValueError("boom")
    # anyio's task group wraps the block's exception in an ExceptionGroup.
    assert (
        caught.group_contains(ValueError)
        if isinstance(caught.value, BaseExceptionGroup)
        else (isinstance(caught.value, ValueError))
    )
    for job in jobs:
        result = await job.status()
        assert (result.state, result.signal, result.reason) == (
            JobStatus.KILLED,
            signal.SIGKILL,
            "runner_cancelled",
        )
    assert children() == {}


@pytest.mark.asyncio
@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
async def test_raising_right_after_run_kills_jobs_that_never_got_to_run(root: Path) -> None:
    jobs: list[Job] = []
    before = set(children())
    try:
        with contextlib.suppress(ValueError, BaseExceptionGroup):
            async with JobRunner(root) as runner:
                jobs = [await runner.run(["sleep", "300"]) for _ in range(3)]
                raise ValueError("boom: no checkpoint since run()")
        states = {(await job.status()).state for job in jobs}
        assert states <= {JobStatus.KILLED, JobStatus.FAILED}, states
        assert set(children()) - before == set()
    finally:
        kill_leftovers(sorted(set(children()) - before))
        gc.collect()


@pytest.mark.asyncio
async def test_cancel_during_drain_kills_the_leftover_process_group(root: Path, tmp_path: Path) -> None:
    pidfile = tmp_path / "gc"
    with anyio.move_on_after(30) as scope:
        async with JobRunner(root) as runner:
            job = await runner.run(f"sleep 300 & echo $! > {pidfile}")
            grandchild = await apoll(lambda: read_int_file(pidfile))
            # The shell exited; the supervisor waits (DRAIN_TIMEOUT) for the grandchild's pipes.
            await apoll(lambda: job.job_dir.joinpath("state.json").exists() and not children())
            scope.cancel()
            await anyio.sleep_forever()
    try:
        await apoll(lambda: process_gone(grandchild), timeout=3)
    except TimeoutError:
        kill_leftovers([grandchild])
        raise
    result = await job.status()
    assert result.state in (JobStatus.EXITED, JobStatus.KILLED) and result.reason == "runner_cancelled"


# -- resources ------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_no_file_descriptor_or_zombie_leak_over_500_jobs(root: Path) -> None:
    async with JobRunner(root, max_concurrency=64) as runner:  # warm up lazily opened fds
        await (await runner.run(["true"])).wait()
    before = open_fds()
    async with JobRunner(root, max_concurrency=64) as runner:
        jobs = [await runner.run(["true"]) for _ in range(500)]
    assert runner.statistics()["finished"] == 500
    assert all([(await job.status()).ok for job in jobs[::50]])
    assert open_fds() == before
    assert children() == {}


# -- detached jobs ------------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("per_call", [False, True], ids=["runner-detached", "run-detached"])
async def test_detached_jobs_outlive_the_runner_block(root: Path, cli: Cli, per_call: bool) -> None:
    left_at = 0.0
    if per_call:
        async with JobRunner(root) as runner:
            job = await runner.run(["sleep", "300"], detached=True)
            left_at = time.monotonic()
    else:
        async with JobRunner(root, detached=True) as runner:
            job = await runner.run(["sleep", "300"])
            left_at = time.monotonic()
    assert time.monotonic() - left_at < 5  # leaving did not wait for the 300 s job
    assert (await cli_doc(cli, "status", job.job_id))["state"] == "running"
    await until_running(job)
    workload = workload_pid(job)
    os.kill(workload, 0)  # alive, though the runner is gone
    killed = await cli_doc(cli, "kill", "--signal", "KILL", job.job_id)
    assert killed["ok"] is True
    result = await job.wait(timeout=15)
    assert result.state is JobStatus.KILLED
    assert (await cli_doc(cli, "status", job.job_id))["state"] == "killed"
    await apoll(lambda: process_gone(workload), timeout=10)


# -- timeouts and kill --------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_timeout_terminates_then_kill_after_escalates(root: Path) -> None:
    async with JobRunner(root) as runner:
        polite = await runner.run(["sleep", "30"], timeout=1)
        stubborn = await runner.run("trap '' TERM; sleep 30", timeout=1, kill_after=1)
        started = time.monotonic()
        first, second = await polite.wait(), await stubborn.wait()
    assert time.monotonic() - started < 10
    assert (first.state, first.signal, first.reason) == (JobStatus.KILLED, signal.SIGTERM, "timeout")
    assert (second.state, second.signal, second.reason) == (JobStatus.KILLED, signal.SIGKILL, "timeout")
    assert not first.ok and first.timed_out
    assert first.duration_ms is not None and 900 <= first.duration_ms < 5000
    assert second.duration_ms is not None and second.duration_ms >= 1900


@pytest.mark.asyncio
async def test_kill_signals_the_process_group(root: Path, tmp_path: Path) -> None:
    pidfile = tmp_path / "gc"
    async with JobRunner(root) as runner:
        job = await runner.run(f"sleep 300 & echo $! > {pidfile}; wait")
        await until_running(job)
        grandchild = await apoll(lambda: read_int_file(pidfile))
        result = await job.kill(signal.SIGTERM, wait=True)
        assert (result.state, result.signal) == (JobStatus.KILLED, signal.SIGTERM)
        assert (await job.kill("TERM")).state is JobStatus.KILLED  # terminal: nothing to signal
    await apoll(lambda: process_gone(grandchild), timeout=10)


# -- errors ----------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_errors_come_from_the_documented_hierarchy(root: Path) -> None:
    runner = JobRunner(root, max_concurrency=1)
    with pytest.raises(RunnerClosed):
        await runner.run(["true"])
    async with runner:
        with pytest.raises(JobNotFound) as not_found:
            runner.job("0" * 32)
        assert not_found.value.code == "job_not_found"
        jobs = [await runner.run(["sleep", "30"])] + [await runner.run(["true"]) for _ in range(16)]
        # 17 random hex ids: by pigeonhole two share a first character.
        firsts = [job.job_id[0] for job in jobs]
        shared = next(char for char in firsts if firsts.count(char) > 1)
        with pytest.raises(AmbiguousJobId) as ambiguous:
            await runner.get(shared)
        assert ambiguous.value.code == "ambiguous_job_id"
        cli_created = runner.job(jobs[1].job_id)  # the store's view: a created job
        with pytest.raises(InvalidState):  # nobody but its runner may start or kill it
            await cli_created.kill("TERM")
        with pytest.raises(InvalidSignal):
            await jobs[0].kill("NOT-A-SIGNAL")
        with pytest.raises(InvalidTag):
            await runner.run(["true"], tags=["bad tag!"])
        with pytest.raises(ValueError):
            await runner.run([])
        await until_running(jobs[0])
        await jobs[0].kill("KILL")
    with pytest.raises(RunnerClosed) as closed:
        await runner.run(["true"])
    assert isinstance(closed.value, AgentExecError)
    with pytest.raises(RuntimeError):
        async with runner:
            pass
    with pytest.raises(ValueError):
        JobRunner(root, max_concurrency=0)


@pytest.mark.asyncio
async def test_kill_with_an_unknown_signal_number_raises_invalid_signal(root: Path) -> None:
    async with JobRunner(root) as runner:
        job = await runner.run(["sleep", "30"])
        await until_running(job)
        try:
            with pytest.raises(InvalidSignal):
                await job.kill(999)
        finally:
            await job.kill("KILL")
