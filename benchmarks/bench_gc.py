"""How fast is ``agent-exec gc`` compared with ``rm -rf`` of the same jobs?

Builds two identical jobs roots of N finished jobs (meta.json, state.json, stdout.log,
stderr.log, full.log each, finished in 2020), then times ``rm -rf`` of one (the floor:
the least work that removes the same files) and ``agent-exec gc --older-than 0s`` of the
other, through the CLI in a subprocess (interpreter start-up included). Target: gc at
most 1.5x the floor.

    .venv/bin/python benchmarks/bench_gc.py [--jobs N] [--repeat R] [--dir PATH]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from agent_exec._models import JobMeta, JobState, JobStatus

TARGET_RATIO = 1.5


def build_tree(root: Path, jobs: int) -> None:
    """``jobs`` finished job directories, written directly (no temp-file dance: speed)."""
    root.mkdir(parents=True)
    for index in range(jobs):
        job_id = f"{index:032x}"
        job_dir = root / job_id
        job_dir.mkdir()
        meta = JobMeta(
            job_id=job_id,
            command=["echo", "hello"],
            created_at="2020-01-01T00:00:00Z",
            root=str(root),
            cwd="/tmp",
        )
        state = JobState(
            job_id=job_id,
            status=JobStatus.EXITED,
            updated_at="2020-01-01T00:00:01Z",
            started_at="2020-01-01T00:00:00Z",
            exit_code=0,
            duration_ms=12,
            pid=4242,
            finished_at="2020-01-01T00:00:01Z",
        )
        files = {
            "meta.json": orjson.dumps(meta.to_dict(), option=orjson.OPT_INDENT_2),
            "state.json": orjson.dumps(state.to_dict(), option=orjson.OPT_INDENT_2),
            "stdout.log": b"hello\n",
            "stderr.log": b"",
            "full.log": b"2020-01-01T00:00:00Z [STDOUT] hello\n",
        }
        for name, data in files.items():
            (job_dir / name).write_bytes(data)


def timed(argv: list[str]) -> tuple[float, subprocess.CompletedProcess[bytes]]:
    os.sync()  # do not time the writeback of the tree just built
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, check=False)
    return time.perf_counter() - start, proc


def one_round(base: Path, jobs: int) -> tuple[float, float]:
    floor_root, gc_root = base / "floor", base / "gc"
    build_tree(floor_root, jobs)
    build_tree(gc_root, jobs)
    floor, proc = timed(["rm", "-rf", str(floor_root)])
    if proc.returncode != 0:
        raise SystemExit(f"rm -rf failed: {proc.stderr.decode()}")
    ours, proc = timed(
        [sys.executable, "-m", "agent_exec", "--root", str(gc_root), "gc", "--older-than", "0s"]
    )
    if proc.returncode != 0:
        raise SystemExit(f"gc failed: {proc.stdout.decode()} {proc.stderr.decode()}")
    doc = orjson.loads(proc.stdout)
    if doc["deleted"] != jobs or any(gc_root.iterdir()):
        raise SystemExit(f"gc deleted {doc['deleted']} of {jobs} jobs")
    shutil.rmtree(gc_root, ignore_errors=True)
    return floor, ours


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000, help="job directories per tree (default 10000)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds; medians are reported (default 1)")
    parser.add_argument("--dir", type=Path, default=None, help="where to build the trees (default: $TMPDIR)")
    args = parser.parse_args()
    floors: list[float] = []
    ours: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-gc-", dir=args.dir) as tmp:
        for round_no in range(args.repeat):
            base = Path(tmp) / f"round{round_no}"
            floor, gc = one_round(base, args.jobs)
            floors.append(floor)
            ours.append(gc)
    floor, gc = statistics.median(floors), statistics.median(ours)
    ratio = gc / floor
    print(f"gc benchmark: {args.jobs} finished jobs x 5 files, median of {args.repeat}")
    print(f"{'what':<34}{'seconds':>10}")
    print(f"{'rm -rf (floor)':<34}{floor:>10.3f}")
    print(f"{'agent-exec gc --older-than 0s':<34}{gc:>10.3f}")
    print(f"{'ratio (target <= 1.5x)':<34}{ratio:>9.2f}x  {'OK' if ratio <= TARGET_RATIO else 'OVER TARGET'}")


if __name__ == "__main__":
    main()
