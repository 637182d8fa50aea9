"""Concurrent-jobs harness: :class:`agent_exec.JobRunner` against the floor a user would
otherwise write, ``anyio.open_process(argv)`` with the same argv (no shell on either side).

Run it (from the repository root)::

    .venv/bin/python benchmarks/bench_runner.py                 # the whole table
    .venv/bin/python benchmarks/bench_runner.py --backend trio
    .venv/bin/python benchmarks/bench_runner.py --quick         # a smoke run
    .venv/bin/python benchmarks/bench_runner.py --roots disk    # one root only

Each phase runs on a jobs root on tmpfs (``/dev/shm``) and on this machine's disk (a
temporary directory next to the repository), runner and floor back to back in one process:

1. Throughput: ``--jobs`` N x ``["true"]`` submitted at once, at most ``--concurrency`` K
   running. Runner: ``JobRunner(max_concurrency=K).run(["true"])`` then every ``wait()``.
   Floor: the same argv through ``anyio.open_process`` under a ``CapacityLimiter(K)``,
   reading both pipes to EOF and reaping (the least any supervisor does).
   Targets: >= 0.7x on tmpfs, >= 0.4x on disk.
2. Launch latency under K-way load (closed loop: K submitters, each starting its next job
   when the previous finished): runner from the ``run()`` call until the workload was
   exec'd (``Popen`` returned), floor from the ``open_process()`` call until it returned.
   Target: p99 within 2x of the floor's.
3. Loop blocking during phase 1: the longest single step the event loop ran (one callback
   or task step: nothing else can run meanwhile; asyncio ``Handle._run``, trio's
   instrumentation). Target: <= 20 ms. Also shown, without a target: the longest gap a
   1 ms ticker task saw, which on a saturated loop is the length of a whole loop iteration
   (every ready callback of every job), for the floor as much as for the runner.
4. Mixed workload (what an agent loop sees): short commands, 1-second ones and
   output-heavy ones (``seq``, ~0.6 MB each), at K; wall time against the floor.
5. Memory, each in a fresh interpreter: host PSS per running job (M x ``sleep``), per
   queued job (M jobs queued behind one) and file descriptors per queued job.
   Targets: <= 50 KiB per running job, <= 5 KiB and no descriptor per queued job.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from agent_exec import JobRunner
from agent_exec import _workload as workload_module

SEQ_ENV = "AGENT_EXEC_BENCH_SEQ"
REPO = Path(__file__).resolve().parent.parent

# -- instrumentation ------------------------------------------------------------------------

#: perf_counter() at which each latency job's workload was exec'd, by sequence number.
EXEC_TIMES: dict[int, float] = {}


class _TimedWorkload(workload_module.Workload):
    """``Workload`` that notes when ``Popen`` returned (the exec has succeeded by then)."""

    def __init__(self, argv: list[str], **kwargs: Any) -> None:
        super().__init__(argv, **kwargs)
        seq = (kwargs.get("env") or {}).get(SEQ_ENV)
        if seq is not None:
            EXEC_TIMES[int(seq)] = time.perf_counter()


workload_module.Workload = _TimedWorkload  # type: ignore[misc]


def pss_kib() -> float:
    with open("/proc/self/smaps_rollup", encoding="ascii") as file:
        for line in file:
            if line.startswith("Pss:"):
                return float(line.split()[1])
    raise RuntimeError("no Pss in smaps_rollup")


def creation_cost(root: Path, count: int = 200) -> float:
    """Seconds per empty-file creation in ``root`` right now. A job costs a few (see the
    README), the floor none; on ext4 this varies tenfold with recent deletions (inode
    allocation skips inodes freed in the last ~30 s: ``recently_deleted``)."""
    probe = root / "probe"
    probe.mkdir()
    started = time.perf_counter()
    for index in range(count):
        os.close(os.open(probe / str(index), os.O_CREAT | os.O_WRONLY, 0o600))
    # Left in place until the root goes: deleting them now would slow the creations measured next.
    return (time.perf_counter() - started) / count


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class Ticker:
    """Measures the longest time the event loop did not run a 1 ms ticker."""

    def __init__(self) -> None:
        self.worst = 0.0

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        last = time.perf_counter()
        while True:
            await anyio.sleep(0.001)
            now = time.perf_counter()
            self.worst = max(self.worst, now - last - 0.001)
            last = now


class StepTimer:
    """The longest single step of the event loop: one asyncio callback (``Handle._run``:
    task steps included) or one trio task step."""

    def __init__(self) -> None:
        self.worst = 0.0

    @contextlib.contextmanager
    def measuring(self) -> Iterator[None]:
        if anyio_backend() == "trio":
            import trio

            timer = self

            class _Steps(trio.abc.Instrument):
                started = 0.0

                def before_task_step(self, task: object) -> None:
                    self.started = time.perf_counter()

                def after_task_step(self, task: object) -> None:
                    if self.started:  # (not the step that was running when it was added)
                        timer.worst = max(timer.worst, time.perf_counter() - self.started)
                    self.started = 0.0

            steps = _Steps()
            trio.lowlevel.add_instrument(steps)
            try:
                yield
            finally:
                trio.lowlevel.remove_instrument(steps)
            return
        import asyncio.events

        original = asyncio.events.Handle._run

        def timed_run(handle: asyncio.events.Handle) -> None:
            started = time.perf_counter()
            try:
                original(handle)
            finally:
                self.worst = max(self.worst, time.perf_counter() - started)

        asyncio.events.Handle._run = timed_run  # type: ignore[method-assign,assignment]
        try:
            yield
        finally:
            asyncio.events.Handle._run = original  # type: ignore[method-assign]


def anyio_backend() -> str:
    import sniffio

    return sniffio.current_async_library()


async def timed(phase: Callable[[], Awaitable[None]]) -> tuple[float, float, float]:
    """Run ``phase``; return (seconds, longest loop step, longest ticker gap), in seconds."""
    gc.collect()
    ticker = Ticker()
    steps = StepTimer()
    async with anyio.create_task_group() as tg:
        await tg.start(ticker.run)
        with steps.measuring():
            started = time.perf_counter()
            await phase()
            elapsed = time.perf_counter() - started
        tg.cancel_scope.cancel()
    return elapsed, steps.worst, ticker.worst


# -- the two paths --------------------------------------------------------------------------------


async def floor_job(argv: list[str], latencies: list[float] | None = None) -> int:
    """What any supervisor must do at least: spawn, read both pipes to EOF, reap."""
    called = time.perf_counter()
    process = await anyio.open_process(argv, stdin=subprocess.DEVNULL)
    if latencies is not None:
        latencies.append(time.perf_counter() - called)
    async with process:
        assert process.stdout is not None and process.stderr is not None
        async with anyio.create_task_group() as tg:
            tg.start_soon(_drain, process.stdout)
            tg.start_soon(_drain, process.stderr)
        return await process.wait()


async def _drain(stream: anyio.abc.ByteReceiveStream) -> None:
    async for _ in stream:
        pass


async def floor_batch(argvs: list[list[str]], concurrency: int) -> None:
    limiter = anyio.CapacityLimiter(concurrency)
    failures = 0

    async def one(argv: list[str]) -> None:
        nonlocal failures
        async with limiter:
            failures += await floor_job(argv) != 0

    async with anyio.create_task_group() as tg:
        for argv in argvs:
            tg.start_soon(one, argv)
    if failures:
        raise SystemExit(f"{failures} floor jobs failed")


async def runner_batch(root: Path, argvs: list[list[str]], concurrency: int) -> None:
    async with JobRunner(root, max_concurrency=concurrency) as runner:
        jobs = [await runner.run(argv) for argv in argvs]
        results = [await job.wait(max_bytes=0) for job in jobs]
    bad = [result.job_id for result in results if not result.ok]
    if bad:
        raise SystemExit(f"{len(bad)} runner jobs failed, e.g. {bad[0]}")


async def runner_latency(root: Path, jobs: int, concurrency: int) -> list[float]:
    EXEC_TIMES.clear()
    called: dict[int, float] = {}
    counter = iter(range(jobs))
    async with JobRunner(root, max_concurrency=concurrency) as runner:

        async def submitter() -> None:
            for seq in counter:
                called[seq] = time.perf_counter()
                job = await runner.run(["true"], env={SEQ_ENV: str(seq)})
                await job.wait(max_bytes=0)

        async with anyio.create_task_group() as tg:
            for _ in range(concurrency):
                tg.start_soon(submitter)
    return [EXEC_TIMES[seq] - called[seq] for seq in called]


async def floor_latency(jobs: int, concurrency: int) -> list[float]:
    latencies: list[float] = []
    counter = iter(range(jobs))

    async def submitter() -> None:
        for _ in counter:
            await floor_job(["true"], latencies)

    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(submitter)
    return latencies


def mixed_argvs(count: int) -> list[list[str]]:
    """70 % short, 20 % one-second, 10 % output-heavy, interleaved."""
    argvs: list[list[str]] = []
    for i in range(count):
        if i % 10 < 7:
            argvs.append(["echo", f"job {i}"])
        elif i % 10 < 9:
            argvs.append(["sleep", "1"])
        else:
            argvs.append(["seq", "1", "100000"])
    return argvs


# -- memory, in fresh interpreters ----------------------------------------------------------------


async def measure_running(root: Path, count: int) -> str:
    async with JobRunner(root) as runner:
        await (await runner.run(["true"])).wait()  # warm up lazily built state
        gc.collect()
        before = pss_kib()
        jobs = [await runner.run(["sleep", "30"]) for _ in range(count)]
        await anyio.sleep(0.2)
        during = pss_kib()
        for job in jobs:
            await job.kill("KILL")
    return f"{(during - before) / count:.2f}"


async def measure_queued(root: Path, count: int) -> str:
    async with JobRunner(root, max_concurrency=1) as runner:
        blocker = await runner.run(["sleep", "300"])
        await (await runner.run(["true"])).kill()  # warm up the queue path
        gc.collect()
        before, fds_before = pss_kib(), open_fds()
        queued = [await runner.run(["true"]) for _ in range(count)]
        gc.collect()
        during, fds_during = pss_kib(), open_fds()
        for job in queued:
            await job.kill()
        await blocker.kill("KILL")
    return f"{(during - before) / count:.2f} {(fds_during - fds_before) / count:.3f}"


async def fresh(which: str, root: Path, count: int, backend: str) -> list[float]:
    """Memory is measured in a new interpreter: in this one, heap freed by earlier phases
    would absorb the jobs' allocations and hide them."""
    argv = [sys.executable, __file__, "--measure", which, "--root", str(root), "--count", str(count)]
    result = await anyio.run_process([*argv, "--backend", backend])
    return [float(word) for word in result.stdout.decode().split()]


