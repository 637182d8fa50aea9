"""The embedded async API: :class:`JobRunner` supervises many jobs from one event loop.

One anyio task group owned by the runner runs :func:`~agent_exec._supervisor.supervise`
for every job it starts: the very coroutine the detached supervisor process of
``agent-exec run`` runs. Jobs are written to the same store, in the same format, so the
CLI (``agent-exec status <id>``) sees them, and the runner can read any job of the store,
including CLI-started ones. Works under asyncio and trio.
"""

from __future__ import annotations

import contextlib
import enum
import math
import os
import socket
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
import anyio.abc

from ._errors import InvalidState, RunnerClosed
from ._jobs import (
    JobDefinition,
    create_job,
    launch_spec,
    list_data,
    running_state,
    tail_data,
    wait_for,
)
from ._models import JobState, JobStatus, NotificationConfig
from ._paths import STDERR_LOG, STDOUT_LOG, resolve_job, resolve_root
from ._process import DEFAULT_WRAPPER, resolve_signal, signal_group
from ._spec import LaunchSpec
from ._store import open_lock, read_state, try_lock_exclusive, write_state
from ._timeutil import now_ts

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._backends.base import Backend

__all__ = ["Job", "JobResult", "JobRunner", "JobSummary"]


@dataclass(frozen=True)
class JobResult:
    """A snapshot of a job's lifecycle record (terminal once :meth:`Job.wait` returns)."""

    job_id: str
    state: JobStatus
    exit_code: int | None
    signal: str | None
    reason: str | None
    started_at: str | None
    finished_at: str | None
    updated_at: str
    duration_ms: int | None
    stdout_log_path: Path
    stderr_log_path: Path

    @property
    def ok(self) -> bool:
        """True for a job that exited with status 0."""
        return self.state is JobStatus.EXITED and self.exit_code == 0

    @classmethod
    def from_state(cls, job_dir: Path, state: JobState) -> JobResult:
        return cls(
            job_id=state.job_id,
            state=state.status,
            exit_code=state.exit_code,
            signal=state.signal,
            reason=state.reason,
            started_at=state.started_at,
            finished_at=state.finished_at,
            updated_at=state.updated_at,
            duration_ms=state.duration_ms,
            stdout_log_path=job_dir / STDOUT_LOG,
            stderr_log_path=job_dir / STDERR_LOG,
        )


@dataclass(frozen=True)
class JobSummary:
    """One row of :meth:`JobRunner.list` (the CLI's ``list`` entries)."""

    job_id: str
    state: str
    created_at: str
    tags: tuple[str, ...]
    exit_code: int | None = None
    started_at: str | None = None
    finished_at: str | None = None
    updated_at: str | None = None
    reason: str | None = None


class Job:
    """A handle on one job of the store. Cheap; holds no resources."""

    def __init__(self, job_id: str, job_dir: Path, *, done: anyio.Event | None = None) -> None:
        self.job_id = job_id
        self.job_dir = job_dir
        self._done = done
        self._final: JobState | None = None

    def __repr__(self) -> str:
        return f"<Job {self.job_id}>"

    @property
    def stdout_log_path(self) -> Path:
        return self.job_dir / STDOUT_LOG

    @property
    def stderr_log_path(self) -> Path:
        return self.job_dir / STDERR_LOG

    async def status(self) -> JobResult:
        """The job's current state (a dead supervisor's job reads ``failed``)."""
        return JobResult.from_state(self.job_dir, read_state(self.job_dir))

    async def wait(self, timeout: float | None = None) -> JobResult:
        """Wait until the job is terminal and return its result.

        :param timeout: give up after this many seconds and return the current
            (non-terminal) state; ``None`` waits as long as it takes.
        """
        if self._done is not None:
            with anyio.move_on_after(math.inf if timeout is None else timeout):
                await self._done.wait()
            if self._final is not None:
                return JobResult.from_state(self.job_dir, self._final)
            return await self.status()
        state = await anyio.to_thread.run_sync(
            lambda: wait_for(self.job_dir, until=timeout, poll=0.2), abandon_on_cancel=True
        )
        return JobResult.from_state(self.job_dir, state)

    async def kill(self, signal: str | int = "TERM") -> bool:
        """Send ``signal`` to the job's process group; False if it is not running.

        :raises InvalidState: for a job that was created but not started.
        :raises InvalidSignal: for an unknown signal name.
        """
        from ._backends import backend_record
        from ._store import read_meta

        record = backend_record(read_meta(self.job_dir))
        if record is not None:  # a Ray job: Ray stops it, its watcher records the outcome
            from ._backends.ray import stop_ray_job

            return await stop_ray_job(record, self.job_dir, self.job_id, signal)
        signum = resolve_signal(str(signal))
        state = read_state(self.job_dir)
        if state.status is JobStatus.CREATED:
            raise InvalidState(
                f"job {self.job_id} is in 'created' state and has not been started; cannot send signal"
            )
        if state.status is not JobStatus.RUNNING or state.pid is None:
            return False
        return signal_group(state.pid, signum)

    async def tail(self, lines: int = 50, max_bytes: int = 65536) -> dict[str, Any]:
        """The ``tail`` document's data for this job (last lines of both logs)."""
        return tail_data(self.job_dir.parent, self.job_id, tail_lines=lines, max_bytes=max_bytes)


