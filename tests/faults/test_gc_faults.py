"""Issue 15: ``gc`` under descriptor pressure, and ``finished_at`` values it cannot believe.

- With ``RLIMIT_NOFILE`` small, a scan that cannot open a healthy job's files reports
  ``io_error: Too many open files (os error 24)`` (counted failed: retry), never
  ``state_unreadable`` (which says the job is broken).
- A ``finished_at`` in the future or unparsable made a job immortal; ``gc`` now goes by the
  time ``state.json`` was written.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from agent_exec._models import JobMeta, JobState, JobStatus
from agent_exec._store import write_meta, write_state

from .conftest import Cli

pytestmark = pytest.mark.faults

OLD = "2020-01-01T00:00:00Z"


def make_job(root: Path, index: int, *, finished_at: str = OLD, mtime: float | None = None) -> str:
    job_id = f"{index:032x}"
    job_dir = root / job_id
    job_dir.mkdir(parents=True)
    write_meta(job_dir, JobMeta(job_id=job_id, command=["true"], created_at=OLD, root=str(root), cwd="/x"))
    state = JobState(
        job_id=job_id,
        status=JobStatus.EXITED,
        updated_at=OLD,
        started_at=OLD,
        exit_code=0,
        finished_at=finished_at,
    )
    write_state(job_dir, state)
    (job_dir / "stdout.log").write_bytes(b"out\n")
    if mtime is not None:
        os.utime(job_dir / "state.json", (mtime, mtime))
    return job_id


def _gc_with_nofile(root: Path, env: dict[str, str], nofile: int) -> dict[str, Any]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    proc = subprocess.run(
        [sys.executable, "-m", "agent_exec", "--root", str(root), "gc", "--dry-run", "--older-than", "1d"],
        capture_output=True,
        env=env,
        preexec_fn=limit,
        timeout=60,
    )
    lines = proc.stdout.decode().rstrip("\n").split("\n")
    assert len(lines) == 1, (proc.stdout, proc.stderr)
    assert b"Traceback" not in proc.stderr, proc.stderr
    return orjson.loads(lines[0])  # type: ignore[no-any-return]


def test_descriptor_pressure_is_an_io_error_never_state_unreadable(
    root: Path, cli_env: dict[str, str], cli: Cli
) -> None:
    ids = [make_job(root, index) for index in range(1, 41)]
    assert {job["state"] for job in cli("list", "--all").doc["jobs"]} == {"exited"}
    reasons: set[str] = set()
    # The interpreter needs a dozen descriptors of its own; the threads of the scan compete
    # for the rest. Some limit in this range starves the scan without killing gc itself.
    for nofile in range(6, 16):
        doc = _gc_with_nofile(root, cli_env, nofile)
        if not doc.get("ok"):
            continue  # too few descriptors to even start: a clean JSON error is fine
        entries = doc["jobs"]
        assert {entry["job_id"] for entry in entries} <= set(ids)
        for entry in entries:
            assert entry["reason"] != "state_unreadable", entry
            reasons.add(entry["reason"])
        failed = sum(entry["reason"].startswith("io_error") for entry in entries)
        assert doc["failed"] >= failed
    assert "io_error: Too many open files (os error 24)" in reasons, reasons
    assert "older_than" in reasons


def test_finished_at_in_the_future_or_unparsable_is_collected_by_state_mtime(cli: Cli, root: Path) -> None:
    old_mtime = time.time() - 10 * 86400
    future = make_job(root, 1, finished_at="2999-01-01T00:00:00Z", mtime=old_mtime)
    garbage = make_job(root, 2, finished_at="yesterday-ish", mtime=old_mtime)
    fresh_future = make_job(root, 3, finished_at="2999-01-01T00:00:00Z")  # written just now
    normal = make_job(root, 4)
    doc = cli("gc", "--older-than", "7d").doc
    actions = {entry["job_id"]: (entry["action"], entry["reason"]) for entry in doc["jobs"]}
    assert actions[future] == ("deleted", "older_than")
    assert actions[garbage] == ("deleted", "older_than")
    assert actions[normal] == ("deleted", "older_than")
    assert actions[fresh_future] == ("skipped", "too_recent")
    assert sorted(path.name for path in root.iterdir()) == [fresh_future]
