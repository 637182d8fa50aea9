"""Agent-loop scenarios for the library, written once against anyio and run under asyncio
(``test_api_agent.py``, pytest-asyncio) and trio (``test_api_agent_trio.py``, anyio's plugin).

Each scenario is what an agent harness does with the library: run commands concurrently and
feed their output onward, stream until a marker line, put deadlines on jobs, cancel queued
ones. Every scenario takes a private jobs root and asserts what a user can observe.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import orjson

from agent_exec import InvalidState, JobRunner, JobStatus

PY = sys.executable


def py(code: str) -> list[str]:
    return [PY, "-c", code]


#: Prints numbered lines, a marker after the fifth, and keeps going for half a minute.
CHATTY = py(
    "import sys, time\n"
    "for i in range(600):\n"
    "    print(f'line {i}', flush=True)\n"
    "    if i == 5: print('READY', flush=True)\n"
    "    time.sleep(0.05)\n"
)


async def concurrent_commands_feed_onward(root: Path) -> None:
    """Eight commands at once; their outputs are joined and fed to a ninth as stdin."""
    async with JobRunner(root, max_concurrency=4) as runner:
        outputs: dict[int, str] = {}

        async def one(i: int) -> None:
            result = await runner.execute(py(f"print({i} * {i})"))
            assert result.ok and result.stdout is not None
            outputs[i] = result.stdout.text.strip()

        async with anyio.create_task_group() as tg:
            for i in range(8):
                tg.start_soon(one, i)
        text = "\n".join(outputs[i] for i in range(8)) + "\n"
        summed = await runner.execute(py("import sys; print(sum(int(x) for x in sys.stdin))"), stdin=text)
    assert summed.ok and summed.stdout is not None
    assert summed.stdout.text == f"{sum(i * i for i in range(8))}\n"


async def stream_until_marker(root: Path) -> None:
    """Read lines as they are written; stop at a marker while the job still runs; kill it."""
    async with JobRunner(root) as runner:
        job = await runner.run(CHATTY)
        seen: list[str] = []
        with anyio.fail_after(30):
            async for line in job.lines():
                seen.append(line.text)
                if line.text == "READY":
                    break
        assert seen[-7:] == [*(f"line {i}" for i in range(6)), "READY"]
        assert (await job.status()).state is JobStatus.RUNNING  # streamed live, not at the end
        result = await job.kill(signal.SIGKILL, wait=True)
    assert (result.state, result.signal) == (JobStatus.KILLED, signal.SIGKILL)


async def stream_yields_every_byte(root: Path, store_job_id: str | None = None) -> None:
    """A runner job's stream (and a store job's, if given) ends at the terminal state with
    exactly the logs' bytes, per stream, in order."""
    code = (
        "import sys\n"
        "for i in range(2000): sys.stdout.write(f'{i:08d} ' * 20 + '\\n')\n"
        "sys.stderr.write('e' * 70000)\n"
    )
    async with JobRunner(root) as runner:
        jobs = [await runner.run(py(code))]
        if store_job_id is not None:
            jobs.append(runner.job(store_job_id))
        for job in jobs:
            got = {"stdout": bytearray(), "stderr": bytearray()}
            with anyio.fail_after(60):
                async for chunk in job.stream():
                    got[chunk.stream] += chunk.data
            assert (await job.status()).is_terminal
            assert bytes(got["stdout"]) == job.stdout_log_path.read_bytes()
            assert bytes(got["stderr"]) == job.stderr_log_path.read_bytes()
            assert len(got["stdout"]) > 0


