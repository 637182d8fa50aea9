"""The backend seam: what a place that runs jobs must provide to :class:`~agent_exec.JobRunner`.

Everything else stays shared and backend-neutral: job ids, the job directory and its
files (``meta.json`` records which backend and where), the states and their meaning,
the supervisor lock that proves somebody is watching, notifications, ``gc``/``delete``,
and every read-side command (``status``, ``tail``, ``wait``, ``list``), which only ever
read the local store.

Two backends exist: :class:`~agent_exec._launcher.LocalLauncher` (the default: the
workload runs on this machine) and :class:`~agent_exec._backends.ray.RayJobs` (Ray Jobs).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import anyio.abc

from .._models import JobState, WorkloadIdentity
from .._spec import LaunchSpec

__all__ = ["Backend"]


class Backend(Protocol):
    """A job backend, used by the runner inside its task group.

    - **submit + observe + fetch output** are one call, :meth:`supervise`: it starts the
      workload of ``spec``, keeps ``state.json`` and the logs current (calling
      ``on_output()`` when output arrived), writes the terminal state only when every
      byte of output is in the logs, calls ``on_terminal(state)``, closes ``lock_fd``
      (the supervisor lock) and returns that state. ``task_status.started`` is called
      once the job may be reported as launched. If cancelled, it stops the job, records it
      ``killed`` and re-raises.
    - :meth:`launch_detached` / :meth:`wait_detached`: the same, by a process of its own
      that outlives the runner (``detached=True``); returns that process's pid.
    - :meth:`open` / :meth:`aclose` bracket the runner's ``async with`` (a remote backend
      connects in ``open``, so an unreachable service fails at once, not per job).
    - **stop** is not a method here: a job can be killed from any runner or from the CLI,
      so ``Job.kill``/``agent-exec kill`` dispatch on the backend recorded in the job's
      ``meta.json`` (:func:`agent_exec._backends.backend_record`).
    """

    #: ``"local"``, ``"ray"``: the name used by the CLI (``--backend``).
    kind: str

    def record(self) -> dict[str, Any] | None:
        """What ``meta.json`` keeps under ``backend`` for this backend's jobs (``None``
        for local jobs, whose records stay exactly 0.2.3's)."""
        ...

    async def open(self, task_group: anyio.abc.TaskGroup) -> None: ...

    async def aclose(self) -> None: ...

    async def supervise(
        self,
        spec: LaunchSpec,
        lock_fd: int,
        *,
        task_status: anyio.abc.TaskStatus[WorkloadIdentity | None],
        on_terminal: Callable[[JobState], None],
        on_output: Callable[[], None],
    ) -> JobState: ...

    async def launch_detached(self, spec: LaunchSpec, lock_fd: int) -> int: ...

    async def wait_detached(self, spec: LaunchSpec, pid: int) -> None: ...
