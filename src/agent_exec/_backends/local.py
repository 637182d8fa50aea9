"""The default backend: the job's workload runs on this machine under ``supervise()``,
the coroutine the CLI's detached supervisor runs too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from .._models import JobState, JobStatus
from .._spec import LaunchSpec

__all__ = ["LocalSupervisor"]


class LocalSupervisor:
    """Run jobs as local processes supervised from the runner's event loop."""

    kind = "local"

    def __repr__(self) -> str:
        return "LocalSupervisor()"

    def record(self) -> dict[str, Any] | None:
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
        task_status: anyio.abc.TaskStatus[int | None] = anyio.TASK_STATUS_IGNORED,
    ) -> JobState:
        from .._supervisor import supervise

        return await supervise(spec, lock_fd=lock_fd, task_status=task_status)

    async def stop(self, job_dir: Path, job_id: str, signal: str | int) -> bool:
        """Signal the job's process group; False if it is not running."""
        from .._errors import InvalidState
        from .._process import resolve_signal, signal_group
        from .._store import read_state

        signum = resolve_signal(str(signal))
        state = read_state(job_dir)
        if state.status is JobStatus.CREATED:
            raise InvalidState(
                f"job {job_id} is in 'created' state and has not been started; cannot send signal"
            )
        if state.status is not JobStatus.RUNNING or state.pid is None:
            return False
        return signal_group(state.pid, signum)