async def deadline_kills_the_job(root: Path) -> None:
    """A caller's deadline around ``execute``/``wait(kill_on_cancel=True)``/``async with job``
    kills the job and records it before the cancellation propagates."""
    async with JobRunner(root) as runner:
        with anyio.move_on_after(0.5) as scope:
            await runner.execute(["sleep", "30"], tags=["executed"])
        assert scope.cancelled_caught
        [row] = await runner.list(tags=["executed"])
        assert row.state is JobStatus.KILLED
        job = await runner.run(["sleep", "30"])
        with anyio.move_on_after(0.3):
            await job.wait(kill_on_cancel=True)
        result = await job.status()
        assert (result.state, result.signal) == (JobStatus.KILLED, signal.SIGKILL)
        with anyio.move_on_after(0.3):
            async with await runner.run(["sleep", "30"]) as scoped:
                await anyio.sleep_forever()
        assert (await scoped.status()).state is JobStatus.KILLED
        # Without kill_on_cancel a deadline only stops waiting.
        survivor = await runner.run(["sleep", "30"])
        with anyio.move_on_after(0.2):
            await survivor.wait()
        assert (await survivor.status()).state is JobStatus.RUNNING
        await survivor.kill(signal.SIGKILL)


async def queued_job_cancel(root: Path, tmp_path: Path) -> None:
    """A queued job can be cancelled: it never starts, and the queue moves on."""
    marker = tmp_path / "started"
    async with JobRunner(root, max_concurrency=1) as runner:
        blocker = await runner.run(["sleep", "30"])
        doomed = await runner.run(f"touch {marker}")
        waiting = await runner.run(f"touch {marker}-2")
        after = await runner.run(["true"])
        assert (await doomed.status()).state is JobStatus.CREATED
        result = await doomed.kill()
        assert (result.state, result.reason) == (JobStatus.FAILED, "cancelled_before_start")
        with anyio.move_on_after(0.2):
            await waiting.wait(kill_on_cancel=True)
        assert (await waiting.status()).reason == "cancelled_before_start"
        with anyio.fail_after(15):
            await blocker.kill(signal.SIGKILL, wait=True)
            assert (await after.wait()).ok
    assert not await anyio.Path(marker).exists() and not await anyio.Path(f"{marker}-2").exists()
    assert runner.statistics() == {"running": 0, "queued": 0, "finished": 4}


async def path_is_preserved(root: Path, tmp_path: Path) -> None:
    """A tool directory on ``env=``'s PATH (a venv's ``bin``) is found, by argv and by str."""
    bindir = tmp_path / "venv-bin"
    bindir.mkdir()
    tool = bindir / "mytool"
    tool.write_text('#!/bin/sh\necho mytool-ran "$@"\n')
    tool.chmod(0o755)
    path = f"{bindir}:{os.environ.get('PATH', os.defpath)}"
    async with JobRunner(root) as runner:
        by_argv = await runner.execute(["mytool", "a b"], env={"PATH": path})
        by_str = await runner.execute("mytool c", env={"PATH": path})
        missing = await runner.execute(["agent-exec-no-such-tool"])
    assert by_argv.ok and by_argv.stdout is not None and by_argv.stdout.text == "mytool-ran a b\n"
    assert by_str.ok and by_str.stdout is not None and by_str.stdout.text == "mytool-ran c\n"
    assert (missing.state, missing.reason) == (
        JobStatus.FAILED,
        "spawn_failed: No such file or directory: agent-exec-no-such-tool",
    )
    meta = orjson.loads((root / by_argv.job_id / "meta.json").read_bytes())
    assert (meta["argv"], meta["shell"], meta["shell_wrapper"]) == (["mytool", "a b"], False, [])
    meta = orjson.loads((root / by_str.job_id / "meta.json").read_bytes())
    assert (meta["argv"], meta["shell"]) == (["sh", "-c", "mytool c"], True)


