"""The supervisor: runs one job's workload and owns its lifecycle record.

One coroutine, :func:`supervise`, serves both ways of running a job: the detached
supervisor process that ``agent-exec run`` forks (one ``anyio.run`` per job), and the
:class:`~agent_exec.JobRunner` task group that supervises many jobs in one event loop.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable

import anyio
import anyio.abc

from ._models import JobState, JobStatus, WorkloadIdentity
from ._notify import Notifier
from ._process import signal_group
from ._reserve import RETRY_EVERY, WRITE_PATIENCE, StateReserve
from ._spec import LaunchSpec
from ._timeutil import now_ts
from ._watch import Watch, start_watch
from ._workload import (
    DIR_MOVED,
    HEARTBEAT,
    Started,
    apply_output_drops,
    bound_stop,
    exit_state,
    failed_state,
    start_workload,
)

#: After the workload exits, how long to wait for its pipes to close (a background
#: descendant may hold them open) before the terminal state is written regardless.
DRAIN_TIMEOUT = 2.0


TerminalCallback = Callable[[JobState], None]


class _Supervision:
    """State shared by the tasks supervising one workload."""

    def __init__(
        self,
        spec: LaunchSpec,
        lock_fd: int | None,
        started_at: str,
        started: Started | None = None,
        on_terminal: TerminalCallback | None = None,
    ) -> None:
        self.spec = spec
        self.on_terminal = on_terminal
        self.lock_fd = lock_fd
        self.started_at = started_at
        self.started = started
        self.reserve = started.reserve if started is not None else StateReserve.empty()
        self.pid: int | None = None
        self.finished = False
        self.timed_out = False
        self.kill_deadline: float | None = None
        self.state_lock = anyio.Lock()

    def release_lock(self) -> None:
        if self.lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.lock_fd)
            self.lock_fd = None

    def running_state(self) -> JobState:
        return JobState(
            job_id=self.spec.job_id,
            status=JobStatus.RUNNING,
            updated_at=now_ts(),
            started_at=self.started_at,
            pid=self.pid,
            workload=self.started.identity if self.started is not None else None,
        )

    async def write_terminal(self, state: JobState) -> JobState:
        """Record the terminal state (even while being cancelled), then let go of the lock.

        A failing write (full disk, no descriptor left) falls back on the job's reserve
        and is retried for a while: the lock is held meanwhile, so no reader takes the
        job for lost while its outcome is known. ``on_terminal`` learns the outcome right
        then: an in-process waiter must not wait for a pending ``kill_after`` escalation or
        the completion notifications.
        """
        written = False
        if not self.state_lock.locked():
            # The common case, without a checkpoint: nothing else holds the lock across
            # an await (the progress refresh writes without one), so the first attempt
            # needs neither the lock nor a shield.
            self.finished = True
            with contextlib.suppress(OSError):
                self.reserve.write_state(self.spec.handle(), state)
                written = True
        if not written:
            with anyio.CancelScope(shield=True):
                async with self.state_lock:
                    self.finished = True
                    deadline = anyio.current_time() + WRITE_PATIENCE
                    while True:
                        try:
                            self.reserve.write_state(self.spec.handle(), state)
                            break
                        except OSError:
                            if anyio.current_time() >= deadline:
                                self.reserve.release()
                                if self.on_terminal is not None:
                                    self.on_terminal(state)
                                raise
                        await anyio.sleep(RETRY_EVERY)
        self.release_lock()
        if self.on_terminal is not None:
            self.on_terminal(state)
        return state

    async def refresh_progress(self, every: float) -> None:
        """Touch ``updated_at`` every ``every`` seconds; never after the terminal write.

        A refresh that cannot be written (full disk) is skipped, never fatal.
        """
        while True:
            await anyio.sleep(every)
            async with self.state_lock:
                if self.finished:
                    return
                with contextlib.suppress(OSError):
                    self.reserve.write_record(self.spec.handle(), self.running_state())

    async def note_alive(self, started: Started) -> None:
        """The heartbeat: the last moment the workload was seen running (see
        :func:`~agent_exec._workload.bound_stop`)."""
        assert self.pid is not None
        while True:
            try:
                exited = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)  # noqa: ASYNC222 - WNOHANG: never blocks
            except ChildProcessError:
                return
            if exited is not None:
                return
            started.last_alive = time.monotonic()
            await anyio.sleep(HEARTBEAT)

    async def enforce_timeout(self, timeout: float, kill_after: float) -> None:
        """SIGTERM the process group at the deadline, SIGKILL it ``kill_after`` later."""
        await anyio.sleep(timeout)
        assert self.pid is not None
        self.timed_out = True
        self.kill_deadline = anyio.current_time() + kill_after
        with contextlib.suppress(Exception):
            signal_group(self.pid, signal.SIGTERM)
        await self.escalate()

    async def escalate(self) -> None:
        """The SIGKILL half of a timeout; it also reaches descendants left in the group after
        the workload itself exited, so it is completed even once the job is finished."""
        if self.kill_deadline is None:
            return
        assert self.pid is not None
        # Once the group is empty there is nobody left to kill: stop waiting (a runner
        # leaving its block must not sit out a long ``kill_after`` for nothing).
        delay = 0.05
        while anyio.current_time() < self.kill_deadline and _group_exists(self.pid):
            await anyio.sleep(min(delay, max(0.0, self.kill_deadline - anyio.current_time())))
            delay = min(delay * 2, 1.0)
        self.kill_deadline = None
        with contextlib.suppress(Exception):
            os.killpg(self.pid, signal.SIGKILL)  # the group only: never a possibly reused bare pid


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


async def supervise(
    spec: LaunchSpec,
    *,
    lock_fd: int | None = None,
    started: Started | None = None,
    stop_aware: bool = False,
    task_status: anyio.abc.TaskStatus[WorkloadIdentity | None] = anyio.TASK_STATUS_IGNORED,
    on_terminal: TerminalCallback | None = None,
    on_output: Callable[[], None] | None = None,
) -> JobState:
    """:func:`_supervise`, then close the job directory's descriptor (it is the
    supervisor's from the hand-over on)."""
    try:
        return await _supervise(
            spec,
            lock_fd=lock_fd,
            started=started,
            stop_aware=stop_aware,
            task_status=task_status,
            on_terminal=on_terminal,
            on_output=on_output,
        )
    finally:
        if spec.dir is not None:
            spec.dir.close()
            spec.dir = None


