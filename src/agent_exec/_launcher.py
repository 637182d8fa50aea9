"""How :class:`~agent_exec.JobRunner` launches and supervises one job: the one place a job
backend would slot in (like httpx's transports).

The runner decides *when* a job runs (its queue, its slots) and keeps the handle informed;
a launcher decides *how*: :class:`LocalLauncher` supervises the workload in this event loop
(:func:`~agent_exec._supervisor.supervise`, the coroutine the CLI's detached supervisor
runs too) or hands it to a detached supervisor process that outlives the runner.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc

from ._models import JobState, WorkloadIdentity
from ._spec import LaunchSpec
from ._store import lock_held_elsewhere, write_state

__all__ = ["LocalLauncher"]


class LocalLauncher:
    """Runs jobs on this machine: in this event loop, or under detached supervisors.

    The default backend of :class:`~agent_exec.JobRunner` (see ``_backends/base.py``).
    """

    kind = "local"

    def __repr__(self) -> str:
        return "LocalLauncher()"

    def record(self) -> dict[str, Any] | None:
        """Local jobs record no backend: their ``meta.json`` stays exactly 0.2.3's."""
        return None

    async def open(self, task_group: anyio.abc.TaskGroup) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def supervise(
        self,
        spec: LaunchSpec,
        lock_fd: int,
        *,
        task_status: anyio.abc.TaskStatus[WorkloadIdentity | None],
        on_terminal: Callable[[JobState], None],
        on_output: Callable[[], None],
    ) -> JobState:
        """Run the workload to completion in this event loop (``task_status.started`` gets
        its identity); the supervisor lock ``lock_fd`` is released at the terminal state."""
        from ._supervisor import supervise

        return await supervise(
            spec, lock_fd=lock_fd, task_status=task_status, on_terminal=on_terminal, on_output=on_output
        )

    async def launch_detached(self, spec: LaunchSpec, lock_fd: int) -> int:
        """Start a detached supervisor for the job and return its pid once the job is
        recorded ``running`` (an event-loop host cannot fork: it execs the launcher)."""
        from ._jobs import running_state
        from ._launch import Supervisor, exec_argv

        parent_sock, child_sock = socket.socketpair()
        try:
            process = await anyio.open_process(
                exec_argv(child_sock.fileno()),
                pass_fds=(child_sock.fileno(),),
                stdin=-3,
                stderr=-3,
                start_new_session=True,
            )
        except BaseException:
            parent_sock.close()
            raise
        finally:
            child_sock.close()
        async with process:
            assert process.stdout is not None
            raw = b""
            with contextlib.suppress(anyio.EndOfStream):
                while True:
                    raw += await process.stdout.receive()
            await process.wait()
        supervisor = Supervisor(parent_sock, int(raw))
        return supervisor.hand_over(
            spec, lock_fd, lambda pid: write_state(spec.job_dir, running_state(spec.job_id, pid))
        )

    async def wait_detached(self, spec: LaunchSpec, pid: int) -> None:
        """Wait until the detached supervisor ``pid`` of ``spec`` is gone (its job is
        finished): through a pidfd, else by probing the job's supervisor lock."""
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return
        except OSError:
            pidfd = -1
        if pidfd >= 0:
            try:
                await anyio.wait_readable(pidfd)
            finally:
                os.close(pidfd)
            return
        delay = 0.02
        while _supervised(spec):
            await anyio.sleep(delay)
            delay = min(delay * 2, 0.5)


def _supervised(spec: LaunchSpec) -> bool:
    from ._paths import LOCK_FILE

    try:
        fd = os.open(spec.job_dir / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return lock_held_elsewhere(fd)
    finally:
        os.close(fd)
