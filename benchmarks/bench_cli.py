"""CLI round trips against the cheapest possible start-up (``python -c pass``).

Targets (issue #2), floors measured in the same run with the CLI's own interpreter:

* ``agent-exec run -- true`` returning ``exited`` with inline output: median <= 8x the floor;
* ``agent-exec run --no-wait -- true``: reported (no target);
* ``agent-exec status <id>``: median <= 6x the floor.

Runs are interleaved with the floor so drift hits both alike. The package is byte-compiled
first and ``PYTHONDONTWRITEBYTECODE`` is removed from the environment, so the figures are
those of an installed package.

    .venv/bin/python benchmarks/bench_cli.py [--repeat N] [--quick]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson

from _util import Row, bench_env, cli_argv, compile_package, floor_argv, median_pair, print_table, temp_root

RUN_TARGET = 8.0
STATUS_TARGET = 6.0


def _doc(stdout: bytes) -> dict[str, object]:
    try:
        doc = orjson.loads(stdout)
    except orjson.JSONDecodeError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _populate_finished_jobs(root: Path, count: int) -> None:
    """``count`` finished job directories (meta, state, empty logs), as a busy store has."""
    from agent_exec._models import JobMeta, JobState, JobStatus
    from agent_exec._store import write_meta, write_state

    root.mkdir(parents=True)
    for index in range(count):
        job_id = f"{index:032x}"
        job_dir = root / job_id
        job_dir.mkdir()
        stamp = "2026-01-01T00:00:00Z"
        write_meta(job_dir, JobMeta(job_id=job_id, command=["true"], created_at=stamp, root=str(root)))
        write_state(
            job_dir,
            JobState(
                job_id=job_id, status=JobStatus.EXITED, updated_at=stamp, exit_code=0, finished_at=stamp
            ),
        )
        for name in ("stdout.log", "stderr.log", "full.log"):
            (job_dir / name).touch()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=30, help="timed runs per benchmark (default 30)")
    parser.add_argument("--quick", action="store_true", help="5 timed runs: a smoke test, noisy figures")
    args = parser.parse_args(argv)
    repeat = 5 if args.quick else args.repeat

    compile_package()
    rows: list[Row] = []
    with temp_root() as base:
        env = bench_env(base / "cfg")
        cli = [*cli_argv(), "--root", str(base / "jobs")]
        floor = floor_argv()

        floor_s, ours_s, results = median_pair(floor, [*cli, "run", "--", "true"], env=env, repeat=repeat)
        docs = [_doc(proc.stdout) for proc in results]
        bad = sum(1 for doc in docs if doc.get("state") != "exited" or doc.get("exit_code") != 0)
        rows.append(
            Row(
                "run -- true (exited, inline)",
                floor_s,
                ours_s,
                RUN_TARGET,
                note=f"{bad}/{repeat} runs not exited" if bad else "",
                ok=not bad,
            )
        )

        floor_s, ours_s, results = median_pair(
            floor, [*cli, "run", "--no-wait", "--", "true"], env=env, repeat=repeat
        )
        bad = sum(1 for proc in results if _doc(proc.stdout).get("ok") is not True)
        rows.append(
            Row(
                "run --no-wait -- true",
                floor_s,
                ours_s,
                None,
                note=f"{bad}/{repeat} runs failed" if bad else "",
                ok=not bad,
            )
        )

        job_id = docs[-1].get("job_id")
        if not isinstance(job_id, str):
            print("could not create a job for the status benchmark", file=sys.stderr)
            return 1
        floor_s, ours_s, results = median_pair(floor, [*cli, "status", job_id], env=env, repeat=repeat)
        bad = sum(1 for proc in results if _doc(proc.stdout).get("state") != "exited")
        rows.append(
            Row(
                "status <id>",
                floor_s,
                ours_s,
                STATUS_TARGET,
                note=f"{bad}/{repeat} runs failed" if bad else "",
                ok=not bad,
            )
        )

        # run on a root holding 10,000 finished jobs vs an empty root (issue: <= +10 ms median).
        big_root = base / "big"
        _populate_finished_jobs(big_root, 1000 if args.quick else 10_000)
        empty_cli = [*cli_argv(), "--root", str(base / "empty")]
        big_cli = [*cli_argv(), "--root", str(big_root)]
        empty_s, big_s, results = median_pair(
            [*empty_cli, "run", "--", "true"], [*big_cli, "run", "--", "true"], env=env, repeat=repeat
        )
        bad = sum(1 for proc in results if _doc(proc.stdout).get("state") != "exited")
        rows.append(
            Row(
                "run -- true, 10k-job root vs empty root",
                empty_s,
                big_s,
                None,
                note=f"+{(big_s - empty_s) * 1000:.1f} ms (target <= +10 ms)",
                ok=not bad and big_s - empty_s <= 0.010,
            )
        )

    print_table(f"CLI round trips (median of {repeat}, floor = python -c pass)", rows)
    return 0 if all(row.verdict != "FAIL" for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
