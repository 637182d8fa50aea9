"""Output throughput: a job writing 256 MiB of 100-byte lines, against the shell writing
the same bytes to a file.

* Floor: ``sh -c '<generator> > FILE'`` (the least work that puts the bytes on disk).
* Ours: ``agent-exec run --no-wait -- sh -c '<generator>'`` then ``agent-exec wait --forever
  <id>``, timed end to end, from launching the ``run`` to ``wait`` printing the terminal
  state. ``wait`` starts while the job runs (it wakes when the supervisor releases its
  lock), so its start-up mostly overlaps the job, as it does for a user. The job's own
  ``duration_ms`` is reported as well.
* Checked afterwards: stdout.log holds every byte, full.log holds every line in full.
* Target: median of 3 <= 1.5x the floor. Each timed run starts after ``sync`` so page-cache
  writeback of the previous one is not billed to it.

A second job writes 256 MiB with no newline at all: stdout.log must keep every byte and
the supervisor's memory must stay bounded (its PSS/RSS is sampled while it runs, the
supervisor found by its title ``_supervise --job-id <id>``). Target: peak PSS <= 64 MiB
(a quarter of the bytes written: a supervisor that buffered the line would exceed it).

    .venv/bin/python benchmarks/bench_stream.py [--mib N] [--repeat R] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson

from _util import (
    Row,
    bench_env,
    cli_argv,
    compile_package,
    print_table,
    read_hwm_mib,
    read_pss_mib,
    temp_root,
    wait_for_supervisor,
)

TARGET_RATIO = 1.5
#: "Bounded": far below the 256 MiB written. The supervisor reads up to 4 MiB per batch and
#: keeps at most 1 MiB of a partial line, on top of an idle ~22 MiB RSS.
PEAK_PSS_TARGET_MIB = 64.0
LINE_PAYLOAD = "x" * 99  # + "\n" = 100-byte lines


def lines_generator(lines: int) -> str:
    """A shell pipeline printing ``lines`` 100-byte lines, at several GB/s (``yes``)."""
    return f"yes {LINE_PAYLOAD} | head -n {lines}"


def blob_generator(size: int) -> str:
    """A shell pipeline printing ``size`` bytes without a single newline."""
    return f"head -c {size} /dev/zero | tr '\\000' y"


class MemorySampler:
    """Watches a process's memory until stopped: the kernel's peak RSS (``VmHWM``, cheap
    to read, no gaps) every 10 ms, and PSS (``smaps_rollup``) every ``pss_every`` seconds.

    Reading ``smaps_rollup`` walks the page tables under the process's mmap lock, which
    slows a process that maps and unmaps large buffers; PSS is therefore sampled sparsely,
    or not at all (``pss_every=None``) while throughput is timed.
    """

    def __init__(self, pid: int, pss_every: float | None) -> None:
        self.pid = pid
        self.pss_every = pss_every
        self.peak_pss = 0.0
        self.peak_rss = 0.0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        next_pss = time.monotonic()
        while not self._stop.is_set():
            hwm = read_hwm_mib(self.pid)
            if hwm is None:
                return  # the supervisor has exited
            self.peak_rss = max(self.peak_rss, hwm)
            if self.pss_every is not None and time.monotonic() >= next_pss:
                pss = read_pss_mib(self.pid)
                if pss is None:
                    return
                self.peak_pss = max(self.peak_pss, pss)
                self.samples += 1
                next_pss = time.monotonic() + self.pss_every
            self._stop.wait(0.01)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_job(
    cli: list[str], env: dict[str, str], command: str, *, pss_every: float | None
) -> tuple[float, dict[str, object], MemorySampler | None]:
    """Launch ``command`` detached and wait for it through the CLI; (wall time, wait doc, sampler)."""
    start = time.perf_counter()
    launched = subprocess.run([*cli, "run", "--no-wait", "--", command], capture_output=True, env=env)
    doc = orjson.loads(launched.stdout)
    job_id = doc["job_id"]
    waiter = subprocess.Popen(
        [*cli, "wait", "--forever", job_id], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    sampler = None
    pid = wait_for_supervisor(job_id)
    if pid is not None:
        sampler = MemorySampler(pid, pss_every)
        sampler.__enter__()
    out, _err = waiter.communicate()
    elapsed = time.perf_counter() - start
    if sampler is not None:
        sampler.__exit__()
    result = orjson.loads(out)
    result["job_id"] = job_id
    return elapsed, result, sampler


def check_lines(job_dir: Path, lines: int) -> str:
    """'' if stdout.log holds every byte and full.log every line in full, else what is wrong."""
    expected = (LINE_PAYLOAD + "\n").encode()
    size = (job_dir / "stdout.log").stat().st_size
    if size != lines * len(expected):
        return f"stdout.log {size} B != {lines * len(expected)} B"
    suffix = b" [STDOUT] " + expected
    count = 0
    with open(job_dir / "full.log", "rb") as file:
        for line in file:
            if not line.endswith(suffix):
                return f"full.log line {count + 1} mangled: {line[:80]!r}"
            count += 1
    if count != lines:
        return f"full.log has {count} lines != {lines}"
    return ""


def timed_floor(command: str, target: Path, env: dict[str, str]) -> float:
    os.sync()
    start = time.perf_counter()
    subprocess.run(["sh", "-c", f"{command} > {target}"], check=True, env=env)
    elapsed = time.perf_counter() - start
    target.unlink()
    return elapsed


def timed_tee_floor(command: str, base: Path, env: dict[str, str]) -> float:
    """The same bytes written to two files (``tee``): the least any supervisor that keeps
    both stdout.log and full.log must write. Reported for context, not a target."""
    first, second = base / "tee1.out", base / "tee2.out"
    os.sync()
    start = time.perf_counter()
    subprocess.run(["sh", "-c", f"{command} | tee {first} > {second}"], check=True, env=env)
    elapsed = time.perf_counter() - start
    first.unlink()
    second.unlink()
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mib", type=int, default=256, help="MiB written by each job (default 256)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs, median taken (default 3)")
    parser.add_argument("--quick", action="store_true", help="32 MiB, 1 run: a smoke test")
    args = parser.parse_args(argv)
    mib, repeat = (32, 1) if args.quick else (args.mib, args.repeat)
    size = mib * 1024 * 1024
    lines = -(-size // 100)  # at least ``mib`` MiB of whole lines

    compile_package()
    rows: list[Row] = []
    with temp_root() as base:
        env = bench_env(base / "cfg")
        jobs = base / "jobs"
        cli = [*cli_argv(), "--root", str(jobs)]
        command = lines_generator(lines)

        floors: list[float] = []
        tee_floors: list[float] = []
        ours: list[float] = []
        durations: list[float] = []
        peaks: list[float] = []
        problems: list[str] = []
        for _ in range(repeat):
            floors.append(timed_floor(command, base / "floor.out", env))
            tee_floors.append(timed_tee_floor(command, base, env))
            os.sync()
            elapsed, doc, sampler = run_job(cli, env, command, pss_every=None)
            ours.append(elapsed)
            if doc.get("state") != "exited":
                problems.append(f"state {doc.get('state')}")
            if isinstance(doc.get("duration_ms"), int):
                durations.append(doc["duration_ms"] / 1000)  # type: ignore[operator]
            if sampler is not None:
                peaks.append(sampler.peak_rss)
            job_dir = jobs / str(doc["job_id"])
            problem = check_lines(job_dir, lines)
            if problem:
                problems.append(problem)
            subprocess.run([*cli, "delete", str(doc["job_id"])], capture_output=True, env=env)
        rows.append(
            Row(
                f"{mib} MiB of 100-byte lines, launch->terminal",
                statistics.median(floors),
                statistics.median(ours),
                TARGET_RATIO,
                note="; ".join(problems) or "all bytes + lines kept",
                ok=not problems,
            )
        )
        rows.append(
            Row(
                "  same, vs 2-file floor (cmd | tee a > b)",
                statistics.median(tee_floors),
                statistics.median(ours),
                None,
            )
        )
        if durations:
            rows.append(
                Row(
                    "  same, job duration_ms (supervisor's view)",
                    statistics.median(floors),
                    statistics.median(durations),
                    None,
                )
            )
        if peaks:
            rows.append(
                Row("  same, supervisor peak RSS (VmHWM)", None, max(peaks), PEAK_PSS_TARGET_MIB, unit="MiB")
            )

        # No newline at all: every byte kept, memory bounded.
        os.sync()
        floor = timed_floor(blob_generator(size), base / "floor.out", env)
        os.sync()
        elapsed, doc, sampler = run_job(cli, env, blob_generator(size), pss_every=0.05)
        job_dir = jobs / str(doc["job_id"])
        kept = (job_dir / "stdout.log").stat().st_size
        full = (job_dir / "full.log").stat().st_size
        ok = doc.get("state") == "exited" and kept == size
        note = f"stdout.log {kept}/{size} B, full.log {full / 2**20:.0f} MiB"
        rows.append(Row(f"{mib} MiB, no newline, launch->terminal", floor, elapsed, None, note=note, ok=ok))
        if sampler is not None:
            rows.append(
                Row(
                    "  same, supervisor peak PSS",
                    None,
                    sampler.peak_pss,
                    PEAK_PSS_TARGET_MIB,
                    unit="MiB",
                    note=f"peak RSS (VmHWM) {sampler.peak_rss:.1f} MiB, {sampler.samples} PSS samples",
                )
            )
        else:
            rows.append(
                Row("  same, supervisor peak PSS", None, 0.0, None, note="supervisor not found", ok=False)
            )

    print_table(f"Output throughput (median of {repeat}, floor = shell redirect to a file)", rows)
    return 0 if all(row.verdict != "FAIL" for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