async def timeouts_and_results(root: Path) -> None:
    """A timed-out job is never ok; ``wait`` returns at the terminal write, not after
    ``kill_after``; timeouts take fractions of a second."""
    async with JobRunner(root) as runner:
        # A shell sets its trap within a millisecond of starting (a Python child could
        # still be importing when a short timeout fires on a loaded machine).
        trapper = await runner.run(
            "trap 'exit 0' TERM; echo up; while :; do sleep 0.1; done", timeout=2, kill_after=30
        )
        quick = await runner.run(["sleep", "30"], timeout=0.3, kill_after=60)
        with anyio.fail_after(20):  # not 60 s: the escalation is still pending
            trapped = await trapper.wait()
            died = await quick.wait()
    assert (trapped.state, trapped.exit_code, trapped.reason) == (JobStatus.EXITED, 0, "timeout"), trapped
    assert trapped.timed_out and not trapped.ok
    assert (died.state, died.signal, died.reason) == (JobStatus.KILLED, signal.SIGTERM, "timeout")
    meta = orjson.loads((root / quick.job_id / "meta.json").read_bytes())
    assert (meta["timeout_ms"], meta["kill_after_ms"]) == (300, 60000)


async def _chunks() -> AsyncIterator[bytes]:
    for part in (b"from ", b"an ", b"iterator"):
        yield part


async def stdin_kinds(root: Path, tmp_path: Path) -> None:
    source = tmp_path / "stdin.txt"
    source.write_text("from a file")
    echo = py("import sys; sys.stdout.write(sys.stdin.read())")
    async with JobRunner(root) as runner:
        results = [
            await runner.execute(echo, stdin=value) for value in ("text é", b"\x00bytes", source, _chunks())
        ]
    texts = [result.stdout.text if result.stdout else None for result in results]
    assert texts == ["text é", "\x00bytes", "from a file", "from an iterator"]


async def cleanup(root: Path) -> None:
    async with JobRunner(root) as runner:
        done = await runner.run(["true"])
        await done.wait()
        busy = await runner.run(["sleep", "30"])
        try:
            await runner.delete(busy)
        except InvalidState:
            pass
        else:
            raise AssertionError("deleted a running job")
        await runner.delete(done)
        assert not done.job_dir.exists()
        kept = await runner.run(["true"])
        await kept.wait()
        later = time.time() + 5  # ages are whole seconds: judge them from a later clock
        dry = await runner.gc(older_than=0, dry_run=True, now=later)
        assert [(entry.job_id, entry.action) for entry in dry.jobs if entry.action == "would_delete"] == [
            (kept.job_id, "would_delete")
        ]
        real = await runner.gc(older_than="0s", now=later)
        assert real.deleted == 1 and not kept.job_dir.exists()
        assert busy.job_dir.exists()
        await busy.kill(signal.SIGKILL)


def _interval_job(path: Path, hold: float) -> list[str]:
    """A job that records when its workload started and when it is about to exit."""
    return py(
        "import time, pathlib; s = time.time(); "
        f"time.sleep({hold}); pathlib.Path({str(path)!r}).write_text(f'{{s}} {{time.time()}}')"
    )


def _max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    return peak


async def detached_jobs_respect_max_concurrency(root: Path, tmp_path: Path) -> None:
    """``max_concurrency`` bounds detached jobs too; leaving the block starts every queued
    one (without waiting for them to finish)."""
    limit, count = 2, 6
    paths = [tmp_path / f"iv{i}" for i in range(count)]
    async with JobRunner(root, max_concurrency=limit, detached=True) as runner:
        jobs = [await runner.run(_interval_job(path, 0.5)) for path in paths]
        assert runner.statistics()["queued"] == count - limit
    with anyio.fail_after(60):
        results = [await job.wait() for job in jobs]
    assert all(result.ok for result in results), results
    intervals = []
    for path in paths:
        start, end = (float(word) for word in (await anyio.Path(path).read_text()).split())
        intervals.append((start, end))
    assert _max_overlap(intervals) <= limit


