"""Issue 11, deliverable 2 (lean job directories): a job directory is made complete under
``.tmp-<id>`` and renamed into place once, so no reader ever sees a job without its
records; a build a crashed launcher left behind is never a job and ``gc`` sweeps it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from agent_exec._jobs import JobDefinition, create_job_dir, running_state
from agent_exec._store import read_state

from .conftest import Cli

pytestmark = pytest.mark.faults


def test_a_job_is_invisible_until_it_is_complete(root: Path) -> None:
    job, meta = create_job_dir(
        root,
        JobDefinition(command=["true"]),
        initial_state=lambda job_id: running_state(job_id, os.getpid()),
        publish=False,
    )
    with job:
        assert [entry.name for entry in root.iterdir() if not entry.name.startswith(".")] == []
        assert sorted(os.listdir(job.current_path)) == [
            "full.log",
            "meta.json",
            "state.json",
            "stderr.log",
            "stdout.log",
        ]
        job.publish()
        assert job.in_place()
        assert sorted(entry.name for entry in root.iterdir()) == [meta.job_id]
        assert read_state(job).status.value in ("running", "failed")  # no supervisor holds it


def test_concurrent_launches_are_never_seen_half_made(cli: Cli, root: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    cli("run", "--", "true")  # the root exists
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    launches = [
        subprocess.Popen(
            [sys.executable, "-m", "agent_exec", "--root", str(root), "run", "--no-wait", "--", "true"],
            stdout=subprocess.DEVNULL,
            env=env,
        )
        for _ in range(6)
    ]
    try:
        while any(proc.poll() is None for proc in launches):
            listing = cli("list", "--all").doc
            assert listing["skipped"] == 0, listing
            assert all(job["state"] != "unknown" for job in listing["jobs"]), listing
    finally:
        for proc in launches:
            proc.wait(timeout=60)
    assert len(cli("list", "--all").doc["jobs"]) == 7


def test_a_build_left_by_a_crashed_launcher_is_no_job_and_gc_sweeps_it(cli: Cli, root: Path) -> None:
    cli("run", "--", "true")
    stale = root / f".tmp-{'a' * 32}"
    fresh = root / f".tmp-{'b' * 32}"
    for build in (stale, fresh):
        build.mkdir()
        (build / "meta.json").write_text("{}")
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    listing = cli("list", "--all").doc
    assert listing["skipped"] == 0 and len(listing["jobs"]) == 1
    assert cli("status", "a" * 32).doc["error"]["code"] == "job_not_found"
    doc = cli("gc", "--older-than", "30d").doc
    assert doc["scanned_dirs"] == 1 and doc["jobs"][0]["reason"] == "too_recent"
    assert not stale.exists()
    assert fresh.exists()  # maybe a launch in progress
