"""Concurrent-jobs harness: :class:`agent_exec.JobRunner` against a bare ``anyio.open_process`` floor.

Run it (from the repository root)::

    .venv/bin/python benchmarks/bench_runner.py --jobs 2000 --concurrency 64
    .venv/bin/python benchmarks/bench_runner.py --jobs 2000 --concurrency 64 --backend trio
    .venv/bin/python benchmarks/bench_runner.py --jobs 200 --mem-jobs 50 --mem-sleep 2   # quick look

What it measures, all in one process so that runner and floor share the machine state:

1. Throughput (open loop): ``--jobs`` N jobs of ``true`` submitted at once, at most
   ``--concurrency`` K running. The runner path is ``JobRunner(max_concurrency=K).run(["true"])``
   (which execs ``sh -lc 'exec "$@"' -- true``); the floor runs that very argv
   (``_process.build_argv(["sh", "-lc"], ["true"])``) through ``anyio.open_process`` under an
   ``anyio.CapacityLimiter(K)``, reading both pipes to EOF and waiting for the exit, which is
   the least any supervisor must do. Target: runner >= 0.7x floor jobs/s.
2. Launch latency (closed loop, ``--latency-jobs`` jobs): K submitters, each starting its
   next job when the previous one finished, so no job waits for a slot and the latency is the
   launch path alone. For the runner it is the time from the ``runner.run()`` call until the
   workload was exec'd (the benchmark wraps ``_workload.Workload`` to take a
   ``perf_counter`` right after ``Popen`` returned, i.e. after the exec succeeded; jobs are
   matched by an env variable); ``run()``'s own return latency is shown beside it. For the
   floor it is the ``open_process()`` call until it returned (also after the exec).
3. Memory: peak RSS (``getrusage`` maxrss, a process-lifetime peak) and, per phase, the peak
   of PSS sampled every 20 ms from ``/proc/self/smaps_rollup`` minus the PSS before it.
4. Host memory per running job: ``--mem-jobs`` M jobs of ``sleep --mem-sleep`` all running at
   once; (PSS with them running - PSS before) / M, for the runner and for the floor, each
   measured in a fresh interpreter (this script re-run with a hidden ``--measure-memory``).
   Target: <= 100 KiB per job.

The jobs root is a temporary directory (removed afterwards unless ``--keep``).
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from agent_exec import JobRunner, JobStatus
from agent_exec import _workload as supervisor_module
from agent_exec._process import DEFAULT_WRAPPER, build_argv

SEQ_ENV = "AGENT_EXEC_BENCH_SEQ"
THROUGHPUT_TARGET = 0.7
PER_JOB_TARGET_KIB = 100.0

# -- instrumentation ------------------------------------------------------------------------

#: perf_counter() at which each benchmark job's workload was exec'd, by sequence number.
EXEC_TIMES: dict[int, float] = {}


class _TimedWorkload(supervisor_module.Workload):
    """``Workload`` that notes when ``Popen`` returned (the exec has succeeded by then)."""

    def __init__(self, argv: list[str], **kwargs: Any) -> None:
        super().__init__(argv, **kwargs)
        seq = kwargs["env"].get(SEQ_ENV)
        if seq is not None:
            EXEC_TIMES[int(seq)] = time.perf_counter()


supervisor_module.Workload = _TimedWorkload  # type: ignore[misc]


def pss_kib() -> float:
    """Proportional set size of this process (KiB), or RSS where smaps_rollup is missing."""
    try:
        with open("/proc/self/smaps_rollup", encoding="ascii") as file:
            for line in file:
                if line.startswith("Pss:"):
                    return float(line.split()[1])
    except OSError:
        pass
    with open("/proc/self/statm", encoding="ascii") as file:
        return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024


def maxrss_kib() -> float:
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


class PeakSampler:
    """Samples PSS every ``interval`` seconds while a phase runs; keeps the peak."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.baseline = 0.0
        self.peak = 0.0

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        self.baseline = self.peak = pss_kib()
        task_status.started()
        while True:
            await anyio.sleep(self.interval)
            self.peak = max(self.peak, pss_kib())

    @property
    def growth(self) -> float:
        return self.peak - self.baseline


async def sampled(phase: Callable[[], Awaitable[None]]) -> tuple[float, float]:
    """Run ``phase``; return (seconds, peak PSS growth KiB)."""
    gc.collect()
    sampler = PeakSampler()
    async with anyio.create_task_group() as tg:
        await tg.start(sampler.run)
        started = time.perf_counter()
        await phase()
        elapsed = time.perf_counter() - started
        tg.cancel_scope.cancel()
    return elapsed, sampler.growth


# -- the two paths --------------------------------------------------------------------------------


async def floor_job(argv: list[str], latencies: list[float] | None = None) -> int:
    """What any supervisor must do at least: spawn, read both pipes to EOF, reap."""
    called = time.perf_counter()
    process = await anyio.open_process(argv, stdin=subprocess.DEVNULL)
    if latencies is not None:
        latencies.append(time.perf_counter() - called)
    async with process:
        assert process.stdout is not None and process.stderr is not None

        async def drain(stream: anyio.abc.ByteReceiveStream) -> None:
            async for _ in stream:
                pass

        async with anyio.create_task_group() as tg:
            tg.start_soon(drain, process.stdout)
            tg.start_soon(drain, process.stderr)
        return await process.wait()


