"""``delete``/``rm``: one job by id, or every finished job of the caller's directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent_exec._models import JobStatus
from agent_exec._paths import STATE_FILE, canonical_cwd
from agent_exec._store import read_state_raw
from conftest import Cli, poll_until, py
from test_gc import held_supervisor_lock, make_job

DELETE_FIELDS = ["root", "dry_run", "deleted", "skipped", "out_of_scope", "failed", "jobs"]
ALL_FIELDS = ["root", "dry_run", "cwd_scope", "deleted", "skipped", "out_of_scope", "failed", "jobs"]


def entry(job_id: str, state: str, action: str, reason: str) -> dict[str, str]:
    return {"job_id": job_id, "state": state, "action": action, "reason": reason}


# -- one job -----------------------------------------------------------------------------


@pytest.mark.parametrize("verb", ["delete", "rm"])
def test_delete_one_finished_job(cli: Cli, root: Path, verb: str) -> None:
    job = make_job(root, "a1b2c3d4e5f60718293a4b5c6d7e8f90")
    make_job(root, "ffff0000ffff0000ffff0000ffff0000")
    result = cli(verb, "a1b2")  # a unique prefix
    assert result.returncode == 0, result.stderr
    doc = result.doc
    assert doc["type"] == "delete"
    assert list(doc)[3:] == DELETE_FIELDS
    assert doc == {
        "schema_version": "0.1",
        "ok": True,
        "type": "delete",
        "root": str(root),
        "dry_run": False,
        "deleted": 1,
        "skipped": 0,
        "out_of_scope": 0,
        "failed": 0,
        "jobs": [entry(job.name, "exited", "deleted", "explicit_delete")],
    }
    assert not job.exists()
    assert (root / "ffff0000ffff0000ffff0000ffff0000").is_dir()


def test_delete_one_dry_run(cli: Cli, root: Path) -> None:
    job = make_job(root, "job1", status=JobStatus.FAILED)
    doc = cli("delete", "--dry-run", "job1").doc
    assert (doc["dry_run"], doc["deleted"]) == (True, 0)
    assert doc["jobs"] == [entry("job1", "failed", "would_delete", "explicit_delete")]
    assert job.is_dir()


def test_delete_one_created_and_unreadable_jobs_are_eligible(cli: Cli, root: Path) -> None:
    make_job(root, "created", status=JobStatus.CREATED)
    (root / "broken").mkdir()
    (root / "broken" / STATE_FILE).write_bytes(b"not json")
    assert cli("delete", "created").doc["jobs"] == [entry("created", "created", "deleted", "explicit_delete")]
    assert cli("rm", "broken").doc["jobs"] == [entry("broken", "unknown", "deleted", "explicit_delete")]
    assert list(root.iterdir()) == []


@pytest.mark.parametrize("dry_run", [False, True], ids=["delete", "dry-run"])
def test_delete_one_refuses_a_running_job(cli: Cli, root: Path, dry_run: bool) -> None:
    job = make_job(root, "0123456789abcdef0123456789abcdef", status=JobStatus.RUNNING)
    with held_supervisor_lock(job):
        result = cli("delete", *(["--dry-run"] if dry_run else []), "0123")
    assert result.returncode == 1
    assert result.doc["error"] == {
        "code": "invalid_state",
        "message": "invalid job state: cannot delete job 0123: job is currently running",
        "retryable": False,
    }
    assert (job / STATE_FILE).exists()


def test_delete_one_refuses_a_finished_job_whose_supervisor_is_still_alive(cli: Cli, root: Path) -> None:
    job = make_job(root, "dying", status=JobStatus.KILLED)
    with held_supervisor_lock(job):
        result = cli("delete", "dying")
    assert result.doc["error"]["code"] == "invalid_state"
    assert job.is_dir()


def test_delete_one_real_running_job_then_after_it_ends(cli: Cli, root: Path) -> None:
    job_id = cli("run", "--no-wait", "--no-auto-gc", "--", *py("import time; time.sleep(60)")).doc["job_id"]
    try:
        assert cli("delete", job_id).doc["error"]["code"] == "invalid_state"
    finally:
        cli("kill", "--signal", "KILL", job_id)
    poll_until(lambda: read_state_raw(root / job_id).status.is_terminal)
    poll_until(lambda: cli("delete", job_id).returncode == 0, timeout=20)
    assert not (root / job_id).exists()


def test_delete_one_of_a_running_job_whose_supervisor_died(cli: Cli, root: Path) -> None:
    """The dead-supervisor repair makes it ``failed``, which may be deleted."""
    job = make_job(root, "orphan", status=JobStatus.RUNNING)
    (job / "supervisor.lock").touch()
    assert cli("delete", "orphan").doc["jobs"] == [entry("orphan", "failed", "deleted", "explicit_delete")]
    assert not job.exists()


def test_delete_one_errors(cli: Cli, root: Path, tmp_path: Path) -> None:
    make_job(root, "abc1")
    make_job(root, "abc2")
    elsewhere = make_job(tmp_path / "other", "victim")
    (root / "linked").symlink_to(elsewhere)
    assert cli("delete", "zzz").doc["error"]["code"] == "job_not_found"
    assert cli("delete", "abc").doc["error"]["code"] == "ambiguous_job_id"
    for given in ("linked", "../other/victim", ".."):
        result = cli("delete", given)
        assert (result.returncode, result.doc["error"]["code"]) == (1, "job_not_found")
    assert elsewhere.is_dir() and (root / "linked").is_symlink()
    assert sorted(p.name for p in root.iterdir()) == ["abc1", "abc2", "linked"]


def test_delete_one_missing_root_is_job_not_found(cli: Cli, root: Path) -> None:
    result = cli("delete", "nothing")
    assert result.returncode == 1 and result.doc["error"]["code"] == "job_not_found"
    assert not root.exists()


def test_delete_one_never_follows_symlinks_out_of_the_job(cli: Cli, root: Path, tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep.txt").write_bytes(b"keep")
    job = make_job(root, "job")
    (job / "escape").symlink_to(precious)
    (job / "escape-file").symlink_to(precious / "keep.txt")
    assert cli("delete", "job").doc["deleted"] == 1
    assert not job.exists()
    assert (precious / "keep.txt").read_bytes() == b"keep"


@pytest.mark.parametrize(
    "args",
    [("delete",), ("delete", "--all", "job"), ("rm", "--all", "--dry-run", "x")],
    ids=["none", "both", "rm"],
)
def test_delete_usage_errors(cli: Cli, args: tuple[str, ...]) -> None:
    result = cli(*args)
    assert result.returncode == 2
    assert result.stdout == ""


# -- delete --all ------------------------------------------------------------------------


def test_delete_all_sorts_jobs_by_scope_and_state(cli: Cli, root: Path, tmp_path: Path) -> None:
    here = tmp_path / "project"
    here.mkdir()
    scope = canonical_cwd(here)
    make_job(root, "done", cwd=scope)
    make_job(root, "killed", status=JobStatus.KILLED, cwd=scope)
    running = make_job(root, "running", status=JobStatus.RUNNING, cwd=scope)
    make_job(root, "created", status=JobStatus.CREATED, cwd=scope)
    make_job(root, "unreadable", cwd=scope)
    (root / "unreadable" / STATE_FILE).write_bytes(b"{")
    make_job(root, "pid-alive", cwd=scope, pid=os.getpid())  # an upstream job: no lock file
    locked = make_job(root, "locked", status=JobStatus.KILLED, cwd=scope, pid=os.getpid())
    reused_pid = make_job(root, "reused-pid", cwd=scope, pid=os.getpid())
    (reused_pid / "supervisor.lock").touch()  # ours, released: the pid is someone else's now
    make_job(root, "other-dir", cwd=str(tmp_path))
    (root / "no-meta").mkdir()
    (root / "stray.txt").write_bytes(b"")
    with held_supervisor_lock(running), held_supervisor_lock(locked):
        result = cli("delete", "--all", cwd=here)
    assert result.returncode == 0, result.stderr
    doc = result.doc
    assert list(doc)[3:] == ALL_FIELDS
    assert (doc["root"], doc["dry_run"], doc["cwd_scope"]) == (str(root), False, scope)
    listed = {e["job_id"]: e for e in doc["jobs"]}
    assert listed == {
        "done": entry("done", "exited", "deleted", "terminal_in_cwd"),
        "killed": entry("killed", "killed", "deleted", "terminal_in_cwd"),
        "reused-pid": entry("reused-pid", "exited", "deleted", "terminal_in_cwd"),
        "running": entry("running", "running", "skipped", "running"),
        "created": entry("created", "created", "skipped", "created"),
        "unreadable": entry("unreadable", "unknown", "skipped", "state_unreadable"),
        "pid-alive": entry("pid-alive", "exited", "skipped", "pid_alive"),
        "locked": entry("locked", "killed", "skipped", "pid_alive"),
    }
    # Jobs of other directories are out of scope and, unlike upstream, also counted skipped.
    assert (doc["deleted"], doc["skipped"], doc["out_of_scope"], doc["failed"]) == (3, 7, 7, 0)
    assert doc["skipped"] == doc["out_of_scope"] + doc["failed"]
    assert sorted(p.name for p in root.iterdir()) == [
        *("created", "locked", "no-meta", "other-dir"),
        *("pid-alive", "running", "stray.txt", "unreadable"),
    ]


def test_delete_all_dry_run_and_rm_alias(cli: Cli, root: Path, tmp_path: Path) -> None:
    scope = canonical_cwd(tmp_path)
    make_job(root, "a", cwd=scope)
    make_job(root, "b", status=JobStatus.FAILED, cwd=scope)
    dry = cli("rm", "--all", "--dry-run").doc  # the cli fixture runs in tmp_path
    assert dry["type"] == "delete" and dry["cwd_scope"] == scope
    assert sorted((e["job_id"], e["action"], e["reason"]) for e in dry["jobs"]) == [
        ("a", "would_delete", "terminal_in_cwd"),
        ("b", "would_delete", "terminal_in_cwd"),
    ]
    assert (dry["deleted"], dry["skipped"]) == (0, 0)
    assert sorted(p.name for p in root.iterdir()) == ["a", "b"]
    assert cli("delete", "--all").doc["deleted"] == 2
    assert list(root.iterdir()) == []


def test_delete_all_real_jobs_of_this_directory(cli: Cli, root: Path, tmp_path: Path) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    finished = cli("run", "--no-auto-gc", "--", "true", cwd=project).doc["job_id"]
    poll_until(lambda: read_state_raw(root / finished).status.is_terminal)
    elsewhere = cli("run", "--no-auto-gc", "--", "true").doc["job_id"]
    poll_until(lambda: cli("delete", "--all", cwd=project).doc["deleted"] == 1, timeout=20)
    assert not (root / finished).exists()
    assert (root / elsewhere).is_dir()


def test_delete_all_missing_root(cli: Cli, root: Path, tmp_path: Path) -> None:
    doc = cli("delete", "--all").doc
    assert doc["cwd_scope"] == canonical_cwd(tmp_path)
    assert [doc[key] for key in ALL_FIELDS[3:]] == [0, 0, 0, 0, []]
    assert not root.exists()


def test_delete_all_never_follows_symlinks(cli: Cli, root: Path, tmp_path: Path) -> None:
    scope = canonical_cwd(tmp_path)
    victim = make_job(tmp_path / "other-root", "victim", cwd=scope)
    root.mkdir()
    (root / "link").symlink_to(victim)
    job = make_job(root, "job", cwd=scope)
    (job / "escape").symlink_to(victim)
    doc = cli("delete", "--all").doc
    assert [(e["job_id"], e["action"]) for e in doc["jobs"]] == [("job", "deleted")]
    assert (victim / STATE_FILE).exists() and (root / "link").is_symlink()
