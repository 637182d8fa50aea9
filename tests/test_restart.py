"""``restart <ID>``: same id and directory, logs cleared, relaunched from meta.json; safe
against concurrent restart/start/gc/delete of the same job (never two instances)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from conftest import Cli, poll_until, py

#: Ignores SIGTERM (a restart must escalate to SIGKILL), prints "up", then runs for a minute.
STUBBORN = py(
    "import signal, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('up', flush=True)\n"
    "time.sleep(60)\n"
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_restart_finished_job_clears_logs_and_reruns(cli: Cli, root: Path, tmp_path: Path) -> None:
    counter = tmp_path / "count"
    code = (
        f"import pathlib; p = pathlib.Path({str(counter)!r})\n"
        "p.write_text(p.read_text() + 'x' if p.exists() else 'x')\n"
        "print('run', len(p.read_text()))\n"
    )
    first = cli("run", "--tag", "t", "--", *py(code)).doc
    assert first["state"] == "exited" and first["stdout"] == "run 1\n"
    job_dir = root / first["job_id"]
    (job_dir / "completion_event.json").write_text("{}")

    restarted = cli("restart", first["job_id"][:8])
    doc = restarted.doc
    assert restarted.returncode == 0, restarted.stderr
    assert doc["type"] == "restart" and doc["job_id"] == first["job_id"] and doc["joined"] is False
    assert doc["state"] == "exited" and doc["exit_code"] == 0 and doc["tags"] == ["t"]
    assert doc["stdout"] == "run 2\n" and doc["stdout_log_path"] == first["stdout_log_path"]
    assert (job_dir / "stdout.log").read_bytes() == b"run 2\n"  # the old run's output is gone
    assert "run 1" not in (job_dir / "full.log").read_text()
    assert not (job_dir / "completion_event.json").exists()
    assert cli("list").doc["jobs"][0]["command"] == py(code)


def test_restart_running_job_stops_it_first(cli: Cli, root: Path) -> None:
    job = cli(
        "run", "--no-wait", "--", *py("import os, time; print(os.getpid(), flush=True); time.sleep(60)")
    ).doc
    old_pid = int(poll_until(lambda: (root / job["job_id"] / "stdout.log").read_text().strip()))
    doc = cli("restart", "--signal", "INT", job["job_id"]).doc
    assert doc["state"] == "running" and doc["job_id"] == job["job_id"]
    new_pid = int(
        doc["stdout"].strip() or poll_until(lambda: cli("tail", job["job_id"]).doc["stdout"].strip())
    )
    assert new_pid != old_pid and not _alive(old_pid) and _alive(new_pid)
    cli("kill", "--signal", "KILL", job["job_id"])


def test_restart_escalates_to_kill_when_the_signal_is_ignored(cli: Cli) -> None:
    job = cli("run", "--", *STUBBORN).doc
    assert job["stdout"] == "up\n"
    doc = cli("restart", "--no-wait", job["job_id"], timeout=60).doc
    assert doc["state"] == "running"
    cli("kill", "--signal", "KILL", job["job_id"])


def test_restart_created_job_and_errors(cli: Cli) -> None:
    created = cli("create", "--env", "K=v", "--mask", "K", "--", "sh", "-c", "echo $K").doc
    doc = cli("restart", created["job_id"]).doc
    assert doc["state"] == "exited" and doc["stdout"] == "v\n" and doc["env_vars"] == ["K=***"]

    masked = cli("run", "--env", "K=v", "--mask", "K", "--", "true").doc
    refused = cli("restart", masked["job_id"])
    assert refused.returncode == 1 and refused.doc["error"]["code"] == "invalid_state"
    assert cli("restart", "--signal", "NOPE", masked["job_id"]).doc["error"]["code"] == "invalid_signal"
    assert cli("restart", "nope").doc["error"]["code"] == "job_not_found"
    usage = cli("restart")
    assert usage.returncode == 2 and usage.stdout == ""


def _overlap_guard(lock: Path, log: Path) -> list[str]:
    """A workload that records OVERLAP if another instance of itself is still running."""
    code = (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(lock)!r}, os.O_RDWR | os.O_CREAT)\n"
        "try:\n"
        "    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
        "except OSError:\n"
        f"    open({str(log)!r}, 'a').write('OVERLAP\\n')\n"
        "print('up', flush=True)\n"
        "time.sleep(60)\n"
    )
    return py(code)


def test_concurrent_restarts_and_starts_never_run_two_instances(cli: Cli, root: Path, tmp_path: Path) -> None:
    lock, log = tmp_path / "instance.lock", tmp_path / "overlap.log"
    created = cli("create", "--", *_overlap_guard(lock, log)).doc
    job_id = created["job_id"]
    calls = [("restart", "--no-wait", job_id)] * 4 + [("start", "--no-wait", job_id)] * 2
    with ThreadPoolExecutor(len(calls)) as pool:
        results = list(pool.map(lambda args: cli(*args, timeout=90), calls))
    restarts = [result.doc for result in results[:4]]
    assert all(doc["ok"] for doc in restarts), restarts
    for result in results[4:]:  # a start that came after a restart finds the job running
        assert result.doc["ok"] or result.doc["error"]["code"] == "invalid_state"
    poll_until(lambda: cli("tail", job_id).doc["stdout"] == "up\n", timeout=20)
    state = cli("status", job_id).doc
    assert state["state"] == "running"
    assert not log.exists(), log.read_text()
    cli("kill", "--signal", "KILL", job_id)


def test_restart_racing_gc_and_delete(cli: Cli, root: Path, tmp_path: Path) -> None:
    for _ in range(3):
        job_id = cli("run", "--", "true").doc["job_id"]
        calls = [
            ("restart", "--no-wait", job_id),
            ("delete", job_id),
            ("gc", "--older-than", "0s"),
            ("restart", "--no-wait", job_id),
        ]
        with ThreadPoolExecutor(len(calls)) as pool:
            docs = [result.doc for result in pool.map(lambda args: cli(*args, timeout=90), calls)]
        job_dir = root / job_id
        for doc in (docs[0], docs[3]):
            if not doc["ok"]:
                assert doc["error"]["code"] in ("job_not_found", "invalid_state"), doc
        if job_dir.exists():  # the restart won: a whole job, never a half-deleted one
            assert (job_dir / "meta.json").exists()
            final = cli("status", job_id).doc
            assert final["ok"], final
            assert final["state"] in ("created", "running", "exited"), final
        else:  # the delete won: a restart that reported success must have finished first
            assert docs[1]["ok"] or docs[2]["ok"]


def test_restart_keeps_gc_away_meanwhile(cli: Cli, root: Path) -> None:
    job = cli("run", "--", *STUBBORN).doc
    job_dir = root / job["job_id"]
    with ThreadPoolExecutor(2) as pool:
        restarting = pool.submit(cli, "restart", "--no-wait", job["job_id"], timeout=60)
        # While the restart waits out the ignored TERM, the job is killed-pending: gc and
        # delete must leave it alone even once its old instance is gone.
        poll_until(lambda: (job_dir / "restart.lock").exists())
        for _ in range(5):
            assert cli("gc", "--older-than", "0s").doc["deleted"] == 0
            deleted = cli("delete", job["job_id"]).doc
            assert not deleted["ok"] and deleted["error"]["code"] == "invalid_state"
        doc = restarting.result().doc
    assert doc["ok"] and doc["state"] == "running", doc
    assert (job_dir / "meta.json").exists()
    cli("kill", "--signal", "KILL", job["job_id"])


def _supervisor_pid(job_id: str) -> int | None:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if b"_supervise --job-id " + job_id.encode() in cmdline:
                return int(entry)
    return None


def test_restart_after_a_lost_supervisor_stops_the_orphan_first(cli: Cli, tmp_path: Path) -> None:
    lock, log = tmp_path / "instance.lock", tmp_path / "overlap.log"
    job = cli("run", "--", *_overlap_guard(lock, log)).doc
    assert job["stdout"] == "up\n"
    supervisor = poll_until(lambda: _supervisor_pid(job["job_id"]))
    os.kill(supervisor, 9)  # the workload is left running, unsupervised
    poll_until(lambda: cli("status", job["job_id"]).doc["state"] == "failed")
    doc = cli("restart", job["job_id"]).doc
    assert doc["ok"] and doc["state"] == "running" and doc["stdout"] == "up\n", doc
    assert not log.exists(), "the new instance started while the orphan still ran"
    cli("kill", "--signal", "KILL", job["job_id"])
