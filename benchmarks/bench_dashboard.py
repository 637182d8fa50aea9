"""What the dashboard's live updates cost ``serve`` on a store of 1,000 jobs.

The page polls (no server-sent events): ``GET /ui/api/jobs`` every 2 s while the table is
shown, the job's detail and log slice every 1 s while a job is shown, nothing while the
tab is hidden. This script starts a real ``agent-exec serve`` on a root of N finished jobs
and measures, with one keep-alive HTTP client:

* the floor: ``GET /health`` (routing + JSON, no store access), median latency;
* the first table poll (every ``meta.json``/``state.json`` read) and the steady one
  (only changed job directories are re-read), median latency, ratio to the floor;
* the server's CPU time per steady poll (utime + stime of the server process over the
  polls), and what one open tab therefore costs: CPU per poll / 2 s, in % of one core;
* the job view's poll (detail + 64 KiB log slice).

Target: a steady table poll at 1,000 jobs costs <= 15x the ``/health`` floor.

    .venv/bin/python benchmarks/bench_dashboard.py [--jobs N] [--repeat N] [--quick]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from _util import PYTHON, Row, bench_env, print_table, temp_root

STEADY_TARGET = 15.0
POLL_EVERY_S = 2.0


def _populate(root: Path, count: int) -> str:
    """``count`` finished jobs with a little output each, created over the last day."""
    from agent_exec._models import JobMeta, JobState, JobStatus
    from agent_exec._store import write_meta, write_state
    from agent_exec._timeutil import format_ts

    root.mkdir(parents=True)
    now = time.time()
    job_id = ""
    for index in range(count):
        job_id = f"{index:032x}"
        job_dir = root / job_id
        job_dir.mkdir()
        stamp = format_ts(now - 86400 + index * 86400 / count)
        command = ["pytest", "-q", f"tests/test_{index}.py"]
        meta = JobMeta(job_id=job_id, command=command, created_at=stamp, root=str(root), tags=["ci.test"])
        write_meta(job_dir, meta)
        status = (JobStatus.EXITED, JobStatus.FAILED, JobStatus.KILLED)[index % 3]
        write_state(
            job_dir,
            JobState(
                job_id=job_id,
                status=status,
                updated_at=stamp,
                started_at=stamp,
                exit_code=index % 2 if status is JobStatus.EXITED else None,
                finished_at=stamp,
                duration_ms=1234,
            ),
        )
        (job_dir / "stdout.log").write_bytes(b"collected 12 items\n" * 200)
        (job_dir / "stderr.log").touch()
        (job_dir / "full.log").touch()
    return job_id


def _cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds (``/proc/PID/stat`` fields 14 and 15)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as file:
        fields = file.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _median_latency(client: httpx.Client, path: str, repeat: int) -> tuple[float, int]:
    times: list[float] = []
    size = 0
    for _ in range(repeat):
        start = time.perf_counter()
        response = client.get(path)
        times.append(time.perf_counter() - start)
        response.raise_for_status()
        size = len(response.content)
    return statistics.median(times), size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=1000, help="jobs in the store (default 1000)")
    parser.add_argument("--repeat", type=int, default=40, help="timed requests per row (default 40)")
    parser.add_argument("--quick", action="store_true", help="10 timed requests: a smoke test")
    args = parser.parse_args(argv)
    repeat = 10 if args.quick else args.repeat

    rows: list[Row] = []
    with temp_root() as base:
        root = base / "jobs" / "store"
        last_id = _populate(root, args.jobs)
        stderr_path = base / "serve.err"
        with open(stderr_path, "wb") as stderr:
            server = subprocess.Popen(
                [PYTHON, "-m", "agent_exec", "--root", str(root), "-v", "serve", "--port", "0"],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env=bench_env(base / "cfg"),
                cwd=base,
            )
        try:
            deadline = time.monotonic() + 30
            while not (match := re.search(r"listening on (\S+)", stderr_path.read_text())):
                if server.poll() is not None or time.monotonic() > deadline:
                    print(f"serve did not start: {stderr_path.read_text()}", file=sys.stderr)
                    return 1
                time.sleep(0.05)
            with httpx.Client(base_url=f"http://{match.group(1)}", timeout=60) as client:
                floor, _ = _median_latency(client, "/health", repeat)
                table = "/ui/api/jobs?scope=all&window=hour&limit=200"

                start = time.perf_counter()
                first = client.get(table)
                first_s = time.perf_counter() - start
                doc = first.json()
                ok = doc["total"] == args.jobs and len(doc["jobs"]) == 200
                rows.append(Row(f"table poll, first ({args.jobs} jobs read)", floor, first_s, None, ok=ok))

                cpu_before = _cpu_s(server.pid)
                steady, size = _median_latency(client, table, repeat)
                cpu_per_poll = (_cpu_s(server.pid) - cpu_before) / repeat
                share = cpu_per_poll / POLL_EVERY_S * 100
                note = f"{size // 1024} KiB; server CPU {cpu_per_poll * 1000:.1f} ms/poll"
                note += f" = {share:.2f}% of a core per open tab"
                rows.append(
                    Row(f"table poll, steady ({args.jobs} jobs)", floor, steady, STEADY_TARGET, note=note)
                )

                detail, _ = _median_latency(client, f"/ui/api/jobs/{last_id}", repeat)
                rows.append(Row("job view: detail", floor, detail, None))
                log, size = _median_latency(client, f"/ui/api/jobs/{last_id}/log/stdout?max=65536", repeat)
                rows.append(Row("job view: log tail (64 KiB)", floor, log, None, note=f"{size // 1024} KiB"))
        finally:
            server.terminate()
            server.wait(timeout=10)
    print_table(f"dashboard polls on a {args.jobs}-job store (floor: GET /health)", rows)
    return 0 if all(row.verdict != "FAIL" for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