# -- the table ---------------------------------------------------------------------------------------


class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, ...]] = []

    def add(self, metric: str, root: str, runner: str, floor: str, ratio: str, target: str = "") -> None:
        self.rows.append((metric, root, runner, floor, ratio, target))

    def print(self) -> None:
        header = ("metric", "root", "JobRunner", "floor", "ratio", "target")
        widths = [max(len(row[i]) for row in [header, *self.rows]) for i in range(6)]
        for row in [header, tuple("-" * w for w in widths), *self.rows]:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def verdict(ok: bool) -> str:
    return "PASS" if ok else "miss"


async def main(args: argparse.Namespace) -> int:
    n, k = args.jobs, args.concurrency
    known = {"tmpfs": Path("/dev/shm"), "disk": REPO}
    roots = {name: path for name, path in known.items() if name in args.roots.split(",")}
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(
        f"bench_runner: backend={args.backend} jobs={n} K={k} cpus={os.cpu_count()} "
        f"python={sys.version.split()[0]} load average before: {load}"
    )
    table = Table()
    misses = 0
    targets = {"tmpfs": 0.7, "disk": 0.4}
    for name, parent in roots.items():
        if not parent.is_dir():
            continue
        root = Path(tempfile.mkdtemp(prefix=".bench-runner-", dir=parent))
        try:
            probe = f"{creation_cost(root) * 1e6:.0f} us"
            table.add("file creation, this root (probe)", name, probe, "", "", "")
            await runner_batch(root / "warm", [["true"]] * min(n, 50), k)
            await floor_batch([["true"]] * min(n, 50), k)
            trues = [["true"]] * n
            runner_s, runner_block, runner_gap = await timed(partial(runner_batch, root / "tp", trues, k))
            floor_s, floor_block, floor_gap = await timed(partial(floor_batch, trues, k))
            ratio = floor_s / runner_s
            ok = ratio >= targets[name]
            misses += not ok
            table.add(
                f"{n} x true, K={k} (jobs/s)",
                name,
                f"{n / runner_s:.0f}",
                f"{n / floor_s:.0f}",
                f"{ratio:.2f}x",
                f">= {targets[name]}x {verdict(ok)}",
            )
            ok = runner_block <= 0.020
            misses += not ok
            table.add(
                "longest loop step (loop blocked)",
                name,
                f"{runner_block * 1000:.1f} ms",
                f"{floor_block * 1000:.1f} ms",
                "",
                f"<= 20 ms {verdict(ok)}",
            )
            table.add(
                "longest 1 ms ticker gap (saturated loop)",
                name,
                f"{runner_gap * 1000:.1f} ms",
                f"{floor_gap * 1000:.1f} ms",
                f"{runner_gap / floor_gap:.2f}x",
                "",
            )
            lat_jobs = min(n, args.latency_jobs)
            runner_lat = await runner_latency(root / "lat", lat_jobs, k)
            floor_lat = await floor_latency(lat_jobs, k)
            for q in (50, 99):
                r, f = pct(runner_lat, q), pct(floor_lat, q)
                ok = q != 99 or r <= 2 * f
                misses += not ok
                table.add(
                    f"launch latency p{q} (call -> exec)",
                    name,
                    f"{r * 1000:.2f} ms",
                    f"{f * 1000:.2f} ms",
                    f"{r / f:.2f}x",
                    f"<= 2x {verdict(ok)}" if q == 99 else "",
                )
            argvs = mixed_argvs(args.mixed_jobs)
            runner_s, *_ = await timed(partial(runner_batch, root / "mixed", argvs, k))
            floor_s, *_ = await timed(partial(floor_batch, argvs, k))
            table.add(
                f"mixed {len(argvs)} jobs (70% echo, 20% sleep 1, 10% seq 1e5)",
                name,
                f"{runner_s:.2f} s",
                f"{floor_s:.2f} s",
                f"{floor_s / runner_s:.2f}x",
            )
        finally:
            shutil.rmtree(root, ignore_errors=True)
    root = Path(tempfile.mkdtemp(prefix=".bench-runner-", dir="/dev/shm"))
    try:
        [running] = await fresh("running", root / "run", args.mem_jobs, args.backend)
        queued, fds = await fresh("queued", root / "queue", args.mem_jobs * 5, args.backend)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    for label, value, limit in (("running", running, 50.0), ("queued", queued, 5.0)):
        ok = value <= limit
        misses += not ok
        table.add(
            f"host PSS per {label} job",
            "tmpfs",
            f"{value:.1f} KiB",
            "",
            "",
            f"<= {limit:g} KiB {verdict(ok)}",
        )
    misses += fds > 0
    table.add("descriptors per queued job", "tmpfs", f"{fds:.3f}", "", "", f"0 {verdict(fds <= 0)}")
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"load average after: {load} (figures are noisy when it exceeds the core count)")
    table.print()
    return 1 if misses else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=2000, help="jobs in the throughput phase (default 2000)")
    parser.add_argument("--concurrency", type=int, default=64, help="max jobs running at once (default 64)")
    parser.add_argument("--latency-jobs", type=int, default=1000, help="closed-loop latency jobs")
    parser.add_argument("--mixed-jobs", type=int, default=300, help="jobs in the mixed workload")
    parser.add_argument("--mem-jobs", type=int, default=200, help="running jobs for the per-job memory")
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument("--quick", action="store_true", help="a smoke run (few jobs)")
    parser.add_argument("--roots", default="tmpfs,disk", help="which roots to measure (default tmpfs,disk)")
    parser.add_argument("--measure", choices=("running", "queued"), help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.jobs, args.latency_jobs, args.mixed_jobs, args.mem_jobs = 200, 100, 40, 50
    return args


async def measure(args: argparse.Namespace) -> int:
    run = measure_running if args.measure == "running" else measure_queued
    print(await run(Path(args.root), args.count))
    return 0


if __name__ == "__main__":
    arguments = parse_args()
    sys.exit(anyio.run(measure if arguments.measure else main, arguments, backend=arguments.backend))
