"""Item 2: many processes touching the store at once — launches, gc/delete sweeps, metadata
writers and racing ``start`` calls — never produce a lost, duplicated or deleted job."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest

from .conftest import Cli, assert_no_traceback, poll_until, py, stored_status

pytestmark = pytest.mark.faults


def _spawn_cli(root: Path, env: dict[str, str], cwd: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "agent_exec", "--root", str(root), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=env,
    )


def _finish(proc: subprocess.Popen[bytes]) -> tuple[int, dict[str, Any], str]:
    out, err = proc.communicate(timeout=120)
    assert b"Traceback" not in err, err.decode()
    lines = out.splitlines()
    assert len(lines) == 1, (out, err)
    return proc.returncode, orjson.loads(lines[0]), err.decode()


def test_fifty_concurrent_launches_give_fifty_consistent_jobs(
    cli: Cli, root: Path, cli_env: dict[str, str], tmp_path: Path
) -> None:
    procs = [
        _spawn_cli(root, cli_env, tmp_path, "run", "--no-wait", "--", "echo", f"job-{i}") for i in range(50)
    ]
    job_ids: dict[str, int] = {}
    for index, proc in enumerate(procs):
        code, doc, _ = _finish(proc)
        assert code == 0 and doc["ok"] is True, doc
        job_ids[doc["job_id"]] = index
    assert len(job_ids) == 50
    listed = cli("list", "--all", "--limit", "0").doc
    assert {job["job_id"] for job in listed["jobs"]} == set(job_ids)
    assert listed["skipped"] == 0
    for job_id, index in job_ids.items():
        waited = cli("wait", "--until", "30", job_id).doc
        assert waited["state"] == "exited" and waited["exit_code"] == 0, waited
        assert waited["stdout"] == f"job-{index}\n"
    assert {job["state"] for job in cli("list", "--all", "--limit", "0").doc["jobs"]} == {"exited"}


class _Sweeper(threading.Thread):
    """Runs ``gc --older-than 0s`` and ``delete --all`` back to back until stopped."""

    def __init__(self, cli: Cli) -> None:
        super().__init__(daemon=True)
        self.cli = cli
        self.stop = threading.Event()
        self.sweeps = 0
        self.deleted: set[str] = set()
        self.errors: list[str] = []

    def run(self) -> None:
        while not self.stop.is_set():
            for argv in (("gc", "--older-than", "0s"), ("delete", "--all")):
                result = self.cli(*argv)
                if result.returncode != 0 or "Traceback" in result.stderr:
                    self.errors.append(f"{argv}: {result}")
                    continue
                doc = result.doc
                self.deleted.update(job["job_id"] for job in doc["jobs"] if job["action"] == "deleted")
                self.sweeps += 1


@pytest.mark.skipif(
    importlib.util.find_spec("agent_exec._gc") is None, reason="gc/delete not implemented yet"
)
def test_gc_and_delete_sweeps_never_remove_an_active_job(cli: Cli, root: Path, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    code = f"import os, time\nwhile not os.path.exists({str(gate)!r}): time.sleep(0.02)\nprint('released')"
    created = cli("create", "--", "true").doc["job_id"]
    sweeper = _Sweeper(cli)
    sweeper.start()
    try:
        # Finished jobs come and go meanwhile, so the sweeps have work to do.
        running = []
        for _ in range(6):
            running.append(cli("run", "--no-wait", "--", *py(code)).doc["job_id"])
            assert cli("run", "--", "true").doc["state"] == "exited"
        poll_until(lambda: sweeper.sweeps >= 6, timeout=60)
        for job_id in running:
            assert stored_status(root, job_id) == "running", job_id
        assert stored_status(root, created) == "created"
        assert not sweeper.deleted & {*running, created}
        gate.touch()
        gone: set[str] = set()
        for job_id in running:
            # Once finished a job may be collected at any moment; until then it must exist.
            def finished_or_collected(job_id: str = job_id) -> bool:
                result = cli("status", job_id)
                if result.returncode == 1:
                    assert result.doc["error"]["code"] == "job_not_found"
                    gone.add(job_id)  # checked against the sweeps' reports below
                    return True
                return bool(result.doc["state"] == "exited")

            poll_until(finished_or_collected, timeout=30)
        before = sweeper.sweeps
        poll_until(lambda: sweeper.sweeps >= before + 2, timeout=60)
    finally:
        sweeper.stop.set()
        sweeper.join(timeout=60)
    assert sweeper.errors == []
    assert gone <= sweeper.deleted, "a job vanished that no sweep reported deleting"
    assert stored_status(root, created) == "created"
    assert set(running) <= sweeper.deleted, "finished jobs older than 0s are collected"


def test_tag_writers_racing_the_supervisor_never_lose_the_terminal_state(cli: Cli, root: Path) -> None:
    from agent_exec._jobs import set_tags

    code = "import time\ntime.sleep(0.4)\nprint('done')"
    jobs = [cli("run", "--no-wait", "--", *py(code)).doc["job_id"] for _ in range(4)]
    stop = threading.Event()
    writes = [0]
    failures: list[BaseException] = []

    def hammer(job_id: str) -> None:
        try:
            while not stop.is_set():
                set_tags(root, job_id, [f"n{writes[0] % 7}", "hammer"])
                writes[0] += 1
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=hammer, args=(job_id,), daemon=True) for job_id in jobs]
    for thread in threads:
        thread.start()
    try:
        # The CLI's tag set runs concurrently too, from other processes.
        for job_id in jobs:
            assert cli("tag", "set", job_id, "--tag", "cli").doc["ok"] is True
        for job_id in jobs:

            def finished(job_id: str = job_id) -> bool:
                return stored_status(root, job_id) != "running"

            poll_until(finished, timeout=20)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
    assert failures == []
    assert writes[0] > 20
    for job_id in jobs:
        status = cli("status", job_id).doc
        assert status["state"] == "exited" and status["exit_code"] == 0, status
        assert stored_status(root, job_id) == "exited"
        assert "hammer" in orjson.loads((root / job_id / "meta.json").read_bytes())["tags"]
        assert (root / job_id / "stdout.log").read_bytes() == b"done\n"


def test_two_concurrent_starts_launch_a_created_job_once(
    cli: Cli, root: Path, cli_env: dict[str, str], tmp_path: Path
) -> None:
    marker = tmp_path / "launches"
    for _ in range(4):
        code = f"open({str(marker)!r}, 'a').write('x')"
        job_id = cli("create", "--", *py(code)).doc["job_id"]
        marker.unlink(missing_ok=True)
        procs = [_spawn_cli(root, cli_env, tmp_path, "start", "--no-wait", job_id) for _ in range(2)]
        results = [_finish(proc) for proc in procs]
        outcomes = sorted((code, doc["ok"]) for code, doc, _ in results)
        assert outcomes == [(0, True), (1, False)], results
        (loser,) = [doc for _, doc, _ in results if not doc["ok"]]
        assert loser["error"]["code"] == "invalid_state"
        waited = cli("wait", "--until", "20", job_id).doc
        assert waited["state"] == "exited", waited
        assert marker.read_text() == "x"
    assert_no_traceback(cli("list", "--all"))
