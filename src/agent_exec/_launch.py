"""Starting a detached supervisor: a process of its own, in its own session, that outlives
whoever launched the job (the CLI exiting, being SIGKILLed, or its terminal going away).

The CLI forks it directly (no second interpreter start-up on the critical path of
``agent-exec run``); a host that runs an event loop (``JobRunner(detached=True)``) cannot
fork safely, so it execs ``python -m agent_exec._launch``, which then forks the same way.
Either way the supervisor is a grandchild re-parented to init: nobody has to reap it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from ._supervisor import LaunchSpec


def _close_fds_except(keep: set[int]) -> None:
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        fds = list(range(3, 1024))
    for fd in fds:
        if fd > 2 and fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)


def _become_supervisor(spec: LaunchSpec, lock_fd: int, go_fd: int) -> None:
    """In the grandchild: detach stdio, name the process, wait for the go, supervise."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for target in (0, 1, 2):
        os.dup2(devnull, target)
    if devnull > 2:
        os.close(devnull)
    _close_fds_except({lock_fd, go_fd})
    try:
        import setproctitle

        setproctitle.setproctitle(
            f"agent-exec _supervise --job-id {spec.job_id} --supervise-root {spec.job_dir.parent}"
        )
    except Exception:  # the title is cosmetic; never fail a job over it
        pass
    # The launcher records the job as running before the workload may start (or finish).
    while True:
        try:
            os.read(go_fd, 1)
            break
        except InterruptedError:
            continue
    os.close(go_fd)

    import anyio

    from ._supervisor import supervise

    anyio.run(functools.partial(supervise, spec, lock_fd=lock_fd))
    if spec.auto_gc is not None:
        # Collect old jobs here, after the job, so no launcher ever waits for it.
        try:
            from ._gc import auto_gc

            auto_gc(spec.job_dir.parent, spec.auto_gc)
        except Exception:
            pass


def spawn_detached(spec: LaunchSpec, lock_fd: int, on_spawned: Callable[[int], None]) -> int:
    """Fork a detached supervisor for ``spec`` and return its pid.

    ``lock_fd`` (the locked supervisor lock) is inherited by the supervisor, which holds
    it until the terminal state is written. ``on_spawned(pid)`` runs in the caller before
    the supervisor may start the workload, so the caller's ``running`` record can never
    overwrite the supervisor's later ones. Only call this from a single-threaded process.
    """
    pid_r, pid_w = os.pipe()
    go_r, go_w = os.pipe()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the forked child
        status = 1
        try:
            os.close(pid_r)
            os.close(go_w)
            os.setsid()
            grandchild = os.fork()
            if grandchild == 0:
                os.close(pid_w)
                try:
                    _become_supervisor(spec, lock_fd, go_r)
                    status = 0
                finally:
                    os._exit(status)
            os.write(pid_w, str(grandchild).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(pid_w)
    os.close(go_r)
    try:
        os.waitpid(child, 0)
        raw = b""
        while chunk := os.read(pid_r, 64):
            raw += chunk
        supervisor_pid = int(raw)
        on_spawned(supervisor_pid)
        os.write(go_w, b"g")
    finally:
        os.close(pid_r)
        os.close(go_w)
    return supervisor_pid


# -- exec entry point (used by hosts that cannot fork) --------------------------------


def spec_to_json(spec: LaunchSpec) -> bytes:
    data: dict[str, Any] = {
        "job_id": spec.job_id,
        "job_dir": str(spec.job_dir),
        "command": spec.command,
        "wrapper": spec.wrapper,
        "cwd": spec.cwd,
        "env_pairs": spec.env_pairs,
        "env_files": spec.env_files,
        "inherit_env": spec.inherit_env,
        "base_env": dict(spec.base_env) if spec.base_env is not None else None,
        "stdin_file": spec.stdin_file,
        "timeout_s": spec.timeout_s,
        "kill_after_s": spec.kill_after_s,
        "progress_every_s": spec.progress_every_s,
        "full_log": str(spec.full_log) if spec.full_log else None,
    }
    return orjson.dumps(data)


def spec_from_json(raw: bytes) -> LaunchSpec:
    data = orjson.loads(raw)
    data["job_dir"] = Path(data["job_dir"])
    data["full_log"] = Path(data["full_log"]) if data.get("full_log") else None
    return LaunchSpec(**data)


def main() -> None:  # pragma: no cover - exercised through JobRunner(detached=True)
    """``python -m agent_exec._launch LOCK_FD``: spec on stdin, supervisor pid on stdout."""
    from ._models import JobState, JobStatus
    from ._store import write_state
    from ._timeutil import now_ts

    lock_fd = int(sys.argv[1])
    spec = spec_from_json(sys.stdin.buffer.read())

    def record_running(pid: int) -> None:
        now = now_ts()
        write_state(
            spec.job_dir,
            JobState(job_id=spec.job_id, status=JobStatus.RUNNING, updated_at=now, started_at=now, pid=pid),
        )

    pid = spawn_detached(spec, lock_fd, record_running)
    sys.stdout.write(f"{pid}\n")
    sys.stdout.flush()


if __name__ == "__main__":  # pragma: no cover
    main()