async def _supervise(
    spec: LaunchSpec,
    *,
    lock_fd: int | None,
    started: Started | None,
    stop_aware: bool,
    task_status: anyio.abc.TaskStatus[WorkloadIdentity | None],
    on_terminal: TerminalCallback | None,
    on_output: Callable[[], None] | None,
) -> JobState:
    """Run the workload of ``spec`` to completion and return its terminal state.

    Output is streamed into the job's logs; the terminal state is written only after
    every byte the workload wrote is in them; then ``lock_fd`` (the supervisor lock) is
    released and completion notifications are delivered. ``task_status.started`` gets the
    workload's identity (pid, process group, start time; ``None`` if it could not be
    spawned). If cancelled, the workload's process group is killed and reaped and the job
    is recorded ``killed``.

    ``started`` adopts a workload that was already spawned (and recorded ``running``) by
    the detached supervisor's synchronous head start (see ``_detached``).

    ``stop_aware`` (the detached supervisor) adds a heartbeat so that time the supervisor
    spent stopped is not counted in ``duration_ms`` (see :func:`~agent_exec._workload.bound_stop`).

    ``on_terminal`` gets the terminal state as soon as it is written; ``on_output`` is
    called after each chunk of output reaches the logs (in-process streaming readers wake
    on it).
    """
    try:
        spec.handle()
    except OSError:
        # The directory vanished or was replaced before we held it: nothing can be
        # recorded, so nothing is run (``read_state`` reports the job lost).
        if lock_fd is not None:
            os.close(lock_fd)
        task_status.started(None)
        return failed_state(spec, now_ts(), f"{DIR_MOVED}: {spec.job_dir} is gone or replaced")
    notifier = Notifier(spec)
    if started is None:
        # Inline, as asyncio spawns its own subprocesses (vfork + exec: well under a
        # millisecond of loop time; a worker-thread hop costs more). No checkpoint lies
        # between the spawn and the ``try`` below, so a spawned workload is always owned.
        outcome = start_workload(spec)
        if isinstance(outcome, str):
            sup = _Supervision(spec, lock_fd, now_ts(), on_terminal=on_terminal)
            state = await sup.write_terminal(failed_state(spec, sup.started_at, outcome))
            task_status.started(None)
            await notifier.completion(state)
            return state
        started = outcome
        adopted = False
    else:
        adopted = True
    sup = _Supervision(spec, lock_fd, started.started_at, started, on_terminal)
    try:
        sup.pid = started.process.pid
        if not adopted:  # start_workload recorded it running already
            task_status.started(started.identity)
        notifier.attach(started.writer)
        state = await _supervise_running(sup, started, notifier, stop_aware, on_output)
    finally:
        started.close_pipes()
        sup.release_lock()
    await notifier.completion(state)
    return state


