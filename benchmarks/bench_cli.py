"""The cost of one CLI call: each command against the cheapest possible start-up
(``python -c pass``), on a root with one job, 100 jobs and 10,000 jobs.

Targets (issue #14), ratios of medians, floor measured in the same run and interleaved
with the command (so load drift hits both alike):

* ``status <id>`` <= 2.5x; ``tail <id>`` and ``list`` (100 jobs) <= 3x;
* ``run -- true`` round trip (returns ``exited`` with inline output) <= 4x;
* ``run --no-wait -- true`` <= 3x;
* on a root of 10,000 finished jobs: reported beside the small root (``list`` reads every
  job there, so it is bulk work by design).

``wait``/``kill`` on a finished job are reported (no target). Back to back, the floor run
right after a ``run`` shares the machine with that job's supervisor, still busy with its
housekeeping (loading anyio, auto-GC), which flatters the ``run`` ratios; ``--settle 0.7``
pauses before every timed call so that each is measured alone. The package is
byte-compiled first and ``PYTHONDONTWRITEBYTECODE`` is removed from the environment, so
the figures are those of an installed package. ``--cli PATH`` times another install's
``agent-exec`` (for example a checkout of an older commit) against its own interpreter.

    .venv/bin/python benchmarks/bench_cli.py [--repeat N] [--quick] [--cli PATH] [--only NAME] [--settle S]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from _util import Row, bench_env, cli_argv, compile_package, median_pair, print_table, temp_root

Check = Callable[[dict[str, object]], bool]


def _doc(stdout: bytes) -> dict[str, object]:
    try:
        doc = json.loads(stdout)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _populate_finished_jobs(root: Path, count: int, cwd: str) -> None:
    """``count`` finished job directories (meta, state, empty logs), as a busy store has."""
    from agent_exec._models import JobMeta, JobState, JobStatus
    from agent_exec._store import write_meta, write_state

    root.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        job_id = f"{index:032x}"
        job_dir = root / job_id
        job_dir.mkdir()
        stamp = "2026-01-01T00:00:00Z"
        meta = JobMeta(job_id=job_id, command=["true"], created_at=stamp, root=str(root), cwd=cwd)
        write_meta(job_dir, meta)
        write_state(
            job_dir,
            JobState(
                job_id=job_id,
                status=JobStatus.EXITED,
                updated_at=stamp,
                started_at=stamp,
                exit_code=0,
                finished_at=stamp,
            ),
        )
        for name in ("stdout.log", "stderr.log", "full.log"):
            (job_dir / name).touch()


def _state_is(*states: str) -> Check:
    return lambda doc: doc.get("state") in states


def _ok(doc: dict[str, object]) -> bool:
    return doc.get("ok") is True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=30, help="timed runs per benchmark (default 30)")
    parser.add_argument("--quick", action="store_true", help="5 timed runs, 1,000-job big root: a smoke test")
    parser.add_argument("--cli", help="the agent-exec executable to time (default: this venv's)")
    parser.add_argument("--only", default="", help="only rows whose name contains this")
    parser.add_argument(
        "--settle", type=float, default=0.0, help="seconds to pause before each timed call (default 0)"
    )
    args = parser.parse_args(argv)
    repeat = 5 if args.quick else args.repeat
    big_count = 1000 if args.quick else 10_000

    if args.cli:
        cli = [args.cli]
        python = Path(args.cli).read_text(encoding="utf-8").splitlines()[0].removeprefix("#!").strip()
        floor = [python, "-c", "pass"]
    else:
        compile_package()
        cli = cli_argv()
        floor = [sys.executable, "-c", "pass"]
    cwd = os.path.realpath(os.getcwd())
    rows: list[Row] = []
    with temp_root() as base:
        env = bench_env(base / "cfg")

        def measure(
            name: str, argv: list[str], target: float | None, check: Check
        ) -> list[dict[str, object]]:
            if args.only not in name:
                return []
            floor_s, ours_s, results = median_pair(
                floor, [*cli, *argv], env=env, repeat=repeat, settle=args.settle
            )
            docs = [_doc(proc.stdout) for proc in results]
            bad = sum(1 for doc in docs if not check(doc))
            note = f"{bad}/{repeat} runs failed their check" if bad else ""
            rows.append(Row(name, floor_s, ours_s, target, note=note, ok=not bad))
            return docs

        def one_job(root: Path) -> str:
            proc = median_pair(
                floor, [*cli, "--root", str(root), "run", "--", "echo", "hi"], env=env, repeat=1
            )
            job_id = _doc(proc[2][-1].stdout).get("job_id")
            if not isinstance(job_id, str):
                raise SystemExit(f"could not create a job in {root}: {proc[2][-1].stdout!r}")
            return job_id

        small, hundred, big = base / "jobs", base / "hundred", base / "big"
        _populate_finished_jobs(hundred, 100, cwd)
        _populate_finished_jobs(big, big_count, cwd)
        label = f"{big_count:,}-job root"
        for root, where in ((small, "1-job root"), (big, label)):
            at = ["--root", str(root)]
            job_id = one_job(root)
            measure(f"status <id> ({where})", [*at, "status", job_id], 2.5, _state_is("exited"))
            measure(f"tail <id> ({where})", [*at, "tail", job_id], 3.0, _ok)
            measure(f"wait <id>, finished ({where})", [*at, "wait", job_id], None, _state_is("exited"))
            measure(f"kill <id>, finished ({where})", [*at, "kill", job_id], None, _ok)
            if root is small:
                measure("list (100 jobs)", ["--root", str(hundred), "list"], 3.0, _ok)
            else:
                measure(f"list ({where}, bulk)", [*at, "list"], None, _ok)
            measure(f"run -- true ({where})", [*at, "run", "--", "true"], 4.0, _state_is("exited"))
            measure(f"run --no-wait -- true ({where})", [*at, "run", "--no-wait", "--", "true"], 3.0, _ok)

    title = f"CLI call cost (median of {repeat}, floor = python -c pass, interleaved"
    title += f", {args.settle:g} s apart)" if args.settle else ")"
    print_table(title + (f" [{args.cli}]" if args.cli else ""), rows)
    return 0 if all(row.verdict != "FAIL" for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