class _FifoSlots:
    """At most ``limit`` jobs hold a slot; waiters get theirs strictly in arrival order.

    (A ``CapacityLimiter`` serves waiters in the order their tasks first run, which trio
    deliberately randomises; here the order is decided synchronously in ``run()``.)
    """

    def __init__(self, limit: int) -> None:
        self._free = limit
        self._waiters: deque[anyio.Event] = deque()

    def take_or_queue(self) -> anyio.Event | None:
        """Take a free slot (``None``) or join the queue (an event set when it is ours)."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return None
        ticket = anyio.Event()
        self._waiters.append(ticket)
        return ticket

    def release(self) -> None:
        """Hand the slot to the longest waiter, or free it."""
        if self._waiters:
            self._waiters.popleft().set()
        else:
            self._free += 1

    def abandon(self, ticket: anyio.Event) -> None:
        """A waiter gave up: pass its slot on if it had been handed one."""
        if ticket.is_set():
            self.release()
        else:
            self._waiters.remove(ticket)


class _RunnerState(enum.Enum):
    UNOPENED = "unopened"  # constructed; jobs cannot be started yet
    OPEN = "open"  # inside ``async with``
    CLOSED = "closed"  # left; cannot be reopened


class JobRunner:
    """Run and supervise many jobs from one event loop.

    Usage::

        async with JobRunner(max_concurrency=64) as runner:
            job = await runner.run(["pytest", "-q"], timeout=600, tags=["ci"])
            result = await job.wait()

    - Parameters: ``root`` is the jobs root (resolved like the CLI's ``--root``:
      ``$AGENT_EXEC_ROOT``, then the XDG data directory); ``max_concurrency`` bounds how many
      jobs run at once — the others wait their turn in submission order, in state
      ``created`` (``agent-exec start`` cannot steal them: the runner holds their lock);
      ``detached=True`` starts jobs under their own supervisor process instead, so they
      outlive this process (per call: ``run(..., detached=True)``).
    - Leaving the ``async with`` normally waits for the runner's (non-detached) jobs. If
      the block raises or is cancelled, every running job's process group is killed and
      reaped and the job is recorded ``killed``; queued jobs are recorded ``failed``.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        max_concurrency: int | None = None,
        detached: bool = False,
        backend: Backend | None = None,
    ) -> None:
        if max_concurrency is not None and max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        if backend is None:
            from ._backends.local import LocalSupervisor

            backend = LocalSupervisor()
        self.backend: Backend = backend
        self.root = resolve_root(root)
        self.max_concurrency = max_concurrency
        self.detached = detached
        self._state = _RunnerState.UNOPENED
        self._task_group: anyio.abc.TaskGroup | None = None
        self._slots = _FifoSlots(max_concurrency) if max_concurrency else None
        self._running = 0
        self._queued = 0
        self._finished = 0

    def __repr__(self) -> str:
        counts = f"running={self._running} queued={self._queued}"
        return f"<JobRunner root={str(self.root)!r} {self._state.value} {counts}>"

    def statistics(self) -> dict[str, int]:
        """An immutable snapshot: jobs running, queued and finished under this runner."""
        return {"running": self._running, "queued": self._queued, "finished": self._finished}

    async def __aenter__(self) -> JobRunner:
        if self._state is not _RunnerState.UNOPENED:
            raise RuntimeError("a JobRunner cannot be opened twice")
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        try:
            await self.backend.open(self._task_group)  # a remote backend connects here
        except BaseException:
            # Nothing runs in the group yet: close it cleanly, then report the failure itself.
            with anyio.CancelScope(shield=True):
                await self._task_group.__aexit__(None, None, None)
            self._state = _RunnerState.CLOSED
            raise
        self._state = _RunnerState.OPEN
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        assert self._task_group is not None
        try:
            return await self._task_group.__aexit__(exc_type, exc, tb)
        except BaseExceptionGroup as group:
            # The block's own exception comes back wrapped by the task group: unwrap it.
            if exc is not None and len(group.exceptions) == 1 and group.exceptions[0] is exc:
                raise exc from None
            raise
        finally:
            self._state = _RunnerState.CLOSED
            with anyio.CancelScope(shield=True):
                await self.backend.aclose()

    # -- starting jobs --------------------------------------------------------------

    async def run(
        self,
        command: Sequence[str] | str,
        *,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        env_files: Sequence[str] = (),
        inherit_env: bool = True,
        mask: Sequence[str] = (),
        tags: Sequence[str] = (),
        timeout: float = 0,
        kill_after: float = 0,
        progress_every: float = 0,
        stdin: bytes | None = None,
        shell_wrapper: Sequence[str] | None = None,
        notify_command: str | None = None,
        notify_file: str | None = None,
        detached: bool | None = None,
    ) -> Job:
        """Create a job and start it (or queue it under ``max_concurrency``).

        ``command`` is argv words, or one string run by the shell wrapper (default
        ``sh -lc``), exactly like ``agent-exec run``. Returns once the job exists in the
        store; ``await job.wait()`` for its result.
        """
        if self._state is not _RunnerState.OPEN or self._task_group is None:
            raise RunnerClosed("JobRunner.run() called outside 'async with JobRunner()'")
        from ._jobs import validate_tag

        words = [command] if isinstance(command, str) else list(command)
        if not words:
            raise ValueError("command must not be empty")
        env_pairs = [f"{key}={value}" for key, value in (env or {}).items()]
        notification = NotificationConfig(notify_command=notify_command, notify_file=notify_file)
        definition = JobDefinition(
            command=words,
            cwd=os.fspath(cwd) if cwd is not None else None,
            env=env_pairs,
            env_files=list(env_files),
            inherit_env=inherit_env,
            mask=list(mask),
            tags=[validate_tag(tag) for tag in tags],
            timeout_s=math.ceil(timeout) if timeout > 0 else 0,
            kill_after_s=math.ceil(kill_after) if kill_after > 0 else 0,
            progress_every_s=math.ceil(progress_every) if progress_every > 0 else 0,
            notification=None if notification.is_empty else notification,
            wrapper=list(shell_wrapper) if shell_wrapper else list(DEFAULT_WRAPPER),
        )
        use_detached = self.detached if detached is None else detached
        # The slot is decided now, synchronously, so that jobs start in call order.
        ticket = self._slots.take_or_queue() if self._slots is not None and not use_detached else None

        def prepare() -> tuple[str, Path, LaunchSpec, int]:
            record = self.backend.record()
            job_id, job_dir, meta = create_job(
                self.root,
                definition,
                stdin=stdin,
                precreate_logs=use_detached or record is not None,
                backend=record,
            )
            spec = launch_spec(job_dir, meta, env_pairs=env_pairs, cwd=definition.cwd)
            lock_fd = open_lock(job_dir)
            try_lock_exclusive(lock_fd)
            if ticket is not None:  # queued: visible as `created` until its turn comes
                write_state(job_dir, JobState(job_id=job_id, status=JobStatus.CREATED, updated_at=now_ts()))
            return job_id, job_dir, spec, lock_fd

        # Inline on purpose: ~0.5 ms of small-file work; a worker-thread hop per job cost more
        # throughput than it saved (measured with benchmarks/bench_runner.py). And with no
        # checkpoint inside, a cancellation can never leave a job half-made.
        try:
            job_id, job_dir, spec, lock_fd = prepare()
        except BaseException:
            if self._slots is not None and not use_detached:
                self._slots.release() if ticket is None else self._slots.abandon(ticket)
            raise
        if use_detached:
            try:
                with anyio.CancelScope(shield=True):
                    if self.backend.kind == "local":
                        await _launch_detached(spec, lock_fd)
                    else:  # submitted from here, watched by a detached watcher process
                        await self.backend.launch_detached(spec, lock_fd)  # type: ignore[attr-defined]
            finally:
                os.close(lock_fd)
            return Job(job_id, job_dir)
        job = Job(job_id, job_dir, done=anyio.Event())
        self._queued += 1
        name = f"agent-exec job {job_id}"
        if ticket is None:
            # A free slot: return once the job is running (its state says so, with its pid).
            await self._task_group.start(self._supervise, spec, lock_fd, job, None, name=name)
        else:
            self._task_group.start_soon(self._supervise, spec, lock_fd, job, ticket, name=name)
        return job

    async def _supervise(
        self,
        spec: LaunchSpec,
        lock_fd: int,
        job: Job,
        ticket: anyio.Event | None,
        *,
        task_status: anyio.abc.TaskStatus[int | None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        assert job._done is not None
        started = False
        try:
            if ticket is not None:
                try:
                    await ticket.wait()
                except BaseException:
                    assert self._slots is not None
                    self._slots.abandon(ticket)
                    raise
            self._queued -= 1
            self._running += 1
            started = True
            try:
                job._final = await self.backend.supervise(spec, lock_fd, task_status=task_status)
            finally:
                if self._slots is not None:
                    self._slots.release()
        except BaseException:
            if not started:
                self._queued -= 1
                with contextlib.suppress(OSError):
                    now = now_ts()
                    job._final = JobState(
                        job_id=spec.job_id,
                        status=JobStatus.FAILED,
                        updated_at=now,
                        finished_at=now,
                        reason="runner_cancelled_before_start",
                    )
                    write_state(spec.job_dir, job._final)
                    os.close(lock_fd)
            raise
        finally:
            if started:
                self._running -= 1
            self._finished += 1
            job._done.set()

    # -- the read side ---------------------------------------------------------------

    def job(self, job_id: str) -> Job:
        """A handle on any job of the store by id or unique prefix.

        :raises JobNotFound: / :raises AmbiguousJobId: as the CLI reports them.
        """
        full_id, job_dir = resolve_job(self.root, job_id)
        return Job(full_id, job_dir)

    async def get(self, job_id: str) -> Job:
        """Async spelling of :meth:`job`."""
        return self.job(job_id)

    async def list(
        self,
        *,
        state: str | None = None,
        limit: int = 0,
        cwd: str | None = None,
        tags: Sequence[str] = (),
    ) -> list[JobSummary]:
        """Jobs of the store, newest first, filtered like ``agent-exec list --all``.

        :raises InvalidTag: for a tag pattern that is neither ``tag`` nor ``tag.*``.
        """
        from ._jobs import validate_tag_pattern
        from ._paths import canonical_cwd

        data = list_data(
            self.root,
            state_filter=state,
            limit=limit,
            cwd_filter=canonical_cwd(cwd) if cwd is not None else None,
            tag_patterns=[validate_tag_pattern(pattern) for pattern in tags],
        )
        return [
            JobSummary(
                job_id=row["job_id"],
                state=row["state"],
                created_at=row["created_at"],
                tags=tuple(row["tags"]),
                exit_code=row.get("exit_code"),
                started_at=row.get("started_at"),
                finished_at=row.get("finished_at"),
                updated_at=row.get("updated_at"),
                reason=row.get("reason"),
            )
            for row in data["jobs"]
        ]


async def _launch_detached(spec: LaunchSpec, lock_fd: int) -> int:
    """Start a detached supervisor process from an event-loop host (no fork here)."""
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