async def _supervise_running(
    sup: _Supervision,
    started: Started,
    notifier: Notifier,
    stop_aware: bool,
    on_output: Callable[[], None] | None = None,
) -> JobState:
    spec = sup.spec
    process, pipes, writer = started.process, started.pipes, started.writer
    watch: Watch | None = None
    try:
        async with anyio.create_task_group() as tg:
            watch = start_watch(tg, process, pipes, writer, on_output)
            notifier.bind(tg)
            if spec.timeout_s > 0:
                # Exact (the library takes fractions of a second; the CLI whole seconds).
                remaining = max(0.0, spec.timeout_s - (time.monotonic() - started.clock))
                tg.start_soon(sup.enforce_timeout, remaining, max(0.0, spec.kill_after_s))
            if spec.progress_every_s > 0:
                tg.start_soon(sup.refresh_progress, spec.progress_every_s)
            if stop_aware:
                tg.start_soon(sup.note_alive, started)
            returncode = await watch.exited()
            duration_ms = started.duration_ms()
            with anyio.move_on_after(DRAIN_TIMEOUT):
                await watch.drained()
            watch.close()
            for pipe in pipes:
                if not pipe.at_eof:
                    pipe.read_available(writer)
            writer.close()
            await notifier.drain()
            state = exit_state(
                spec.job_id, sup.started_at, sup.pid, returncode, duration_ms, timed_out=sup.timed_out
            )
            bound_stop(state, started)
            apply_output_drops(state, writer)
            state.workload = started.identity
            await sup.write_terminal(state)
            if (
                watch.has_tasks
                or notifier.delivering
                or spec.timeout_s > 0
                or spec.progress_every_s > 0
                or stop_aware
            ):
                tg.cancel_scope.cancel()  # (not free on asyncio: it formats the task's repr)
    except BaseException as exc:
        if watch is not None:
            watch.close()
        with anyio.CancelScope(shield=True):
            await _kill_and_record(sup, started, exc)
        raise
    await sup.escalate()
    return state


def _why(exc: BaseException) -> str:
    """``runner_cancelled`` for a cancellation, else ``supervisor_error: ...`` naming the failure."""
    if isinstance(exc, anyio.get_cancelled_exc_class() | KeyboardInterrupt | SystemExit):
        return "runner_cancelled"
    if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        return _why(exc.exceptions[0])
    if isinstance(exc, OSError) and exc.strerror:
        return f"supervisor_error: {exc.strerror}" + (f": {exc.filename}" if exc.filename is not None else "")
    return f"supervisor_error: {type(exc).__name__}: {exc}"


async def _kill_and_record(sup: _Supervision, started: Started, exc: BaseException) -> None:
    """Teardown on cancellation or failure: SIGKILL the group, reap, keep the output, record
    ``killed`` with the reason (``runner_cancelled``, or the supervisor's own error)."""
    if sup.finished:
        return
    process = started.process
    # The whole group, even if the workload itself already exited: descendants holding
    # the pipes must not outlive the job. (killpg only: never a possibly reused bare pid.)
    with contextlib.suppress(OSError):
        os.killpg(process.pid, signal.SIGKILL)
    returncode = await process.wait()
    for pipe in started.pipes:
        if not pipe.at_eof:
            pipe.read_available(started.writer)
    with contextlib.suppress(OSError):
        started.writer.close()
    state = exit_state(sup.spec.job_id, sup.started_at, sup.pid, returncode, started.duration_ms())
    state.workload = started.identity
    apply_output_drops(state, started.writer)
    reason = _why(exc)
    state.reason = reason if state.reason is None else f"{reason}; {state.reason}"
    with contextlib.suppress(OSError):
        await sup.write_terminal(state)
