"""The backend seam: what a place that runs jobs must provide.

Everything else stays shared and backend-neutral: job ids, the job directory and its
files (``meta.json`` records which backend and where), the states and their meaning,
the supervisor lock that proves somebody is watching, notifications, ``gc``/``delete``,
and every read-side command (``status``, ``tail``, ``wait``, ``list``), which only ever
read the local store.
"""

from __future__ import annotations

from typing import Any, Protocol

import anyio
import anyio.abc

from .._models import JobState
from .._spec import LaunchSpec

__all__ = ["Backend"]


class Backend(Protocol):
    """A job backend, used by :class:`~agent_exec.JobRunner` inside its task group.

    - :meth:`open`/:meth:`aclose` bracket the runner's ``async with`` (a remote backend
      connects there, so an unreachable service fails at once, not per job).
    - :meth:`supervise` is submit + observe state + fetch output, for one job: it runs
      the workload of ``spec`` to a terminal state, keeps ``state.json`` and the logs
      current meanwhile, writes the terminal state only when every byte of output is in
      the logs, then closes ``lock_fd`` (the supervisor lock) and returns that state.
      ``task_status.started`` is called once the job may be reported as launched. If
      cancelled, it stops the job, records it ``killed`` and re-raises.
    - :meth:`stop` asks a running job of this backend to stop (``Job.kill``).
    """

    #: ``"local"``, ``"ray"``: the name recorded in ``meta.json`` and used by the CLI.
    kind: str

    def record(self) -> dict[str, Any] | None:
        """What ``meta.json`` keeps under ``backend`` for jobs of this backend (``None``:
        nothing, as for local jobs, so their records stay exactly 0.2.3's)."""
        ...

    async def open(self, task_group: anyio.abc.TaskGroup) -> None: ...

    async def aclose(self) -> None: ...

    async def supervise(
        self,
        spec: LaunchSpec,
        lock_fd: int,
        *,
        task_status: anyio.abc.TaskStatus[int | None] = anyio.TASK_STATUS_IGNORED,
    ) -> JobState: ...

    async def stop(self, job_dir: Any, job_id: str, signal: str | int) -> bool: ...