async def queuing_yields_to_the_loop(root: Path) -> None:
    """Submitting 400 queued jobs lets other tasks run all along (it once starved them)."""
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await anyio.lowlevel.checkpoint()
            ticks += 1

    async with JobRunner(root, max_concurrency=1) as runner:
        blocker = await runner.run(["sleep", "30"])
        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker)
            jobs = [await runner.run(["true"]) for _ in range(400)]
            tg.cancel_scope.cancel()
        assert runner.statistics()["queued"] == 400
        assert ticks >= 300, ticks
        for job in jobs:
            await job.kill()
        await blocker.kill(signal.SIGKILL)


async def waiting_on_finished_jobs_yields(root: Path) -> None:
    """Collecting the results of many finished jobs lets other tasks run between them
    (``wait`` is a checkpoint even when the result is known: it once held the loop for
    the whole loop over 2,000 jobs)."""
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await anyio.lowlevel.checkpoint()
            ticks += 1

    async with JobRunner(root, max_concurrency=8) as runner:
        jobs = [await runner.run(["true"]) for _ in range(50)]
        results = [await job.wait() for job in jobs]  # every one finished now
        assert all(result.ok for result in results)
        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker)
            await anyio.lowlevel.checkpoint()  # the ticker is running
            before = ticks
            for job in jobs:
                await job.wait()
            tg.cancel_scope.cancel()
        assert ticks - before >= 40, (before, ticks)


async def vanished_queued_job_fails_cleanly(root: Path) -> None:
    """A queued job whose directory is deleted before its turn ends ``failed`` with the
    reason, its waiter wakes, and the runner and the other jobs carry on."""
    import shutil

    async with JobRunner(root, max_concurrency=1) as runner:
        blocker = await runner.run(["sleep", "30"])
        doomed = await runner.run(["true"])
        survivor = await runner.run(["echo", "still here"])
        shutil.rmtree(doomed.job_dir)
        await blocker.kill(signal.SIGKILL)
        with anyio.fail_after(20):
            lost = await doomed.wait()
            fine = await survivor.wait()
    assert lost.state is JobStatus.FAILED and lost.reason is not None, lost
    assert lost.reason.startswith("job_directory_moved"), lost.reason
    assert fine.ok and fine.stdout is not None and fine.stdout.text == "still here\n", fine


async def records_are_exchanged_not_replaced(root: Path) -> None:
    """A runner writes ``running`` and the terminal record by exchanging them with the
    reserve page: no inode is freed per write (ext4 makes every later file creation pay for
    recently freed ones). The queued record's inode ends up holding the terminal record,
    and the reserve (the previous record) stays."""
    async with JobRunner(root, max_concurrency=1) as runner:
        blocker = await runner.run(["sleep", "30"])
        queued = await runner.run(["echo", "done"])
        created_inode = os.stat(queued.job_dir / "state.json").st_ino
        await blocker.kill(signal.SIGKILL)
        with anyio.fail_after(20):
            result = await queued.wait()
    assert result.ok, result
    state = queued.job_dir / "state.json"
    assert orjson.loads(state.read_bytes())["job"]["status"] == "exited"
    assert os.stat(state).st_ino == created_inode
    assert (queued.job_dir / ".state.reserve").exists()


async def notification_sinks_run_through_a_shell(root: Path, tmp_path: Path) -> None:
    """A library job execs its argv directly, but its completion sinks (shell strings)
    still run through ``sh -c``."""
    seen, events = tmp_path / "seen.json", tmp_path / "events.jsonl"
    async with JobRunner(root) as runner:
        result = await runner.execute(["true"], notify_command=f"cat > {seen}", notify_file=str(events))
    assert result.ok
    with anyio.fail_after(15):  # delivered after the terminal state: poll for it
        while not (await anyio.Path(seen).exists() and await anyio.Path(events).exists()):
            await anyio.sleep(0.02)
    for path in (seen, events):
        event = orjson.loads((await anyio.Path(path).read_bytes()).splitlines()[0])
        assert event["job_id"] == result.job_id, event
