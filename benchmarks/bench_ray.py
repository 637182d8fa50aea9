"""N jobs through the Ray backend vs Ray's ``JobSubmissionClient`` used directly: same
local head, same N, same run.

    .venv/bin/python benchmarks/bench_ray.py [--jobs N] [--concurrency K] [--quick]

Needs ``pip install -e '.[ray]'`` and root: the script re-executes itself inside a
loopback-only network namespace (``unshare --net``) and starts a throwaway head with the
loopback settings of ``tests/on_ray/_head.py``; nothing leaves the machine.

- **floor**: ``submit_job`` of N ``echo`` jobs from K threads, then ``list_jobs`` until
  every job is terminal (what a script using the client directly does, with its output
  left on the head).
- **agent-exec**: ``JobRunner(backend=RayJobs(..., max_client_threads=K))``: N ``run()``
  calls, then ``wait()`` on each: every job terminal *and* its stdout/stderr pulled back
  into the local store.

Throughput is N over the wall time from the first submission to the last terminal job;
target: agent-exec >= 0.8x the floor's jobs/s (the table shows wall time, so <= 1.25x).
Submit latency: ``submit_job`` per call for the floor; for agent-exec, ``run()`` (which
returns once the job is recorded; its submission goes out concurrently) and the time
until the head has the job (its ``start_time``), measured the same way for both.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from _util import Row, print_table  # noqa: E402

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _accepted(client: object, calls: dict[str, float]) -> list[float]:
    """Seconds from each call to the head's record of the job (``start_time``, set when the
    head accepts a submission): the same measure for both ways of submitting."""
    listing = client.list_jobs()  # type: ignore[attr-defined]
    return [job.start_time / 1000 - calls[job.submission_id] for job in listing if job.submission_id in calls]


def run_direct(address: str, jobs: int, concurrency: int) -> tuple[float, list[float], list[float]]:
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(address)
    latencies: list[float] = []
    calls: dict[str, float] = {}

    def submit(index: int) -> str:
        called = time.time()
        began = time.perf_counter()
        submission_id = client.submit_job(entrypoint=f"echo direct-{index}")
        latencies.append(time.perf_counter() - began)
        calls[submission_id] = called
        return submission_id

    began = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        ids = set(pool.map(submit, range(jobs)))
    while True:
        done = {
            job.submission_id
            for job in client.list_jobs()
            if job.submission_id in ids and str(job.status).split(".")[-1] in TERMINAL
        }
        if done == ids:
            break
        time.sleep(0.1)
    return time.perf_counter() - began, latencies, _accepted(client, calls)


async def _run_ours(
    address: str, root: Path, jobs: int, concurrency: int
) -> tuple[float, list[float], list[float]]:
    from ray.job_submission import JobSubmissionClient

    from agent_exec import JobRunner, RayJobs

    run_latencies: list[float] = []
    calls: dict[str, float] = {}
    backend = RayJobs(address, max_client_threads=concurrency)
    async with JobRunner(root, backend=backend) as runner:
        began = time.perf_counter()
        handles = []
        for index in range(jobs):
            called = time.time()
            call = time.perf_counter()
            job = await runner.run(f"echo ours-{index}")
            run_latencies.append(time.perf_counter() - call)
            calls[job.job_id] = called
            handles.append(job)
        results = [await job.wait() for job in handles]
        wall = time.perf_counter() - began
    bad = [result for result in results if not result.ok]
    if bad:
        raise SystemExit(f"{len(bad)} jobs did not exit 0, e.g. {bad[0]}")
    for index, job in enumerate(handles):
        if job.stdout_log_path.read_bytes() != f"ours-{index}\n".encode():
            raise SystemExit(f"job {index}: wrong output in {job.stdout_log_path}")
    return wall, run_latencies, _accepted(JobSubmissionClient(address), calls)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="10 jobs")
    args = parser.parse_args(argv)
    jobs = 10 if args.quick else args.jobs

    try:
        import ray.job_submission  # noqa: F401
    except ImportError:
        print("bench_ray: skipped (Ray is not installed: pip install -e '.[ray]')")
        return 0
    from on_ray._head import LocalRayHead, loopback_only

    if not loopback_only():
        if os.geteuid() != 0 or os.environ.get("AGENT_EXEC_BENCH_NETNS"):
            print("bench_ray: skipped (needs root for a loopback-only network namespace)")
            return 0
        os.environ["AGENT_EXEC_BENCH_NETNS"] = "1"
        script = 'ip link set lo up && exec "$0" "$@"'
        os.execvp(
            "unshare",
            ["unshare", "--net", "--fork", "sh", "-c", script, sys.executable, __file__, *sys.argv[1:]],
        )

    import anyio

    base = Path(tempfile.mkdtemp(prefix="agent-exec-bench-ray-"))
    head = LocalRayHead(base, port_base=48000)
    try:
        head.start()
        direct_wall, direct_lat, direct_accepted = run_direct(head.address, jobs, args.concurrency)
        ours_wall, run_lat, accepted = anyio.run(
            _run_ours, head.address, base / "jobs", jobs, args.concurrency
        )
    finally:
        head.stop()
        shutil.rmtree(base, ignore_errors=True)

    rows = [
        Row(
            f"{jobs} jobs, wall time (first submit -> all terminal)",
            direct_wall,
            ours_wall,
            1.25,
            note=f"jobs/s: direct {jobs / direct_wall:.2f}, agent-exec {jobs / ours_wall:.2f} "
            f"({direct_wall / ours_wall:.2f}x; target >= 0.8x)",
        ),
        Row(
            "submit latency p50 (call -> head has the job)",
            statistics.median(direct_accepted),
            statistics.median(accepted),
            None,
        ),
        Row("submit latency p99", _percentile(direct_accepted, 0.99), _percentile(accepted, 0.99), None),
        Row(
            "call returns p50 (submit_job vs run())",
            statistics.median(direct_lat),
            statistics.median(run_lat),
            None,
            note="run() returns once the job is recorded; its submission goes out concurrently",
        ),
    ]
    print_table(f"Ray backend vs JobSubmissionClient (K={args.concurrency})", rows)
    return 0 if all(row.verdict != "FAIL" for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
