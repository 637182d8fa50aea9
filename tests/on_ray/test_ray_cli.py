"""The CLI against a real Ray head: jobs run on Ray, read back from the local store."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from conftest import Cli, poll_until

from ._head import LocalRayHead

# The first test also pays for starting the session head (slow on a loaded machine).
pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]


def _wait_doc(cli: Cli, env: dict[str, str], job_id: str, until: int = 90) -> dict:  # type: ignore[type-arg]
    result = cli("wait", "--until", str(until), job_id, env=env, timeout=until + 30)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.doc


def test_run_splits_logs_and_records_exit_code_cwd_env(
    cli: Cli, ray_env: dict[str, str], tmp_path: Path, root: Path
) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    script = 'echo "out $FOO"; pwd; echo err >&2; printf "no newline"; exit 3'
    run = cli(
        "run",
        "--cwd",
        str(workdir),
        "--env",
        "FOO=bar",
        "--no-wait",
        "--tag",
        "ray-ci",
        "--",
        script,
        env=ray_env,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    job_id = run.doc["job_id"]
    assert run.doc["state"] == "running"
    meta = (root / job_id / "meta.json").read_text()
    assert '"kind": "ray"' in meta and ray_env["AGENT_EXEC_RAY_ADDRESS"] in meta
    doc = _wait_doc(cli, ray_env, job_id)
    assert doc["state"] == "exited", doc
    assert doc["exit_code"] == 3
    assert doc["stdout"] == f"out bar\n{workdir.resolve()}\nno newline"
    assert doc["stderr"] == "err\n"
    assert (root / job_id / "stdout.log").read_bytes() == f"out bar\n{workdir.resolve()}\nno newline".encode()
    full = (root / job_id / "full.log").read_text()
    assert "[STDERR] err" in full and "[STDOUT] out bar" in full
    status = cli("status", job_id, env=ray_env).doc
    assert status["state"] == "exited" and status["exit_code"] == 3
    tail = cli("tail", job_id, env=ray_env).doc
    assert tail["stderr"] == "err\n"
    listed = cli("list", "--all", "--tag", "ray-ci", env=ray_env).doc
    assert [job["job_id"] for job in listed["jobs"]] == [job_id]


def test_run_waits_for_output_and_reports_signal_death(cli: Cli, ray_env: dict[str, str]) -> None:
    run = cli("run", "--until", "60", "--", "echo started; kill -9 $$", env=ray_env, timeout=120)
    doc = run.doc
    if doc["state"] == "running":
        doc = _wait_doc(cli, ray_env, doc["job_id"])
    assert doc["state"] == "killed", doc
    assert doc["signal"] == "9"
    assert doc["stdout"].startswith("started")


def test_kill_stops_the_ray_job_and_reports_the_outcome(cli: Cli, ray_env: dict[str, str]) -> None:
    run = cli("run", "--no-wait", "--", "echo ready; exec sleep 120", env=ray_env)
    job_id = run.doc["job_id"]
    poll_until(lambda: "ready" in cli("tail", job_id, env=ray_env).doc["stdout"], timeout=90, interval=0.5)
    bad = cli("kill", "--signal", "USR1", job_id, env=ray_env)
    assert bad.returncode == 1 and bad.doc["error"]["code"] == "invalid_argument"
    killed = cli("kill", job_id, env=ray_env, timeout=60)
    assert killed.returncode == 0, killed.stdout + killed.stderr
    doc = killed.doc
    if doc["state"] == "running":  # observed window passed under load: the record follows
        doc = _wait_doc(cli, ray_env, job_id)
    assert doc["state"] == "killed", doc
    status = cli("status", job_id, env=ray_env).doc
    assert status["state"] == "killed" and status["signal"] == "15"


def test_timeout_and_kill_after(cli: Cli, ray_env: dict[str, str]) -> None:
    soft = cli("run", "--no-wait", "--timeout", "1", "--", "exec sleep 60", env=ray_env).doc["job_id"]
    hard = cli(
        "run", "--no-wait", "--timeout", "1", "--kill-after", "1", "--", "trap '' TERM; sleep 60", env=ray_env
    ).doc["job_id"]
    soft_doc = _wait_doc(cli, ray_env, soft)
    hard_doc = _wait_doc(cli, ray_env, hard)
    assert (soft_doc["state"], soft_doc.get("signal"), soft_doc.get("reason")) == ("killed", "15", "timeout")
    assert (hard_doc["state"], hard_doc.get("signal"), hard_doc.get("reason")) == ("killed", "9", "timeout")


def test_create_then_start_and_spawn_failure(cli: Cli, ray_env: dict[str, str], tmp_path: Path) -> None:
    created = cli("create", "--stdin", "piped in", "--", "cat; echo; echo $X", env=ray_env)
    assert created.returncode == 0, created.stdout
    job_id = created.doc["job_id"]
    started = cli("start", "--no-wait", job_id, env={**ray_env, "X": "not-sent"})
    assert started.returncode == 0, started.stdout + started.stderr
    doc = _wait_doc(cli, ray_env, job_id)
    assert doc["state"] == "exited" and doc["stdout"] == "piped in\n\n", doc
    nowhere = str(tmp_path / "nope")
    missing = cli("run", "--no-wait", "--cwd", nowhere, "--", "true", env=ray_env).doc["job_id"]
    failed = _wait_doc(cli, ray_env, missing)
    assert failed["state"] == "failed"
    assert failed["reason"].startswith("spawn_failed: working directory does not exist")


def test_lost_watcher_is_reported_like_a_lost_supervisor(cli: Cli, ray_env: dict[str, str]) -> None:
    job_id = cli("run", "--no-wait", "--", "exec sleep 120", env=ray_env).doc["job_id"]
    watcher = poll_until(lambda: _watcher_pid(job_id), timeout=30)
    os.kill(watcher, signal.SIGKILL)
    status = poll_until(
        lambda: (doc := cli("status", job_id, env=ray_env).doc)["state"] != "running" and doc, timeout=30
    )
    assert status["state"] == "failed" and status["reason"] == "supervisor_lost"
    # The Ray job itself keeps running without a watcher: stop it so the head stays idle.
    from ray.job_submission import JobSubmissionClient

    JobSubmissionClient(ray_env["AGENT_EXEC_RAY_ADDRESS"]).stop_job(job_id)


def _watcher_pid(job_id: str) -> int | None:
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as file:
                cmdline = file.read()
        except OSError:
            continue
        if b"ray_watch" in cmdline and job_id.encode() in cmdline:
            return int(name)
    return None


def test_unreachable_address_is_a_quick_json_error(cli: Cli, ray_env: dict[str, str], root: Path) -> None:
    env = {**ray_env, "AGENT_EXEC_RAY_ADDRESS": "http://127.0.0.1:9"}
    began = time.monotonic()
    result = cli("run", "--", "true", env=env)
    assert time.monotonic() - began < 20
    assert result.returncode == 1
    assert result.doc["error"]["code"] == "backend_unavailable"
    assert "127.0.0.1:9" in result.doc["error"]["message"]
    assert not root.exists() or not any(root.iterdir())


def test_head_killed_mid_job_gives_failed_with_reason(
    cli: Cli, cli_env: dict[str, str], tmp_path_factory: object, ray_head: LocalRayHead
) -> None:
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="agent-exec-ray2-"))
    head = LocalRayHead(base, port_base=47000)
    try:
        head.start()
        env = {
            **cli_env,
            "AGENT_EXEC_BACKEND": "ray",
            "AGENT_EXEC_RAY_ADDRESS": head.address,
            "AGENT_EXEC_RAY_LOST_AFTER": "3",
        }
        job_id = cli("run", "--no-wait", "--", "echo before; exec sleep 120", env=env).doc["job_id"]
        poll_until(lambda: "before" in cli("tail", job_id, env=env).doc["stdout"], timeout=90, interval=0.5)
        head.kill()
        doc = _wait_doc(cli, env, job_id, until=60)
        assert doc["state"] == "failed", doc
        assert doc["reason"].startswith("ray_head_unreachable"), doc
        assert doc["stdout"] == "before\n"
    finally:
        head.stop()
        import shutil

        shutil.rmtree(base, ignore_errors=True)
