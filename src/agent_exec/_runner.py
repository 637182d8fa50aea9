""":class:`JobRunner`: run and supervise many jobs from one event loop (asyncio or trio).

The runner writes every job to the same store, in the same format, as the CLI (so
``agent-exec status <id>`` sees them) and reads any job of the store. It decides *when* a
job runs: at once, or queued in submission order under ``max_concurrency``. A queued job
is ~1.6 KiB in a deque: no task, no file descriptor. *How* a job runs is the
launcher's business (:mod:`agent_exec._launcher`).
"""

from __future__ import annotations

import enum
import errno
import math
import os
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Unpack

import anyio
import anyio.abc

from ._errors import TRANSIENT_ERRNOS, InvalidState, RunnerClosed, StateCorrupt
from ._job import DEFAULT_MAX_BYTES, Job, SignalLike
from ._jobdir import StateUnreadable
from ._jobs import QUEUED_REASON, create_job_dir, launch_spec, list_data
from ._launcher import LocalLauncher
from ._models import JobState, JobStatus, WorkloadIdentity
from ._options import RunOptions, StdinSource, job_definition, stdin_payload
from ._paths import resolve_job, resolve_root
from ._reserve import enable_swap
from ._results import ExcerptSide, JobResult, JobSummary
from ._spec import LaunchSpec
from ._store import open_lock, read_state_raw, try_lock_exclusive, write_state
from ._timeutil import now_ts
from ._workload import DIR_MOVED

if TYPE_CHECKING:
    from ._backends.base import Backend
    from ._gc import GcResult
    from ._hostguard import HostGuard

__all__ = ["JobRunner", "RunOptions", "StdinSource"]

#: How often (seconds) the jobs root is checked again for ownership and permissions
#: (``_root.check_root``): once a second, not once per job.
_ROOT_RECHECK = 1.0
#: How long the record of a job that could not start is retried when out of descriptors.
_FAIL_WRITE_PATIENCE = 5.0


@dataclass(slots=True)
class _Queued:
    """A job waiting for a slot: everything needed to start it, and nothing open."""

    job: Job
    spec: LaunchSpec
    detached: bool
    #: It waited in the queue, recorded ``created`` (another starter may have taken it).
    queued: bool = False


class _RunnerState(enum.Enum):
    UNOPENED = "unopened"  # constructed; jobs cannot be started yet
    OPEN = "open"  # inside ``async with``
    CLOSED = "closed"  # left; cannot be reopened