@dataclass
class Report:
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)

    def add(self, metric: str, runner: str, floor: str, verdict: str = "") -> None:
        self.rows.append((metric, runner, floor, verdict))

    def print(self) -> None:
        headers = ("metric", "JobRunner", "floor", "ratio / target")
        widths = [max(len(row[i]) for row in [headers, *self.rows]) for i in range(4)]
        line = "  ".join("-" * width for width in widths)
        print(line)
        for row in [headers, None, *self.rows]:
            if row is None:
                print(line)
                continue
            print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        print(line)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


# -- phases -----------------------------------------------------------------------------------------


async def runner_throughput(root: Path, jobs: int, concurrency: int) -> None:
    async with JobRunner(root, max_concurrency=concurrency) as runner:
        handles = [await runner.run(["true"]) for _ in range(jobs)]
    bad = [job.job_id for job in handles[:: max(1, jobs // 50)] if not (await job.status()).ok]
    if bad:
        raise SystemExit(f"runner jobs failed: {bad[:5]}")


async def floor_throughput(argv: list[str], jobs: int, concurrency: int) -> None:
    limiter = anyio.CapacityLimiter(concurrency)
    failures = 0

    async def one() -> None:
        nonlocal failures
        async with limiter:
            failures += await floor_job(argv) != 0

    async with anyio.create_task_group() as tg:
        for _ in range(jobs):
            tg.start_soon(one)
    if failures:
        raise SystemExit(f"{failures} floor jobs failed")


async def runner_latency(root: Path, jobs: int, concurrency: int) -> tuple[list[float], list[float]]:
    """Closed loop: (run() call -> exec, run() call -> run() return) per job."""
    EXEC_TIMES.clear()
    called: dict[int, float] = {}
    returned: list[float] = []
    counter = iter(range(jobs))

    async with JobRunner(root, max_concurrency=concurrency) as runner:

        async def submitter() -> None:
            for seq in counter:
                called[seq] = time.perf_counter()
                job = await runner.run(["true"], env={SEQ_ENV: str(seq)})
                returned.append(time.perf_counter() - called[seq])
                await job.wait()

        async with anyio.create_task_group() as tg:
            for _ in range(concurrency):
                tg.start_soon(submitter)
    exec_latency = [EXEC_TIMES[seq] - called[seq] for seq in called]
    return exec_latency, returned


async def floor_latency(argv: list[str], jobs: int, concurrency: int) -> list[float]:
    latencies: list[float] = []
    counter = iter(range(jobs))

    async def submitter() -> None:
        for _ in counter:
            await floor_job(argv, latencies)

    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(submitter)
    return latencies


async def runner_memory_per_job(root: Path, count: int, sleep: float) -> float:
    async with JobRunner(root) as runner:
        await (await runner.run(["true"])).wait()  # warm up lazily built state
        gc.collect()
        before = pss_kib()
        handles = [await runner.run(["sleep", str(sleep)]) for _ in range(count)]

        async def all_running() -> bool:
            return all([(await job.status()).state is JobStatus.RUNNING for job in handles])

        with anyio.fail_after(max(30.0, sleep * 4)):
            while not await all_running():
                await anyio.sleep(0.02)
        during = pss_kib()
        if runner.statistics()["running"] != count:
            raise SystemExit("not every memory job was running at the measurement")
    return (during - before) / count


async def floor_memory_per_job(argv_for: Callable[[str], list[str]], count: int, sleep: float) -> float:
    await floor_job(argv_for("0"))
    gc.collect()
    before = pss_kib()
    during = 0.0
    spawned = 0

    async def one() -> None:
        nonlocal spawned
        process = await anyio.open_process(argv_for(str(sleep)), stdin=subprocess.DEVNULL)
        spawned += 1
        async with process:
            assert process.stdout is not None and process.stderr is not None
            async with anyio.create_task_group() as tg:
                for stream in (process.stdout, process.stderr):
                    tg.start_soon(_drain_stream, stream)
            await process.wait()

    async def measure() -> None:
        nonlocal during
        while spawned < count:
            await anyio.sleep(0.01)
        await anyio.sleep(0.1)  # let every reader park on its pipe
        during = pss_kib()

    async with anyio.create_task_group() as tg:
        tg.start_soon(measure)
        for _ in range(count):
            tg.start_soon(one)
    return (during - before) / count


async def _drain_stream(stream: anyio.abc.ByteReceiveStream) -> None:
    async for _ in stream:
        pass


async def memory_in_fresh_process(which: str, args: argparse.Namespace, root: Path) -> float:
    """Per-job memory is measured in a new interpreter: in this one, the heap the earlier
    phases freed would absorb the jobs' allocations and hide them."""
    argv = [
        sys.executable,
        __file__,
        "--measure-memory",
        which,
        "--backend",
        args.backend,
        "--mem-jobs",
        str(args.mem_jobs),
        "--mem-sleep",
        str(args.mem_sleep),
        "--root",
        str(root),
    ]
    result = await anyio.run_process(argv)
    return float(result.stdout.decode().split()[-1])


async def measure_memory(args: argparse.Namespace) -> None:
    if args.measure_memory == "runner":
        value = await runner_memory_per_job(Path(args.root), args.mem_jobs, args.mem_sleep)
    else:
        value = await floor_memory_per_job(
            lambda sleep: build_argv(list(DEFAULT_WRAPPER), ["sleep", sleep]), args.mem_jobs, args.mem_sleep
        )
    print(f"{value:.3f}")


# -- main ----------------------------------------------------------------------------------------


async def main(args: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="agent-exec-bench-"))
    argv = build_argv(list(DEFAULT_WRAPPER), ["true"])
    n, k = args.jobs, args.concurrency
    latency_jobs = min(n, args.latency_jobs)
    print(
        f"agent-exec bench: backend={args.backend} jobs={n} concurrency={k} latency_jobs={latency_jobs} "
        f"mem_jobs={args.mem_jobs} cpus={os.cpu_count()} python={sys.version.split()[0]}"
    )
    print(f"floor argv: {argv}")
    try:
        # Warm both paths (imports, first-spawn costs) before timing anything.
        await runner_throughput(root / "warm", min(n, 20), k)
        await floor_throughput(argv, min(n, 20), k)

        runner_s, runner_mem = await sampled(lambda: runner_throughput(root / "tp", n, k))
        floor_s, floor_mem = await sampled(lambda: floor_throughput(argv, n, k))
        runner_exec: list[float] = []
        runner_return: list[float] = []

        async def runner_latency_phase() -> None:
            nonlocal runner_exec, runner_return
            runner_exec, runner_return = await runner_latency(root / "lat", latency_jobs, k)

        floor_lat: list[float] = []

        async def floor_latency_phase() -> None:
            nonlocal floor_lat
            floor_lat = await floor_latency(argv, latency_jobs, k)

        await runner_latency_phase()
        await floor_latency_phase()
        maxrss = maxrss_kib()
        runner_per_job = await memory_in_fresh_process("runner", args, root / "mem")
        floor_per_job = await memory_in_fresh_process("floor", args, root / "mem")
    finally:
        if args.keep:
            print(f"jobs root kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    runner_rate, floor_rate = n / runner_s, n / floor_s
    ratio = runner_rate / floor_rate
    report = Report()
    report.add(
        "throughput (jobs/s)",
        f"{runner_rate:.0f}",
        f"{floor_rate:.0f}",
        f"{ratio:.2f}x (target >= {THROUGHPUT_TARGET}x) {'PASS' if ratio >= THROUGHPUT_TARGET else 'FAIL'}",
    )
    report.add("wall time", f"{runner_s:.2f} s", f"{floor_s:.2f} s")
    for q in (50, 99):
        r, f = pct(runner_exec, q), pct(floor_lat, q)
        report.add(f"launch latency p{q} (call -> exec)", ms(r), ms(f), f"{r / f:.2f}x")
    report.add(
        "run() return latency p50 / p99",
        f"{ms(pct(runner_return, 50))} / {ms(pct(runner_return, 99))}",
        "-",
    )
    report.add("mean launch latency", ms(statistics.fmean(runner_exec)), ms(statistics.fmean(floor_lat)))
    report.add(
        "peak PSS growth, throughput phase", f"{runner_mem / 1024:.1f} MiB", f"{floor_mem / 1024:.1f} MiB"
    )
    report.add("peak RSS (maxrss, whole run)", f"{maxrss / 1024:.1f} MiB", "(same process)")
    report.add(
        f"host PSS per running job ({args.mem_jobs} x sleep)",
        f"{runner_per_job:.1f} KiB",
        f"{floor_per_job:.1f} KiB",
        f"{runner_per_job / PER_JOB_TARGET_KIB:.2f}x of target <= {PER_JOB_TARGET_KIB:.0f} KiB "
        + ("PASS" if runner_per_job <= PER_JOB_TARGET_KIB else "FAIL"),
    )
    report.print()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=2000, help="jobs in the throughput phase (default 2000)")
    parser.add_argument("--concurrency", type=int, default=64, help="max jobs running at once (default 64)")
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument("--latency-jobs", type=int, default=1000, help="closed-loop latency jobs")
    parser.add_argument("--measure-memory", choices=("runner", "floor"), help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--mem-jobs", type=int, default=200, help="sleeping jobs for the per-job memory")
    parser.add_argument("--mem-sleep", type=float, default=5.0, help="seconds each memory job sleeps")
    parser.add_argument("--keep", action="store_true", help="keep the temporary jobs root")
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.concurrency < 1 or args.mem_jobs < 1:
        parser.error("--jobs, --concurrency and --mem-jobs must be positive")
    return args


if __name__ == "__main__":
    arguments = parse_args()
    entry = measure_memory if arguments.measure_memory else main
    anyio.run(entry, arguments, backend=arguments.backend)
