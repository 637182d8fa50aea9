"""N jobs through the Ray backend vs Ray's ``JobSubmissionClient`` used directly: same
local head, same N, same run.

    .venv/bin/python benchmarks/bench_ray.py [--jobs N] [--concurrency K] [--quick]

Needs ``pip install -e '.[ray]'`` and root: the script re-executes itself inside a
loopback-only network namespace (``unshare --net``) and starts a throwaway head with the
loopback settings of ``tests/on_ray/_head.py``; nothing leaves the machine.

- **floor**: ``submit_job`` of N ``echo`` jobs from K threads, then ``list_jobs`` until
  every job is terminal (what a script using the client directly does, with its output
  left on the head).
- **agent-exec**: ``JobRunner(backend=RayJobs(...), max_concurrency=K)``: N ``run()``
  calls, then ``wait()`` on each: every job terminal *and* its stdout/stderr pulled back
  into the local store.

Throughput is N over the wall time from the first submission to the last terminal job;
target: agent-exec >= 0.8x the floor's jobs/s (the table shows wall time, so <= 1.25x).
Submit latency: ``submit_job`` per call for the floor; for agent-exec, ``run()`` (which
returns once the job is recorded; its submission goes out concurrently) and the time
until Ray accepted it (``state.json`` says ``running``).
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


def run_direct(address: str, jobs: int, concurrency: int) -> tuple[float, list[float]]:
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(address)
    latencies: list[float] = []

    def submit(index: int) -> str:
        began = time.perf_counter()
        submission_id = client.submit_job(entrypoint=f"echo direct-{index}")
        latencies.append(time.perf_counter() - began)
        return submission_id

    began = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        ids = set(pool.map(submit, range(jobs)))
    while True:
        done = {
            job.submission_id
            for job in client.list_jobs()
            if job.submission_id in ids
            and str(job.status).split(".")[-1] in ("SUCCEEDED", "FAILED", "STOPPED")
        }
        if done == ids:
            break
        time.sleep(0.1)
    return time.perf_counter() - began, latencies


async def _run_ours(
    address: str, root: Path, jobs: int, concurrency: int
) -> tuple[float, list[float], list[float]]:
    import anyio

    from agent_exec import JobRunner, RayJobs

    run_latencies: list[float] = []
    accepted: list[float] = []
    async with JobRunner(root, backend=RayJobs(address), max_concurrency=concurrency) as runner:
        began = time.perf_counter()
        handles = []
        for index in range(jobs):
            call = time.perf_counter()
            handles.append((call, await runner.run(f"echo ours-{index}")))
            run_latencies.append(time.perf_counter() - call)
        pending = dict(enumerate(handles))
        while pending:  # when did Ray accept each job (state.json turned running)?
            for index, (call, job) in list(pending.items()):
                state = (job.job_dir / "state.json").read_bytes()
                if b'"created"' not in state:
                    accepted.append(time.perf_counter() - call)
                    del pending[index]
            await anyio.sleep(0.01)
        results = [await job.wait() for _, job in handles]
        wall = time.perf_counter() - began
    bad = [result for result in results if not result.ok]
    if bad:
        raise SystemExit(f"{len(bad)} jobs did not exit 0, e.g. {bad[0]}")
    for index, (_, job) in enumerate(handles):
        if job.stdout_log_path.read_bytes() != f"ours-{index}\n".encode():
            raise SystemExit(f"job {index}: wrong output in {job.stdout_log_path}")
    return wall, run_latencies, accepted


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
        direct_wall, direct_lat = run_direct(head.address, jobs, args.concurrency)
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
            "submit latency p50 (submit_job vs accepted by Ray)",
            statistics.median(direct_lat),
            statistics.median(accepted),
            None,
            note="agent-exec: run() -> state running",
        ),
        Row("submit latency p99", _percentile(direct_lat, 0.99), _percentile(accepted, 0.99), None),
        Row(
            "run() call p50 / p99 (returns once recorded)",
            None,
            statistics.median(run_lat),
            None,
            note=f"p99 {_percentile(run_lat, 0.99) * 1000:.1f} ms",
        ),
    ]
    print_table(f"Ray backend vs JobSubmissionClient (K={args.concurrency})", rows)
    return 0 if all(row.verdict != "FAIL" for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