class JobRunner:
    """Run and supervise many jobs from one event loop.

    Usage::

        async with JobRunner(max_concurrency=64) as runner:
            result = await runner.execute(["pytest", "-q"], timeout=600)   # run and wait
            job = await runner.run("make build 2>&1 | tail -n 5")         # a shell string
            async for line in job.lines():
                ...

    - ``root`` is the jobs root (resolved like the CLI's ``--root``: ``$AGENT_EXEC_ROOT``,
      then the XDG data directory). Its safety (owner, permissions: see the README) is
      checked with the first job and then at most once a second, not for every job.
    - ``max_concurrency`` bounds how many jobs run at once, detached ones included; the
      others wait their turn in submission order, recorded ``created``, holding no file
      descriptor. ``job.kill()`` takes a queued job out of the queue (it never starts).
    - ``detached=True`` starts jobs under their own supervisor process instead, so they
      outlive this process (per call: ``run(..., detached=True)``).
    - ``backend``: where jobs run. Default: this machine. ``RayJobs(address)`` sends them
      to a Ray cluster through Ray Jobs (same store, states, handles; see the README).
    - ``kill_on_host_exit`` (default True): if this process dies without leaving the
      ``async with`` (SIGKILL, an unhandled SIGTERM), a guard process SIGKILLs the
      process groups of its (non-detached) running jobs instead of leaving them orphaned;
      their records then read ``failed``/``supervisor_lost``.
    - Leaving the ``async with`` normally waits for the runner's (non-detached) jobs and
      starts every queued job. If the block raises or is cancelled, every running job's
      process group is killed and reaped and the job is recorded ``killed``; queued jobs
      are recorded ``failed`` (``runner_cancelled_before_start``).
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        max_concurrency: int | None = None,
        detached: bool = False,
        kill_on_host_exit: bool = True,
        backend: Backend | None = None,
    ) -> None:
        if max_concurrency is not None and max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.root = resolve_root(root)
        self.max_concurrency = max_concurrency
        self.detached = detached
        self.kill_on_host_exit = kill_on_host_exit
        #: Where jobs run: this machine (default) or e.g. ``RayJobs(address)`` (a cluster).
        self.backend: Backend = backend if backend is not None else LocalLauncher()
        self._launcher = self.backend
        self._guard: HostGuard | None = None
        self._state = _RunnerState.UNOPENED
        self._task_group: anyio.abc.TaskGroup | None = None
        self._queue: deque[_Queued] = deque()
        self._queue_empty: anyio.Event | None = None
        self._active = 0  # jobs holding a slot (running, or launching)
        self._finished = 0
        self._closing = False
        self._detached_watches: set[anyio.CancelScope] = set()
        self._root_checked_at = -_ROOT_RECHECK

    def __repr__(self) -> str:
        counts = f"running={self._active} queued={len(self._queue)}"
        return f"<JobRunner root={str(self.root)!r} {self._state.value} {counts}>"

    def statistics(self) -> dict[str, int]:
        """An immutable snapshot: jobs running, queued and finished under this runner."""
        return {"running": self._active, "queued": len(self._queue), "finished": self._finished}

    async def __aenter__(self) -> JobRunner:
        if self._state is not _RunnerState.UNOPENED:
            raise RuntimeError("a JobRunner cannot be opened twice")
        enable_swap()  # state records exchanged with the reserve: no inode freed per write
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        try:
            await self.backend.open(self._task_group)  # a remote backend connects here
        except BaseException:
            # Nothing runs in the group yet: close it cleanly, then report the failure itself.
            # (No shielding scope around it: trio requires scopes to exit in nesting order.)
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
            if exc is None:
                # Every queued job still gets its turn; then nothing holds a slot for later.
                while self._queue:
                    self._queue_empty = anyio.Event()
                    await self._queue_empty.wait()
            self._closing = True
            self._cancel_queued("runner_cancelled_before_start")
            for scope in self._detached_watches:
                scope.cancel()
            try:
                return await self._task_group.__aexit__(exc_type, exc, tb)
            except BaseExceptionGroup as group:
                # The block's own exception comes back wrapped by the task group: unwrap it.
                if exc is not None and len(group.exceptions) == 1 and group.exceptions[0] is exc:
                    raise exc from None
                raise
        finally:
            self._state = _RunnerState.CLOSED
            if self._guard is not None:
                self._guard.close()
            with anyio.CancelScope(shield=True):
                await self.backend.aclose()

    # -- starting jobs --------------------------------------------------------------

    async def run(self, command: Sequence[str] | str, **options: Unpack[RunOptions]) -> Job:
        """Create a job and start it, or queue it under ``max_concurrency``.

        ``command`` follows Python's convention (:mod:`subprocess`): a sequence is exec'd
        directly (no shell; the program is looked up on the job environment's ``PATH``);
        a ``str`` runs through ``sh -c``. ``shell_wrapper`` (e.g. ``["bash", "-lc"]``, a
        login shell) runs either through that wrapper, with the CLI's rules for a sequence.
        ``meta.json`` records the exact ``argv`` and whether a ``shell`` was used. A
        missing program ends the job ``failed`` with ``spawn_failed: <OS error>: <program>``.

        Options: ``cwd``, ``env`` (added to the inherited environment unless
        ``inherit_env=False``), ``env_files``, ``mask`` (keys shown as ``***`` in
        ``meta.json``), ``tags``, ``timeout`` and ``kill_after`` (seconds, fractions
        allowed: SIGTERM at the timeout, SIGKILL ``kill_after`` later), ``progress_every``,
        ``stdin`` (``str``, ``bytes``, a path, or an async iterable of bytes),
        ``notify_command``/``notify_file`` and ``detached``.

        Returns once the job exists in the store (running, if a slot was free);
        ``await job.wait()`` for its result.

        :raises RunnerClosed: outside ``async with``.
        :raises ValueError: an empty command, a negative timeout.
        :raises InvalidTag: a malformed tag.
        """
        if self._state is not _RunnerState.OPEN or self._task_group is None or self._closing:
            raise RunnerClosed("JobRunner.run() called outside 'async with JobRunner()'")
        definition, env_pairs = job_definition(command, options)
        stdin = await stdin_payload(options.get("stdin"))
        detached = self.detached if options.get("detached") is None else bool(options.get("detached"))
        # Inline on purpose: a few small-file operations, well under the 20 ms budget of a
        # loop iteration; a worker-thread hop per job costs more throughput than it saves.
        # No checkpoint lies inside, so a cancellation can never leave a job half-made.
        record = self.backend.record()
        starts_now = self.max_concurrency is None or self._active < self.max_concurrency
        checked = self._root_checked_at + _ROOT_RECHECK > time.monotonic()
        handle, meta = create_job_dir(
            self.root,
            definition,
            root_checked=checked,
            stdin=stdin,
            precreate_logs=detached or record is not None,
            backend=record,
            # Queued: visible as ``created``; ``reason``/``pid`` say who will start it
            # (``agent-exec start`` leaves it alone). Written before the directory appears.
            initial_state=None if starts_now else self._queued_state,
        )
        if not checked:
            self._root_checked_at = time.monotonic()
        job_id = meta.job_id
        spec = launch_spec(handle, meta, env_pairs=env_pairs, cwd=definition.cwd)
        job = Job(job_id, handle.path)
        if not starts_now or detached or record is not None:
            # Only a job supervised in this loop right away keeps its directory open; a
            # queued job holds no descriptor, other launchers open what they need.
            spec.dir = None
            handle.close()
        if starts_now:
            self._active += 1
            if detached and self.max_concurrency is None:
                try:
                    await self._launch_detached(job, spec)
                finally:
                    self._active -= 1
                    self._finished += 1
            else:
                await self._task_group.start(
                    self._run_job, _Queued(job, spec, detached), name=f"job {job_id}"
                )
            return job
        # Queued (recorded ``created``): the slot is handed on in submission order.
        entry = _Queued(job, spec, detached, queued=True)
        if not detached:
            job._attach(lambda: self._dequeue(entry))
        else:
            job._dequeue = lambda: self._dequeue(entry)
        self._queue.append(entry)
        await anyio.lowlevel.checkpoint()  # submitting many jobs must not starve the loop
        return job

    async def execute(
        self,
        command: Sequence[str] | str,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        output: ExcerptSide = "tail",
        **options: Unpack[RunOptions],
    ) -> JobResult:
        """Run a job and wait for its result, like :func:`anyio.run_process`: if the caller
        is cancelled (a deadline, a task group going down) the job is killed and its
        terminal state awaited before the cancellation propagates.

        Takes :meth:`run`'s options; ``max_bytes``/``output`` bound the output in the result.
        """
        job = await self.run(command, **options)
        return await job.wait(kill_on_cancel=True, max_bytes=max_bytes, output=output)

    @staticmethod
    def _queued_state(job_id: str) -> JobState:
        return JobState(
            job_id=job_id,
            status=JobStatus.CREATED,
            updated_at=now_ts(),
            reason=QUEUED_REASON,
            pid=os.getpid(),
        )

    def _dequeue(self, entry: _Queued) -> bool:
        """Cancel a queued job (``Job.kill``); False if it is no longer queued."""
        try:
            self._queue.remove(entry)
        except ValueError:
            return False
        self._record_unstarted(entry, "cancelled_before_start")
        self._wake_if_queue_empty()
        return True

    def _cancel_queued(self, reason: str) -> None:
        while self._queue:
            self._record_unstarted(self._queue.popleft(), reason)
        self._wake_if_queue_empty()

    def _wake_if_queue_empty(self) -> None:
        if not self._queue and self._queue_empty is not None:
            self._queue_empty.set()

    def _record_unstarted(self, entry: _Queued, reason: str) -> None:
        now = now_ts()
        state = JobState(
            job_id=entry.job.job_id, status=JobStatus.FAILED, updated_at=now, finished_at=now, reason=reason
        )
        _try_write_state(entry.spec.job_dir, state)
        entry.job._finish(state)
        self._finished += 1

    def _release_slot(self) -> None:
        """A job let go of its slot: the longest-queued job gets it, unless the runner is
        being cancelled (this job's task then sees the cancellation before the host task
        has left the ``async with``: nothing new may start)."""
        if (
            self._queue
            and not self._closing
            and self._task_group is not None
            and anyio.current_effective_deadline() != -math.inf
        ):
            entry = self._queue.popleft()
            self._wake_if_queue_empty()
            self._task_group.start_soon(self._run_job, entry, name=f"job {entry.job.job_id}")
        else:
            self._active -= 1

    async def _run_job(
        self, entry: _Queued, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """One job, from taking its slot to giving it back."""
        job, spec = entry.job, entry.spec
        try:
            if entry.detached:
                pid = await self._launch_detached(job, spec, task_status)
                if pid is not None:
                    with anyio.CancelScope() as scope:
                        self._detached_watches.add(scope)
                        try:
                            await self._launcher.wait_detached(spec, pid)
                        finally:
                            self._detached_watches.discard(scope)
            else:
                await self._supervise_here(job, spec, entry.queued, task_status)
        finally:
            self._finished += 1
            self._release_slot()

    async def _supervise_here(
        self, job: Job, spec: LaunchSpec, queued: bool, task_status: anyio.abc.TaskStatus[None]
    ) -> None:
        if job._done is None:
            job._attach(lambda: False)
        job._dequeue = None
        try:
            lock_fd = await self._claim(job, spec, queued)
        except OSError as exc:
            lock_fd = None
            await _fail(job, spec, f"spawn_failed: cannot open the supervisor lock: {exc.strerror or exc}")
        if lock_fd is None:
            if spec.dir is not None:  # the handle kept from creation: nobody supervises it now
                spec.dir.close()
                spec.dir = None
            task_status.started()
            return
        guard = await self._host_guard()
        started = _GuardedStart(task_status, guard)
        try:
            await self._launcher.supervise(
                spec, lock_fd, task_status=started, on_terminal=job._finish, on_output=job._notify_output
            )
        except OSError as exc:
            # Out of descriptors (or another OS failure) around the spawn: this job fails,
            # cleanly; the runner and the other jobs carry on.
            if job._final is None:
                await _fail(job, spec, f"spawn_failed: {exc.strerror or exc}")
            if not started.called:
                task_status.started()
        finally:
            if guard is not None and started.pid is not None:
                guard.remove(started.pid)

    async def _claim(self, job: Job, spec: LaunchSpec, queued: bool) -> int | None:
        """The job's supervisor lock, taken now that its turn came. ``None`` if the job
        cannot be run by us: another starter took it (the handle then follows the store).

        :raises OSError: the lock cannot be opened (e.g. out of descriptors).
        """
        try:
            handle = spec.handle()
        except OSError as exc:
            if exc.errno in TRANSIENT_ERRNOS:
                raise
            # Deleted, renamed or replaced while queued: nothing runs for it.
            await _fail(job, spec, f"{DIR_MOVED}: {spec.job_dir}: {exc.strerror or exc}")
            return None
        lock_fd = open_lock(handle)
        try:
            taken = try_lock_exclusive(lock_fd) or await _lock_patiently(lock_fd)
            if taken and queued and read_state_raw(handle).status is not JobStatus.CREATED:
                taken = False
        except Exception:
            taken = False
        except BaseException:  # cancelled while waiting for the lock
            os.close(lock_fd)
            raise
        if not taken:
            os.close(lock_fd)
            handle.close()
            spec.dir = None
            job._detach()
            return None
        return lock_fd

    async def _host_guard(self) -> HostGuard | None:
        if not self.kill_on_host_exit:
            return None
        if self._guard is None:
            from ._hostguard import HostGuard

            self._guard = HostGuard()
            await self._guard.start()
        return self._guard if self._guard.active else None

    async def _launch_detached(
        self,
        job: Job,
        spec: LaunchSpec,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> int | None:
        """Hand the job to a detached supervisor; its pid, or ``None`` if it did not start."""
        job._dequeue = None
        try:
            lock_fd = open_lock(spec.job_dir)
        except OSError as exc:
            await _fail(job, spec, f"spawn_failed: cannot open the supervisor lock: {exc.strerror or exc}")
            task_status.started()
            return None
        try:
            if not await _lock_patiently(lock_fd):
                task_status.started()
                return None
            with anyio.CancelScope(shield=True):
                pid = await self._launcher.launch_detached(spec, lock_fd)
        except OSError as exc:
            await _fail(job, spec, f"spawn_failed: cannot start a supervisor: {exc.strerror or exc}")
            task_status.started()
            return None
        finally:
            os.close(lock_fd)
        task_status.started()
        return pid

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

    async def restart(self, job: Job | str, *, signal: SignalLike = "TERM") -> Job:
        """Relaunch ``job`` (a handle, an id or a unique prefix) in place: see :meth:`Job.restart`.

        Works on any job of the store, CLI-started ones too; the relaunched job runs under
        its own detached supervisor.
        """
        handle = job if isinstance(job, Job) else self.job(job)
        return await handle.restart(signal)

    async def list(
        self,
        *,
        state: JobStatus | str | None = None,
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
            state_filter=str(state) if state is not None else None,
            limit=limit,
            cwd_filter=canonical_cwd(cwd) if cwd is not None else None,
            tag_patterns=[validate_tag_pattern(pattern) for pattern in tags],
        )
        return [
            JobSummary(
                job_id=row["job_id"],
                state=JobStatus(row["state"]) if row["state"] != "unknown" else None,
                created_at=row["created_at"],
                tags=tuple(row["tags"]),
                command=tuple(row["command"]),
                exit_code=row.get("exit_code"),
                started_at=row.get("started_at"),
                finished_at=row.get("finished_at"),
                updated_at=row.get("updated_at"),
                reason=row.get("reason"),
            )
            for row in data["jobs"]
        ]

    # -- cleanup ---------------------------------------------------------------------

    async def gc(
        self,
        *,
        older_than: float | str = "30d",
        max_jobs: int | None = None,
        max_bytes: int | None = None,
        dry_run: bool = False,
        now: float | None = None,
    ) -> GcResult:
        """Delete finished jobs, exactly as ``agent-exec gc`` does (same code): those
        older than ``older_than`` (seconds, or ``30d``/``24h``/``60m``/``3600s``), then the
        oldest ones beyond ``max_jobs`` jobs or ``max_bytes`` bytes. Running jobs are never
        touched. ``now`` (a ``time.time()`` value) is the clock ages are measured against.

        :raises InvalidDuration: a malformed ``older_than``.
        """
        import time

        from ._gc import GcPolicy, collect
        from ._timeutil import parse_duration

        seconds = parse_duration(older_than) if isinstance(older_than, str) else int(older_than)
        policy = GcPolicy(seconds, max_jobs, max_bytes)
        return await collect(self.root, policy, now=time.time() if now is None else now, dry_run=dry_run)

    async def delete(self, job: Job | str, *, dry_run: bool = False) -> None:
        """Delete one finished job's directory (``agent-exec delete <id>``).

        :raises InvalidState: the job is running (or queued by this runner).
        :raises JobNotFound: / :raises AmbiguousJobId: for an unknown id.
        """
        from ._gc import delete_one

        given = job.job_id if isinstance(job, Job) else job
        if isinstance(job, Job) and job._dequeue is not None:
            raise InvalidState(f"cannot delete job {given}: job is queued")
        await anyio.to_thread.run_sync(lambda: delete_one(self.root, given, dry_run=dry_run))


async def _lock_patiently(lock_fd: int, patience: float = 0.05) -> bool:
    """Take the supervisor lock; a reader may hold it shared for microseconds, so retry a
    little, sleeping on the event loop (never ``time.sleep``: the loop must not block)."""
    deadline = anyio.current_time() + patience
    while not try_lock_exclusive(lock_fd):
        if anyio.current_time() >= deadline:
            return False
        await anyio.sleep(0.002)
    return True


class _GuardedStart:
    """The supervisor's ``task_status``: passes the start on, and tells the host guard
    about the workload's process group."""

    def __init__(self, task_status: anyio.abc.TaskStatus[None], guard: HostGuard | None) -> None:
        self._task_status = task_status
        self._guard = guard
        self.called = False
        self.pid: int | None = None

    def started(self, value: WorkloadIdentity | None = None) -> None:
        if value is not None:
            self.pid = value.pgid
            if self._guard is not None:
                self._guard.add(value.pgid, value.start_ticks)
        self.called = True
        self._task_status.started()


async def _fail(job: Job, spec: LaunchSpec, reason: str) -> None:
    """Record a job that could not start. Out of descriptors the write is retried for a
    while (running jobs finishing free some), so the store does not keep a job without a
    state; the handle learns the outcome either way."""
    now = now_ts()
    state = JobState(
        job_id=job.job_id, status=JobStatus.FAILED, updated_at=now, finished_at=now, reason=reason
    )
    with anyio.CancelScope(shield=True):
        delay = 0.01
        with anyio.move_on_after(_FAIL_WRITE_PATIENCE):
            while True:
                try:
                    write_state(spec.job_dir, state)
                    break
                except (OSError, StateUnreadable) as exc:
                    code = exc.errno if isinstance(exc, OSError) else exc.os_errno
                    if code not in (errno.EMFILE, errno.ENFILE):
                        break
                except StateCorrupt:  # the directory is gone: the handle still learns it
                    break
                await anyio.sleep(delay)
                delay = min(delay * 2, 0.5)
    job._finish(state)


def _try_write_state(job_dir: Path, state: JobState) -> None:
    """Best effort: the handle already knows; the store may be out of descriptors too."""
    try:
        write_state(job_dir, state)
    except OSError:
        pass
