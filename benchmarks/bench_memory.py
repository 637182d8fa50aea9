"""Memory of detached supervisors while their jobs run.

Launches N jobs (``sleep 30``, default N = 10) with ``agent-exec run --no-wait``, finds
each job's supervisor by its title (``_supervise --job-id <id>``), waits until every job
is ``running`` and its supervisor has settled, then reads each supervisor's PSS from
``/proc/PID/smaps_rollup`` (shared pages split among their sharers, so N supervisors
add up to what they really cost). Target: <= 16 MiB each. The jobs are killed afterwards.

    .venv/bin/python benchmarks/bench_memory.py [--jobs N] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import orjson

from _util import (
    Row,
    bench_env,
    cli_argv,
    compile_package,
    print_table,
    read_pss_mib,
    read_rss_mib,
    temp_root,
    wait_for_supervisor,
)

PSS_TARGET_MIB = 16.0
SETTLE_S = 0.5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=10, help="jobs running at once (default 10)")
    parser.add_argument("--quick", action="store_true", help="3 jobs: a smoke test")
    args = parser.parse_args(argv)
    count = 3 if args.quick else args.jobs

    compile_package()
    rows: list[Row] = []
    with temp_root() as base:
        env = bench_env(base / "cfg")
        cli = [*cli_argv(), "--root", str(base / "jobs")]
        job_ids: list[str] = []
        try:
            for _ in range(count):
                proc = subprocess.run(
                    [*cli, "run", "--no-wait", "--", "sleep 30"], capture_output=True, env=env, check=True
                )
                job_ids.append(orjson.loads(proc.stdout)["job_id"])
            pids = [wait_for_supervisor(job_id) for job_id in job_ids]
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                states = [
                    orjson.loads(
                        subprocess.run([*cli, "status", job_id], capture_output=True, env=env).stdout
                    ).get("state")
                    for job_id in job_ids
                ]
                if all(state == "running" for state in states):
                    break
                time.sleep(0.05)
            time.sleep(SETTLE_S)  # let each supervisor reach its steady (awaiting) state
            pss = [read_pss_mib(pid) if pid is not None else None for pid in pids]
            rss = [read_rss_mib(pid) if pid is not None else None for pid in pids]
        finally:
            for job_id in job_ids:
                subprocess.run([*cli, "kill", job_id], capture_output=True, env=env)

    found = [value for value in pss if value is not None]
    rss_found = [value for value in rss if value is not None]
    ok = len(found) == count
    note = "" if ok else f"{count - len(found)} supervisors not found"
    if found:
        rows.append(
            Row(
                f"supervisor PSS, mean of {count}",
                None,
                statistics.mean(found),
                PSS_TARGET_MIB,
                "MiB",
                note,
                ok,
            )
        )
        rows.append(Row(f"supervisor PSS, max of {count}", None, max(found), PSS_TARGET_MIB, "MiB", "", ok))
    if rss_found:
        rows.append(Row("supervisor RSS, mean (reference)", None, statistics.mean(rss_found), None, "MiB"))
    if not found:
        rows.append(Row("supervisor PSS", None, 0.0, PSS_TARGET_MIB, "MiB", "no supervisor found", False))
    print_table(f"Detached supervisor memory ({count} jobs running at once)", rows)
    return 0 if all(row.verdict != "FAIL" for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
