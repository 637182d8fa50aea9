"""The library inside a real host process: descriptor limits and the host's death.

Each test runs a small host program (``python -c``) that embeds a :class:`JobRunner`, under
asyncio or trio, so that rlimits and SIGKILL hit that process and never the test runner.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest

from conftest import poll_until

BACKENDS = [pytest.param("asyncio", id="asyncio"), pytest.param("trio", id="trio")]


def run_host(code: str, *args: str, timeout: float = 120) -> dict[str, object]:
    """Run a host program to completion; its last stdout line is a JSON report."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    return orjson.loads(proc.stdout.splitlines()[-1])  # type: ignore[no-any-return]


QUEUE_UNDER_ULIMIT = """
import os, resource, sys, anyio, orjson
from agent_exec import JobRunner

resource.setrlimit(resource.RLIMIT_NOFILE, (1024, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
gate = sys.argv[3]

async def main():
    async with JobRunner(sys.argv[1], max_concurrency=16) as runner:
        # 16 jobs hold the slots until the gate opens; 1,084 queue behind them.
        jobs = [await runner.run(f"while [ ! -e {gate} ]; do sleep 0.05; done") for _ in range(16)]
        jobs += [await runner.run(["true"]) for _ in range(1084)]
        queued = runner.statistics()["queued"]
        fds_while_queued = len(os.listdir("/proc/self/fd"))
        open(gate, "w").close()
        results = [await job.wait(max_bytes=0) for job in jobs]
    states = sorted({(r.state.value, r.exit_code) for r in results})
    print(orjson.dumps({"queued": queued, "states": states, "fds_while_queued": fds_while_queued}).decode())

anyio.run(main, backend=sys.argv[2])
"""


def test_1100_queued_jobs_under_ulimit_1024(tmp_path: Path) -> None:
    # One backend: the queue is backend-neutral code and 1,100 jobs take a while.
    report = run_host(QUEUE_UNDER_ULIMIT, str(tmp_path / "jobs"), "asyncio", str(tmp_path / "gate"))
    assert report["queued"] == 1084
    # 16 running jobs hold a handful of descriptors each; the 1,084 queued ones hold none.
    assert isinstance(report["fds_while_queued"], int) and report["fds_while_queued"] < 16 * 10 + 32
    assert report["states"] == [["exited", 0]]


OUT_OF_DESCRIPTORS = """
import os, resource, sys, anyio, orjson
from agent_exec import JobRunner, AgentExecError

resource.setrlimit(resource.RLIMIT_NOFILE, (96, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

async def main():
    refused = 0
    jobs = []
    async with JobRunner(sys.argv[1]) as runner:
        for _ in range(40):
            try:
                jobs.append(await runner.run(["sleep", "1"]))
            except (OSError, AgentExecError):
                refused += 1  # the job could not even be created: the caller is told
        results = [await job.wait(max_bytes=0) for job in jobs]
        after = await runner.execute(["echo", "still fine"])
    print(orjson.dumps({
        "refused": refused,
        "outcomes": [[r.state.value, r.exit_code, r.reason] for r in results],
        "after": [after.state.value, after.exit_code, after.stdout.text if after.stdout else None],
    }).decode())

anyio.run(main, backend=sys.argv[2])
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_running_out_of_descriptors_fails_only_the_affected_jobs(tmp_path: Path, backend: str) -> None:
    root = tmp_path / "jobs"
    report = run_host(OUT_OF_DESCRIPTORS, str(root), backend)
    outcomes = report["outcomes"]
    assert isinstance(outcomes, list)
    ok = [o for o in outcomes if o[:2] == ["exited", 0]]
    failed = [o for o in outcomes if o[0] == "failed"]
    assert len(ok) + len(failed) == len(outcomes), outcomes
    assert ok and (failed or report["refused"]), report
    assert all("Too many open files" in reason for _, _, reason in failed), failed
    assert report["after"] == ["exited", 0, "still fine\n"]
    # The store agrees: nothing is left created, running or unreadable.
    for job_dir in root.iterdir():
        state = orjson.loads((job_dir / "state.json").read_bytes())
        assert state["job"]["status"] in ("exited", "failed"), state


HOST = """
import sys, anyio
from agent_exec import JobRunner

async def main():
    root, backend, pidfiles = sys.argv[1], sys.argv[2], sys.argv[3:]
    async with JobRunner(root) as runner:
        for path in pidfiles:
            await runner.run(f"sleep 300 & echo $! > {path}; wait")
        print("ready", flush=True)
        await anyio.sleep_forever()

anyio.run(main, backend=sys.argv[2])
"""


def _gone(pid: int) -> bool:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return raw[raw.rindex(")") + 2] == "Z" and int(raw[raw.rindex(")") + 2 :].split()[1]) != os.getpid()


@pytest.mark.parametrize(
    ("backend", "signum"),
    [
        pytest.param("asyncio", signal.SIGKILL, id="asyncio-SIGKILL"),
        pytest.param("asyncio", signal.SIGTERM, id="asyncio-SIGTERM"),
        pytest.param("trio", signal.SIGKILL, id="trio-SIGKILL"),
    ],
)
def test_jobs_die_with_their_host(tmp_path: Path, backend: str, signum: int) -> None:
    root = tmp_path / "jobs"
    pidfiles = [tmp_path / f"grandchild{i}" for i in range(3)]
    with subprocess.Popen(
        [sys.executable, "-c", HOST, str(root), backend, *map(str, pidfiles)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    ) as host:
        _kill_host_and_check(host, root, pidfiles, signum)
    # The store tells the truth: the supervisor (the host) is gone, and so are the jobs.
    for job_dir in root.iterdir():
        doc = subprocess.run(
            [sys.executable, "-m", "agent_exec", "--root", str(root), "status", job_dir.name],
            capture_output=True,
        )
        data = orjson.loads(doc.stdout)
        assert (data["state"], data.get("reason")) == ("failed", "supervisor_lost"), data


def _kill_host_and_check(
    host: subprocess.Popen[bytes], root: Path, pidfiles: list[Path], signum: int
) -> None:
    try:
        assert host.stdout is not None
        assert host.stdout.readline() == b"ready\n"
        grandchildren = poll_until(
            lambda: (
                [int(text) for p in pidfiles if (text := p.read_text().strip() if p.exists() else "")]
                if all(p.exists() and p.read_text().strip() for p in pidfiles)
                else None
            )
        )
        workloads = [orjson.loads((d / "state.json").read_bytes())["pid"] for d in root.iterdir()]
        assert len(workloads) == 3
        host.send_signal(signum)
        host.wait(timeout=30)
        poll_until(lambda: all(_gone(pid) for pid in [*workloads, *grandchildren]), timeout=15)
    finally:
        if host.poll() is None:
            host.kill()
            host.wait()
        for pid in [int(p.read_text()) for p in pidfiles if p.exists() and p.read_text().strip()]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
