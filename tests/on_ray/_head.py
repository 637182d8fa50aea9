"""A throwaway local Ray head for tests and benchmarks, confined to loopback.

Two layers keep every packet on this machine (issue 13): callers run inside a network
namespace that has only ``lo`` (:func:`loopback_only` checks it, and :class:`LocalRayHead`
refuses to start otherwise), and the head itself is started with the loopback settings:
usage stats off and pointed at a dead loopback port, ``HOME`` holding an empty
``ray_bootstrap_config.yaml``, ``--node-ip-address``/``--dashboard-host`` 127.0.0.1,
explicit ports and a private ``--temp-dir``. ``stop()`` ends every process of the head
(``ray start --block`` tears down its daemons on SIGTERM; stragglers get SIGKILL).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

UNSHARE_HINT = "unshare --net --fork sh -c 'ip link set lo up && exec <command>'"


def loopback_only() -> bool:
    """True if this process's network namespace has no interface but ``lo``."""
    try:  # /proc/self/net is per network namespace (/sys/class/net is not remounted)
        with open("/proc/self/net/dev") as file:
            lines = file.read().splitlines()[2:]
    except OSError:
        return False
    return [line.split(":", 1)[0].strip() for line in lines] == ["lo"]


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as file:
                stat = file.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(name))
    return children


def descendants(pid: int) -> list[int]:
    children = _children_map()
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class LocalRayHead:
    """``ray start --head --block`` on loopback with explicit ports from ``port_base``."""

    def __init__(self, base_dir: Path, *, port_base: int = 46000, num_cpus: int = 2) -> None:
        self.base_dir = base_dir
        self.port_base = port_base
        self.num_cpus = num_cpus
        self.dashboard_port = port_base + 265
        self.address = f"http://127.0.0.1:{self.dashboard_port}"
        self.process: subprocess.Popen[bytes] | None = None
        self._known: set[int] = set()

    def env(self) -> dict[str, str]:
        """The head's environment. ``PATH`` deliberately lacks this virtualenv, so job
        entrypoints run under the system ``python3``, which has no agent-exec installed."""
        home = self.base_dir / "home"
        return {
            "HOME": str(home),
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "RAY_USAGE_STATS_REPORT_URL": "http://127.0.0.1:9/",
            "RAY_JOB_STOP_WAIT_TIME_S": "3",
        }

    def start(self, timeout: float = 300.0, attempts: int = 3) -> None:
        """Start the head and run a warm-up job; retried from scratch when Ray's own
        start-up gives up (its raylet registration wait is a fixed 30 s, too short for a
        heavily loaded machine)."""
        for attempt in range(1, attempts + 1):
            try:
                self._start_once(timeout)
                return
            except RuntimeError:
                if attempt == attempts:
                    raise
                shutil.rmtree(self.base_dir / "t", ignore_errors=True)

    def _start_once(self, timeout: float) -> None:
        if not loopback_only():
            raise RuntimeError(f"refusing to start a Ray head outside a loopback-only netns: {UNSHARE_HINT}")
        home = self.base_dir / "home"
        temp = self.base_dir / "t"
        home.mkdir(parents=True, exist_ok=True)
        temp.mkdir(parents=True, exist_ok=True)
        (home / "ray_bootstrap_config.yaml").write_text("{}\n")
        p = self.port_base
        argv = [
            str(Path(sys.executable).parent / "ray"),
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            "--dashboard-host=127.0.0.1",
            "--disable-usage-stats",
            f"--port={p + 379}",
            f"--dashboard-port={self.dashboard_port}",
            f"--ray-client-server-port={p + 1}",
            f"--node-manager-port={p + 380}",
            f"--object-manager-port={p + 381}",
            f"--dashboard-agent-listen-port={p + 382}",
            f"--dashboard-agent-grpc-port={p + 383}",
            f"--runtime-env-agent-port={p + 384}",
            f"--metrics-export-port={p + 385}",
            f"--min-worker-port={p + 400}",
            f"--max-worker-port={p + 599}",
            f"--num-cpus={self.num_cpus}",
            f"--temp-dir={temp}",
        ]
        log = open(self.base_dir / "ray-start.log", "wb")  # noqa: SIM115 - kept for the head's life
        self.process = subprocess.Popen(
            argv, env=self.env(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=home
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"ray start exited {self.process.returncode}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.address}/api/version", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the Ray head did not serve its Jobs API within {timeout}s")
            time.sleep(0.25)
        self._known.update(descendants(self.process.pid))
        try:
            self._warm_up(deadline)
        except Exception as exc:
            tail = self.log_tail()
            self.stop()
            raise RuntimeError(
                f"the Ray head failed its warm-up job ({exc}); ray start said: {tail}"
            ) from None

    def _warm_up(self, deadline: float) -> None:
        """Run one job to the end: the job agent is up and a worker was started once."""
        from ray.job_submission import JobSubmissionClient

        client = JobSubmissionClient(self.address)
        while True:
            try:
                submission_id = client.submit_job(entrypoint="true")
                break
            except Exception:  # not ready: refused, reset, or "no available agent"
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        while str(client.get_job_status(submission_id)) not in ("SUCCEEDED", "JobStatus.SUCCEEDED"):
            if time.monotonic() > deadline:
                raise RuntimeError("the Ray head could not run a warm-up job")
            time.sleep(0.25)

    def log_tail(self) -> str:
        try:
            return (self.base_dir / "ray-start.log").read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def stop(self, grace: float = 30.0) -> None:
        """End every process of the head, whatever state it is in."""
        if self.process is None:
            return
        pid = self.process.pid
        self._known.update(descendants(pid))
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        for child in [*self._known, *descendants(pid), pid]:
            try:
                os.kill(child, signal.SIGKILL)
            except OSError:
                pass
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self.process = None
        self._known.clear()

    def kill(self) -> None:
        """Crash the head: SIGKILL every one of its processes at once."""
        if self.process is None:
            return
        pid = self.process.pid
        for child in [pid, *descendants(pid), *self._known]:
            try:
                os.kill(child, signal.SIGKILL)
            except OSError:
                pass
        self.process.wait(10)
        self.process = None
