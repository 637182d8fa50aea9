"""``gc``: the pure selection, the async core, auto-GC, and the command as a user runs it."""

from __future__ import annotations

import calendar
import fcntl
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from agent_exec import _gc, _gcfs
from agent_exec._gc import GcPolicy, ScanRecord, auto_gc, collect, cutoff_ts, is_older, select
from agent_exec._models import JobMeta, JobState, JobStatus
from agent_exec._paths import LOCK_FILE, STATE_FILE
from agent_exec._store import read_state_raw, write_meta, write_state
from conftest import Cli, poll_until, py

OLD = "2020-01-01T00:00:00Z"
NOW = calendar.timegm((2024, 6, 1, 12, 0, 0))  # a fixed clock for the pure tests
DAY = 86400

GC_FIELDS = [
    "root",
    "dry_run",
    "older_than",
    "older_than_source",
    "deleted",
    "skipped",
    "out_of_scope",
    "failed",
    "freed_bytes",
    "scanned_dirs",
    "candidate_count",
    "jobs",
]


# -- fabricating jobs --------------------------------------------------------------------


def make_job(
    root: Path,
    job_id: str,
    *,
    status: JobStatus = JobStatus.EXITED,
    finished_at: str | None = OLD,
    updated_at: str = OLD,
    cwd: str = "/somewhere",
    pid: int | None = None,
    logs: dict[str, bytes] | None = None,
) -> Path:
    """A job directory as the store writes it, with chosen (old) timestamps."""
    job_dir = root / job_id
    job_dir.mkdir(parents=True)
    write_meta(job_dir, JobMeta(job_id=job_id, command=["true"], created_at=OLD, root=str(root), cwd=cwd))
    terminal = status.is_terminal
    state = JobState(
        job_id=job_id,
        status=status,
        updated_at=updated_at,
        started_at=OLD if status is not JobStatus.CREATED else None,
        exit_code=0 if terminal else None,
        pid=pid,
        finished_at=finished_at if terminal else None,
    )
    write_state(job_dir, state)
    for name, data in (logs if logs is not None else {"stdout.log": b"out\n", "stderr.log": b""}).items():
        (job_dir / name).write_bytes(data)
    return job_dir


def tree_bytes(job_dir: Path) -> int:
    return sum(p.lstat().st_size for p in job_dir.rglob("*") if p.is_file() and not p.is_symlink())


