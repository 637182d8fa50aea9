"""Item 1: the supervisor or the CLI dies, workloads misbehave with their pipes and
signals — jobs still end up finished, with their output intact, and nothing survives
that the job's process group should have taken with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import (
    Cli,
    assert_no_traceback,
    find_supervisors,
    pid_running,
    poll_until,
    processes_in_group,
    py,
    read_state_file,
    stored_status,
)

pytestmark = pytest.mark.faults


def _is_job(path: Path) -> bool:
    return len(path.name) == 32 and not path.name.startswith(".") and (path / "state.json").exists()


def _stdout_log(root: Path, job_id: str) -> bytes:
    return (root / job_id / "stdout.log").read_bytes()


def test_sigkill_of_the_supervisor_reports_the_job_failed_everywhere(
    cli: Cli, root: Path, reaper: list[int]
) -> None:
    code = (
        "import sys, time\nfor i in range(3): print('line', i, flush=True)\n"
        "sys.stderr.write('err\\n')\ntime.sleep(60)"
    )
    job_id = cli("run", "--no-wait", "--", *py(code)).doc["job_id"]
    poll_until(lambda: _stdout_log(root, job_id).count(b"\n") == 3)
    state = poll_until(lambda: (s := read_state_file(root, job_id)) and s.get("pid") and s)
    supervisors = poll_until(lambda: find_supervisors(job_id))
    assert len(supervisors) == 1
    workload = poll_until(
        lambda: (
            read_state_file(root, job_id)["pid"] not in supervisors and read_state_file(root, job_id)["pid"]
        )
    )
    reaper.append(workload)
    assert state["job"]["status"] == "running"

    os.kill(supervisors[0], signal.SIGKILL)
    poll_until(lambda: not pid_running(supervisors[0]))

    status = cli("status", job_id)
    assert_no_traceback(status)
    assert status.doc["state"] == "failed", status.doc
    assert status.doc["reason"] == "supervisor_lost"
    assert "finished_at" in status.doc

    started = time.monotonic()
    waited = cli("wait", "--until", "20", job_id).doc
    assert time.monotonic() - started < 5
    assert waited["state"] == "failed" and waited["reason"] == "supervisor_lost"

    listed = {job["job_id"]: job for job in cli("list", "--all").doc["jobs"]}
    assert listed[job_id]["state"] == "failed"
    assert job_id not in {job["job_id"] for job in cli("ps", "--all").doc["jobs"]}

    tail = cli("tail", job_id).doc
    assert tail["stdout"] == "line 0\nline 1\nline 2\n"
    assert tail["stderr"] == "err\n"
    # The repair is persisted: every later reader agrees without re-deriving it.
    assert stored_status(root, job_id) == "failed"


def test_sigkill_of_the_cli_during_run_leaves_the_job_running_to_completion(
    cli: Cli, root: Path, cli_env: dict[str, str], tmp_path: Path
) -> None:
    code = "import time\nprint('early', flush=True)\ntime.sleep(1.5)\nprint('late', flush=True)"
    # --forever returns at the first output; a job printing nothing first keeps the CLI waiting.
    silent = "import time\ntime.sleep(1.5)\nprint('late', flush=True)"
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent_exec", "--root", str(root), "run", "--forever", "--", *py(silent)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
        env=cli_env,
    )
    try:
        job_id = poll_until(
            lambda: (
                # Job ids only: a job directory is built under a temporary name first.
                next((p.name for p in root.iterdir() if _is_job(p)), None) if root.exists() else None
            )
        )
        poll_until(lambda: stored_status(root, job_id) == "running")
        assert proc.poll() is None, "the CLI should still be waiting for output"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        proc.kill()
        proc.communicate()
    waited = cli("wait", "--until", "20", job_id).doc
    assert waited["state"] == "exited", waited
    assert waited["exit_code"] == 0
    assert waited["stdout"] == "late\n"
    assert _stdout_log(root, job_id) == b"late\n"
    _ = code


def test_a_grandchild_holding_stdout_open_does_not_keep_the_job_running(
    cli: Cli, root: Path, reaper: list[int]
) -> None:
    started = time.monotonic()
    run = cli("run", "--", "sleep 30 & echo $!; echo done")
    doc = run.doc
    job_id = doc["job_id"]
    waited = cli("wait", "--until", "20", job_id).doc
    elapsed = time.monotonic() - started
    grandchild = int(_stdout_log(root, job_id).split()[0])
    reaper.append(grandchild)
    assert waited["state"] == "exited" and waited["exit_code"] == 0, waited
    assert waited["stdout"].endswith("done\n")
    # 2 s drain bound + two CLI start-ups; a job waiting for the grandchild would take 30 s.
    assert elapsed < 6, elapsed
    assert pid_running(grandchild), "the test needs the grandchild to outlive the workload"


def test_kill_reaches_a_grandchild_through_the_process_group(cli: Cli, root: Path, reaper: list[int]) -> None:
    job_id = cli("run", "--", "sleep 30 & echo $!; sleep 30").doc["job_id"]
    grandchild = int(poll_until(lambda: _stdout_log(root, job_id).split())[0])
    reaper.append(grandchild)
    workload = poll_until(
        lambda: read_state_file(root, job_id)["pid"] if not find_supervisors_pid(root, job_id) else None
    )
    reaper.append(workload)
    assert pid_running(grandchild)
    killed = cli("kill", job_id).doc
    assert killed["state"] == "killed", killed
    assert killed["terminated_signal"] == "15"
    poll_until(lambda: not pid_running(grandchild), timeout=5)
    assert processes_in_group(workload) == []


def find_supervisors_pid(root: Path, job_id: str) -> bool:
    """True while state.json still carries the supervisor's pid (the launcher's record)."""
    return read_state_file(root, job_id).get("pid") in find_supervisors(job_id)


def test_timeout_reaches_a_grandchild_through_the_process_group(
    cli: Cli, root: Path, reaper: list[int]
) -> None:
    job_id = cli("run", "--timeout", "1", "--", "sleep 30 & echo $!; sleep 30").doc["job_id"]
    grandchild = int(poll_until(lambda: _stdout_log(root, job_id).split())[0])
    reaper.append(grandchild)
    waited = cli("wait", "--until", "20", job_id).doc
    assert waited["state"] == "killed", waited
    assert waited["signal"] in ("15", "9")
    assert waited.get("reason") == "timeout"
    poll_until(lambda: not pid_running(grandchild), timeout=5)


def test_a_workload_closing_stdout_early_still_finishes_with_stderr_intact(cli: Cli) -> None:
    doc = cli("run", "--", "exec 1>&-; sleep 0.5; echo 'still here' >&2; exit 3").doc
    waited = cli("wait", "--until", "20", doc["job_id"]).doc
    assert waited["state"] == "exited", waited
    assert waited["exit_code"] == 3
    assert waited["stderr"] == "still here\n"
    assert waited["stdout"] == ""


def test_a_workload_ignoring_sigterm_is_killed_by_sigkill_after_the_grace(cli: Cli, root: Path) -> None:
    code = (
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\ntime.sleep(30)"
    )
    started = time.monotonic()
    job_id = cli("run", "--timeout", "1", "--kill-after", "1", "--", *py(code)).doc["job_id"]
    waited = cli("wait", "--until", "20", job_id).doc
    assert waited["state"] == "killed", waited
    assert waited["signal"] == "9"
    assert waited.get("reason") == "timeout"
    assert waited["stdout"] == "ready\n"
    assert time.monotonic() - started < 8


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_to_the_supervisor_is_passed_to_the_job(
    cli: Cli, root: Path, reaper: list[int], signum: signal.Signals
) -> None:
    """``kill`` signals the pid in state.json, which is the supervisor's until the workload
    is spawned (supervisor.md §8.2): the job must not be orphaned by that race."""
    job_id = cli("run", "--", *py("import time\nprint('up', flush=True)\ntime.sleep(30)")).doc["job_id"]
    (supervisor,) = poll_until(lambda: find_supervisors(job_id))
    workload = poll_until(lambda: (pid := read_state_file(root, job_id)["pid"]) != supervisor and pid)
    reaper.append(workload)
    os.kill(supervisor, signum)
    waited = cli("wait", "--until", "10", job_id).doc
    assert waited["state"] == "killed", waited
    assert waited["signal"] == str(int(signum))
    poll_until(lambda: not pid_running(workload), timeout=5)
    poll_until(lambda: not pid_running(supervisor), timeout=5)


def test_kill_right_after_launch_never_orphans_the_workload(cli: Cli, root: Path, reaper: list[int]) -> None:
    for _ in range(5):
        job_id = cli("run", "--no-wait", "--", *py("import time\ntime.sleep(30)")).doc["job_id"]
        killed = cli("kill", job_id).doc
        waited = cli("wait", "--until", "10", job_id).doc
        assert waited["state"] == "killed", (killed, waited)
        pid = read_state_file(root, job_id)["pid"]
        reaper.append(pid)

        def group_gone(pid: int = pid) -> bool:
            return not processes_in_group(pid) and not pid_running(pid)

        poll_until(group_gone, timeout=5)