@contextmanager
def held_supervisor_lock(job_dir: Path) -> Iterator[None]:
    """Pretend a live supervisor owns the job (it holds an flock on supervisor.lock)."""
    fd = os.open(job_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def by_id(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["job_id"]: entry for entry in doc["jobs"]}


# -- the pure selection ------------------------------------------------------------------


def rec(job_id: str, ts: str, size: int = 10, status: JobStatus | None = JobStatus.EXITED) -> ScanRecord:
    return ScanRecord(job_id, status, ts, size)


def reasons(selection: _gc.Selection) -> list[tuple[str, str]]:
    return [(record.job_id, reason) for record, reason in selection.selected]


def test_select_skip_reasons_in_scan_order() -> None:
    records = [
        ScanRecord("unreadable", None),
        ScanRecord("running", JobStatus.RUNNING, OLD),
        ScanRecord("created", JobStatus.CREATED, OLD),
        ScanRecord("no-ts", JobStatus.EXITED, ""),
        ScanRecord("recent", JobStatus.KILLED, "2024-06-01T11:59:59Z"),
        ScanRecord("supervised", JobStatus.KILLED, OLD, 5, supervised=True),
        ScanRecord("old", JobStatus.FAILED, OLD, 7),
    ]
    selection = select(records, GcPolicy(DAY), now=NOW)
    assert [(e.job_id, e.state, e.action, e.reason, e.bytes) for e in selection.kept] == [
        ("unreadable", "unknown", "skipped", "state_unreadable", 0),
        ("running", "running", "skipped", "active_job", 0),
        ("created", "created", "skipped", "active_job", 0),
        ("no-ts", "exited", "skipped", "no_timestamp", 0),
        ("recent", "killed", "skipped", "too_recent", 0),
        ("supervised", "killed", "skipped", "active_job", 0),
    ]
    assert reasons(selection) == [("old", "older_than")]


def test_select_cutoff_is_strict_and_compares_19_characters() -> None:
    cutoff = cutoff_ts(NOW, 3600)
    assert cutoff == "2024-06-01T11:00:00Z"
    at_cutoff = ScanRecord("at", JobStatus.EXITED, "2024-06-01T11:00:00.999Z")
    before = ScanRecord("before", JobStatus.EXITED, "2024-06-01T10:59:59Z")
    selection = select([at_cutoff, before], GcPolicy(3600), now=NOW)
    assert [e.reason for e in selection.kept] == ["too_recent"]
    assert reasons(selection) == [("before", "older_than")]
    assert is_older("2020-01-01T00:00:00+09:00", "2020-01-01T00:00:01Z")


def test_select_zero_retention_and_absurd_retention() -> None:
    just_now = ScanRecord("now", JobStatus.EXITED, "2024-06-01T12:00:00Z")
    second_ago = ScanRecord("ago", JobStatus.EXITED, "2024-06-01T11:59:59Z")
    assert reasons(select([just_now, second_ago], GcPolicy(0), now=NOW)) == [("ago", "older_than")]
    assert cutoff_ts(NOW, 10**15) == "1970-01-01T00:00:00Z"
    assert reasons(select([second_ago], GcPolicy(10**15), now=NOW)) == []


def test_select_sorts_oldest_first_and_is_stable() -> None:
    records = [
        rec("b", "2020-02-01T00:00:00Z"),
        rec("a1", OLD),
        rec("c", "2020-03-01T00:00:00Z"),
        rec("a2", OLD),
    ]
    assert [job for job, _ in reasons(select(records, GcPolicy(DAY), now=NOW))] == ["a1", "a2", "b", "c"]


def test_select_max_jobs_keeps_the_newest_old_jobs() -> None:
    """The spec's worked example: three jobs from 2020, ``--max-jobs 1``."""
    records = [
        rec("j1", "2020-01-01T00:00:01Z"),
        rec("j3", "2020-01-01T00:00:03Z"),
        rec("j2", "2020-01-01T00:00:02Z"),
    ]
    selection = select(records, GcPolicy(30 * DAY, max_jobs=1), now=NOW)
    assert reasons(selection) == [("j1", "older_than+max_jobs"), ("j2", "older_than+max_jobs")]
    assert [(e.job_id, e.reason, e.bytes) for e in selection.kept] == [("j3", "policy_not_matched", 10)]


@pytest.mark.parametrize(
    ("max_jobs", "expected"),
    [
        pytest.param(3, ["older_than"] * 3, id="limit-equals-count"),
        pytest.param(10, ["older_than"] * 3, id="limit-above-count"),
        pytest.param(0, ["older_than+max_jobs"] * 3, id="zero"),
    ],
)
def test_select_max_jobs_bounds(max_jobs: int, expected: list[str]) -> None:
    records = [rec(f"j{i}", f"2020-01-0{i + 1}T00:00:00Z") for i in range(3)]
    selection = select(records, GcPolicy(DAY, max_jobs=max_jobs), now=NOW)
    assert [reason for _, reason in reasons(selection)] == expected
    assert selection.kept == []


def test_select_max_jobs_never_reaches_recent_jobs() -> None:
    records = [rec("old", OLD), rec("new1", "2024-06-01T11:00:00Z"), rec("new2", "2024-06-01T11:30:00Z")]
    selection = select(records, GcPolicy(DAY, max_jobs=0), now=NOW)
    assert reasons(selection) == [("old", "older_than+max_jobs")]
    assert [e.reason for e in selection.kept] == ["too_recent", "too_recent"]


def test_select_max_bytes_tags_the_oldest_until_the_rest_fits() -> None:
    records = [rec("a", "2020-01-01T00:00:00Z", 100), rec("b", "2020-01-02T00:00:00Z", 100)]
    records.append(rec("c", "2020-01-03T00:00:00Z", 100))
    selection = select(records, GcPolicy(DAY, max_bytes=150), now=NOW)
    # 300 > 150: tag a (200 left), tag b (100 left), stop; all old jobs are still deleted.
    assert reasons(selection) == [
        ("a", "older_than+max_bytes"),
        ("b", "older_than+max_bytes"),
        ("c", "older_than"),
    ]
    fits = select(records, GcPolicy(DAY, max_bytes=300), now=NOW)
    assert [reason for _, reason in reasons(fits)] == ["older_than"] * 3


def test_select_max_jobs_and_max_bytes_combined() -> None:
    records = [rec(name, f"2020-01-0{i + 1}T00:00:00Z", 100) for i, name in enumerate("abc")]
    selection = select(records, GcPolicy(DAY, max_jobs=2, max_bytes=50), now=NOW)
    assert reasons(selection) == [
        ("a", "older_than+max_jobs+max_bytes"),
        ("b", "max_bytes"),
        ("c", "max_bytes"),
    ]
    spared = select(records, GcPolicy(DAY, max_jobs=2, max_bytes=150), now=NOW)
    # 300 > 150: a tagged (200), b tagged (100 <= 150): c keeps no reason at all.
    assert reasons(spared) == [("a", "older_than+max_jobs+max_bytes"), ("b", "max_bytes")]
    assert [(e.job_id, e.reason, e.bytes) for e in spared.kept] == [("c", "policy_not_matched", 100)]


# -- the command -------------------------------------------------------------------------


def test_gc_default_retention_deletes_old_and_keeps_recent(cli: Cli, root: Path) -> None:
    old = make_job(root, "old-job", logs={"stdout.log": b"x" * 100, "stderr.log": b"e" * 11})
    size = tree_bytes(old)
    make_job(root, "recent-job", finished_at="2999-01-01T00:00:00Z")
    (root / "stray-file").write_bytes(b"ignored")
    result = cli("gc")
    assert result.returncode == 0, result.stderr
    doc = result.doc
    assert list(doc)[:3] == ["schema_version", "ok", "type"]
    assert list(doc)[3:] == GC_FIELDS
    assert doc["type"] == "gc"
    assert (doc["root"], doc["dry_run"], doc["older_than"], doc["older_than_source"]) == (
        str(root),
        False,
        "30d",
        "default",
    )
    assert doc["jobs"] == [
        {"job_id": "recent-job", "state": "exited", "action": "skipped", "reason": "too_recent", "bytes": 0},
        {"job_id": "old-job", "state": "exited", "action": "deleted", "reason": "older_than", "bytes": size},
    ]
    counters = [doc[key] for key in GC_FIELDS[4:11]]
    assert counters == [1, 1, 1, 0, size, 2, 1]
    assert not old.exists()
    assert (root / "recent-job").is_dir() and (root / "stray-file").exists()


def test_gc_worked_example_max_jobs_dry_run(cli: Cli, root: Path) -> None:
    for second in (1, 2, 3):
        make_job(root, f"job{second}", finished_at=f"2020-01-01T00:00:0{second}Z")
    doc = cli("gc", "--max-jobs", "1", "--dry-run").doc
    assert [(e["job_id"], e["action"], e["reason"]) for e in doc["jobs"]] == [
        ("job3", "skipped", "policy_not_matched"),
        ("job1", "would_delete", "older_than+max_jobs"),
        ("job2", "would_delete", "older_than+max_jobs"),
    ]
    assert (doc["deleted"], doc["skipped"], doc["out_of_scope"], doc["candidate_count"]) == (0, 1, 1, 2)
    assert doc["freed_bytes"] == sum(e["bytes"] for e in doc["jobs"] if e["action"] == "would_delete") > 0
    assert sorted(p.name for p in root.iterdir()) == ["job1", "job2", "job3"]


def test_gc_max_jobs_deletes_all_but_the_newest(cli: Cli, root: Path) -> None:
    for second in (1, 2, 3):
        make_job(root, f"job{second}", finished_at=f"2020-01-01T00:00:0{second}Z")
    doc = cli("gc", "--max-jobs", "1").doc
    assert doc["deleted"] == 2 and doc["candidate_count"] == 2
    assert [p.name for p in root.iterdir()] == ["job3"]


def test_gc_max_bytes_deletes_every_old_job_and_tags_the_oldest(cli: Cli, root: Path) -> None:
    for day in (1, 2, 3):
        make_job(root, f"job{day}", finished_at=f"2020-01-0{day}T00:00:00Z", logs={"stdout.log": b"x" * 1000})
    sizes = [tree_bytes(root / f"job{day}") for day in (1, 2, 3)]
    limit = sizes[1] + sizes[2]  # after dropping job1 the rest fits exactly
    doc = cli("gc", "--max-bytes", str(limit), "--older-than", "7d").doc
    assert [(e["job_id"], e["action"], e["reason"]) for e in doc["jobs"]] == [
        ("job1", "deleted", "older_than+max_bytes"),
        ("job2", "deleted", "older_than"),
        ("job3", "deleted", "older_than"),
    ]
    assert doc["older_than_source"] == "flag" and doc["deleted"] == 3
    assert list(root.iterdir()) == []


def test_gc_dry_run_touches_nothing(cli: Cli, root: Path) -> None:
    make_job(root, "a")
    make_job(root, "b", status=JobStatus.KILLED, finished_at=None)  # falls back to updated_at
    doc = cli("gc", "--dry-run", "--older-than", "0s").doc
    assert doc["dry_run"] is True and doc["deleted"] == 0
    assert {e["job_id"]: e["action"] for e in doc["jobs"]} == {"a": "would_delete", "b": "would_delete"}
    assert doc["freed_bytes"] == tree_bytes(root / "a") + tree_bytes(root / "b")
    assert sorted(p.name for p in root.iterdir()) == ["a", "b"]


def test_gc_skip_reasons_and_half_written_jobs(cli: Cli, root: Path) -> None:
    make_job(root, "created", status=JobStatus.CREATED)
    make_job(root, "no-ts", finished_at="")
    (root / "meta-only").mkdir(parents=True)
    (root / "meta-only" / "meta.json").write_bytes(b"{}")
    (root / "garbage").mkdir()
    (root / "garbage" / STATE_FILE).write_bytes(b'{"job": {"id": "garbage", "stat')
    (root / "bad-status").mkdir()
    (root / "bad-status" / STATE_FILE).write_bytes(
        orjson.dumps({"job": {"id": "x", "status": "zombie"}, "result": {}, "updated_at": OLD})
    )
    (root / "empty").mkdir()
    doc = cli("gc", "--older-than", "0s").doc
    reasons = {e["job_id"]: (e["state"], e["action"], e["reason"], e["bytes"]) for e in doc["jobs"]}
    assert reasons == {
        "created": ("created", "skipped", "active_job", 0),
        "no-ts": ("exited", "skipped", "no_timestamp", 0),
        "meta-only": ("unknown", "skipped", "state_unreadable", 0),
        "garbage": ("unknown", "skipped", "state_unreadable", 0),
        "bad-status": ("unknown", "skipped", "state_unreadable", 0),
        "empty": ("unknown", "skipped", "state_unreadable", 0),
    }
    assert (doc["scanned_dirs"], doc["skipped"], doc["out_of_scope"], doc["deleted"]) == (6, 6, 6, 0)
    assert len(list(root.iterdir())) == 6


def test_gc_keeps_an_old_running_job_with_a_live_supervisor(cli: Cli, root: Path) -> None:
    job = make_job(root, "running", status=JobStatus.RUNNING, pid=os.getpid())
    with held_supervisor_lock(job):
        doc = cli("gc", "--older-than", "0s").doc
    assert doc["jobs"] == [
        {"job_id": "running", "state": "running", "action": "skipped", "reason": "active_job", "bytes": 0}
    ]
    assert read_state_raw(job).status is JobStatus.RUNNING


def test_gc_keeps_a_finished_job_whose_supervisor_still_holds_it(cli: Cli, root: Path) -> None:
    """``kill`` writes ``killed`` before the supervisor has reaped the workload."""
    job = make_job(root, "being-killed", status=JobStatus.KILLED)
    with held_supervisor_lock(job):
        doc = cli("gc", "--older-than", "0s").doc
    assert [(e["state"], e["reason"]) for e in doc["jobs"]] == [("killed", "active_job")]
    assert job.is_dir()
    assert cli("gc", "--older-than", "0s").doc["deleted"] == 1  # the lock is gone now
    assert not job.exists()


def test_gc_repairs_a_running_job_whose_supervisor_died_and_keeps_it(cli: Cli, root: Path) -> None:
    job = make_job(root, "orphan", status=JobStatus.RUNNING)
    (job / LOCK_FILE).touch()  # written by this implementation, nobody holds it
    doc = cli("gc", "--older-than", "1d").doc
    assert [(e["state"], e["action"], e["reason"]) for e in doc["jobs"]] == [
        ("failed", "skipped", "too_recent")
    ]
    assert read_state_raw(job).status is JobStatus.FAILED
    assert job.is_dir()


def test_gc_skips_a_real_running_job(cli: Cli, root: Path) -> None:
    started = cli("run", "--no-wait", "--no-auto-gc", "--", *py("import time; time.sleep(60)")).doc
    job_id = started["job_id"]
    try:
        doc = cli("gc", "--older-than", "0s").doc
        assert [(e["job_id"], e["state"], e["reason"]) for e in doc["jobs"]] == [
            (job_id, "running", "active_job")
        ]
    finally:
        cli("kill", "--signal", "KILL", job_id)
    poll_until(lambda: read_state_raw(root / job_id).status.is_terminal)
    poll_until(lambda: cli("gc", "--older-than", "0s").doc["deleted"] == 1, timeout=20)
    assert not (root / job_id).exists()


def test_gc_never_follows_a_symlink_out_of_a_job_dir(cli: Cli, root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "data.bin").write_bytes(b"d" * 5000)
    (tmp_path / "precious.txt").write_bytes(b"keep me")
    job = make_job(root, "job", logs={"stdout.log": b"12345"})
    (job / "sub").mkdir()
    (job / "sub" / "nested.log").write_bytes(b"abc")
    size = tree_bytes(job)
    (job / "link-dir").symlink_to(outside)
    (job / "sub" / "link-file").symlink_to(tmp_path / "precious.txt")
    doc = cli("gc", "--older-than", "0s").doc
    assert [(e["action"], e["bytes"]) for e in doc["jobs"]] == [("deleted", size)]
    assert not job.exists()
    assert (outside / "data.bin").read_bytes() == b"d" * 5000
    assert (tmp_path / "precious.txt").read_bytes() == b"keep me"


def test_gc_ignores_a_symlink_in_place_of_a_job_dir(cli: Cli, root: Path, tmp_path: Path) -> None:
    elsewhere = make_job(tmp_path / "other-root", "victim")
    make_job(root, "real")
    (root / "linked-job").symlink_to(elsewhere)
    doc = cli("gc", "--older-than", "0s").doc
    assert doc["scanned_dirs"] == 1
    assert [e["job_id"] for e in doc["jobs"]] == ["real"]
    assert (elsewhere / STATE_FILE).exists()
    assert (root / "linked-job").is_symlink()


def test_gc_missing_root_is_all_zero_even_with_a_bad_duration(cli: Cli, root: Path) -> None:
    for args in ((), ("--older-than", "banana")):
        result = cli("gc", *args)
        assert result.returncode == 0
        doc = result.doc
        assert [doc[key] for key in GC_FIELDS[4:]] == [0, 0, 0, 0, 0, 0, 0, []]
    assert not root.exists()


@pytest.mark.parametrize("value", ["banana", "10x", "-5d", "1.5h", "d", ""])
def test_gc_bad_duration_is_an_error(cli: Cli, root: Path, value: str) -> None:
    make_job(root, "old")
    result = cli("gc", "--older-than", value)
    assert result.returncode == 1
    assert result.doc == {
        "schema_version": "0.1",
        "ok": False,
        "type": "error",
        "error": {
            "code": "internal_error",
            "message": f"invalid duration: {value}; expected formats: 30d, 24h, 60m, 3600s",
            "retryable": False,
        },
    }
    assert (root / "old").is_dir()


@pytest.mark.parametrize("value", ["0d", " 2h ", "60m", "3600s", "86400"])
def test_gc_accepts_every_duration_form(cli: Cli, root: Path, value: str) -> None:
    make_job(root, "old")
    doc = cli("gc", "--older-than", value).doc
    assert doc["older_than"] == value and doc["deleted"] == 1


def test_concurrent_gc_runs_delete_each_job_exactly_once(root: Path, cli_env: dict[str, str]) -> None:
    jobs = 300
    for index in range(jobs):
        make_job(root, f"job{index:04d}")
    argv = [sys.executable, "-m", "agent_exec", "--root", str(root), "gc", "--older-than", "0s"]
    procs = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env) for _ in range(3)
    ]
    docs = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        docs.append(orjson.loads(out))
    deleted = [e["job_id"] for doc in docs for e in doc["jobs"] if e["action"] == "deleted"]
    assert sorted(deleted) == [f"job{index:04d}" for index in range(jobs)]  # exactly once each
    assert sum(doc["deleted"] for doc in docs) == jobs
    for doc in docs:
        assert doc["failed"] == 0
        assert doc["skipped"] == doc["out_of_scope"] + doc["failed"]
        others = {e["reason"] for e in doc["jobs"] if e["action"] != "deleted"}
        assert others <= {"already_deleted", "state_unreadable"}
    assert list(root.iterdir()) == []


# -- the async core and failure reporting --------------------------------------------------


@pytest.mark.asyncio
async def test_collect_honours_budgets(root: Path) -> None:
    for index in range(6):
        make_job(root, f"job{index}", finished_at=f"2020-01-0{index + 1}T00:00:00Z")
    result = await collect(root, GcPolicy(0), now=NOW, dry_run=False, delete_limit=2, concurrency=3)
    assert [(e.job_id, e.action, e.reason) for e in result.jobs] == [
        ("job0", "deleted", "older_than"),
        ("job1", "deleted", "older_than"),
        *((f"job{index}", "skipped", "delete_budget_exhausted") for index in range(2, 6)),
    ]
    assert (result.deleted, result.out_of_scope, result.skipped, result.candidate_count) == (2, 4, 4, 6)
    assert sorted(os.listdir(root)) == [f"job{index}" for index in range(2, 6)]
    limited = await collect(root, GcPolicy(0), now=NOW, dry_run=True, scan_limit=3)
    assert limited.scanned_dirs == 3 and len(limited.jobs) == 3


@pytest.mark.asyncio
async def test_collect_reports_failed_and_unconfirmed_removals(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_job(root, "stubborn", finished_at="2020-01-01T00:00:00Z")
    make_job(root, "ghost", finished_at="2020-01-02T00:00:00Z")
    make_job(root, "fine", finished_at="2020-01-03T00:00:00Z")
    real_unlink, real_exists = os.unlink, _gcfs._exists_at

    def unlink(path: Any, *, dir_fd: int | None = None) -> None:
        if (
            path == "stdout.log"
            and dir_fd is not None
            and os.readlink(f"/proc/self/fd/{dir_fd}").endswith("stubborn")
        ):
            raise PermissionError(13, "Permission denied")
        real_unlink(path, dir_fd=dir_fd)

    monkeypatch.setattr(_gcfs.os, "unlink", unlink)
    monkeypatch.setattr(_gcfs, "_exists_at", lambda fd, name: name == "ghost" or real_exists(fd, name))
    result = await collect(root, GcPolicy(0), now=NOW, dry_run=False)
    assert [(e.job_id, e.action, e.reason) for e in result.jobs] == [
        ("stubborn", "skipped", "delete_failed: Permission denied (os error 13)"),
        ("ghost", "skipped", "post_delete_check_failed"),
        ("fine", "deleted", "older_than"),
    ]
    assert (result.deleted, result.failed, result.skipped, result.out_of_scope) == (1, 2, 2, 0)
    assert result.freed_bytes == result.jobs[2].bytes
    assert (root / "stubborn" / "stdout.log").exists()


# -- auto-GC -----------------------------------------------------------------------------


def settings(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "auto": True,
        "older_than": "0s",
        "max_jobs": None,
        "max_bytes": None,
        "scan_limit": 200,
        "delete_limit": 20,
    }
    base.update(overrides)
    return base


def test_auto_gc_deletes_within_its_budgets(root: Path) -> None:
    for index in range(8):
        make_job(root, f"job{index}")
    auto_gc(root, settings(delete_limit=3))
    assert len(list(root.iterdir())) == 8 - 3 + 1  # + .gc.lock
    auto_gc(root, settings(scan_limit=2))
    assert len([p for p in root.iterdir() if p.is_dir()]) == 3
    assert (root / ".gc.lock").is_file()


def test_auto_gc_is_skipped_while_another_process_holds_the_lock(root: Path) -> None:
    make_job(root, "old")
    fd = os.open(root / ".gc.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        auto_gc(root, settings())
        assert (root / "old").is_dir()
    finally:
        os.close(fd)
    auto_gc(root, settings())  # a lock file left behind (e.g. by upstream) does not block
    assert not (root / "old").exists()


def test_auto_gc_disabled_missing_root_and_bad_settings_never_raise(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    auto_gc(root, settings())
    assert not root.exists()
    make_job(root, "old")
    auto_gc(root, settings(auto=False))
    assert (root / "old").is_dir()
    with caplog.at_level(logging.WARNING, logger="agent_exec.gc"):
        auto_gc(root, settings(older_than="soon"))
    assert "invalid duration: soon" in caplog.text
    assert (root / "old").is_dir()
    auto_gc(root, settings(older_than="30d", max_jobs=0))  # max-jobs 0 deletes every old job
    assert not (root / "old").exists()


def test_auto_gc_works_inside_a_running_event_loop(root: Path) -> None:
    """The detached supervisor calls it from inside its own ``anyio.run``."""
    make_job(root, "old")

    async def supervisor_tail() -> None:
        auto_gc(root, settings())

    anyio.run(supervisor_tail)
    assert not (root / "old").exists()


def test_run_triggers_auto_gc(cli: Cli, root: Path) -> None:
    old = make_job(root, "ancient")
    doc = cli("run", "--auto-gc-older-than", "1d", "--", "true").doc
    assert doc["ok"] is True
    poll_until(lambda: not old.exists(), timeout=20)
    assert (root / doc["job_id"]).is_dir()


def test_removal_unlinks_a_directory_swapped_for_a_symlink(tmp_path: Path) -> None:
    """The race where a listed sub-directory becomes a symlink before it is opened."""
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep").write_bytes(b"k")
    parent = tmp_path / "job"
    parent.mkdir()
    (parent / "sub").symlink_to(precious)
    fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        _gcfs._remove_dir_at(fd, "sub")  # as if ``sub`` had been listed as a directory
    finally:
        os.close(fd)
    assert not os.path.lexists(parent / "sub")
    assert (precious / "keep").read_bytes() == b"k"
