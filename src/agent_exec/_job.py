""":class:`Job`: a handle on one job of the store: its state, its output, waiting, streaming
and killing.

A handle from :meth:`JobRunner.run` is *attached*: the runner tells it the terminal state
the moment the supervisor writes it, wakes its streams as output arrives, and can cancel it
while it is still queued. A handle from :meth:`JobRunner.job` works on any job of the store
(CLI-started, detached, another process's) by reading the store.
"""

from __future__ import annotations

import contextlib
import signal as _signal
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

import anyio
import anyio.lowlevel

from ._errors import InvalidState
from ._models import JobState, JobStatus
from ._paths import STDERR_LOG, STDOUT_LOG
from ._process import resolve_signal, signal_group
from ._results import ExcerptSide, JobResult, StreamName, TailResult
from ._store import read_state
from ._stream import Follow, FollowLines, OutputSignal, read_excerpt, read_tail_lines

__all__ = ["DEFAULT_MAX_BYTES", "Job", "SignalLike"]

#: Default bound of each output excerpt in a result (64 KiB, like the CLI's ``wait``).
DEFAULT_MAX_BYTES = 65536
#: How long a kill waits, at most, for the job's terminal state when cancelled.
_KILL_GRACE = 10.0
_BOTH: tuple[StreamName, ...] = ("stdout", "stderr")

SignalLike = _signal.Signals | int | str


class Job:
    """A handle on one job of the store. Cheap; holds no file descriptor or task.

    ``async with job:`` scopes a job like :func:`anyio.open_process` scopes a process: the
    block's end waits for the job; if the block raises or is cancelled, the job is killed
    (its process group gets SIGKILL) and its terminal state awaited first.
    """

    def __init__(self, job_id: str, job_dir: Path) -> None:
        self.job_id = job_id
        self.job_dir = job_dir
        #: Set by the runner for its own jobs: the terminal state, as soon as it is written.
        self._final: JobState | None = None
        self._done: anyio.Event | None = None
        self._output: OutputSignal | None = None
        #: The runner's way to take this job out of its queue (``True`` if it was queued).
        self._dequeue: Callable[[], bool] | None = None

    def __repr__(self) -> str:
        if self._final is not None:
            return f"<Job {self.job_id} {self._final.status.value}>"
        return f"<Job {self.job_id}>"

    # -- the runner's side ------------------------------------------------------------

    def _attach(self, dequeue: Callable[[], bool]) -> None:
        self._done = anyio.Event()
        self._output = OutputSignal()
        self._dequeue = dequeue

    def _finish(self, state: JobState) -> None:
        """The runner learnt the terminal state (or lost the job to another starter:
        ``_detach``); wake waiters and streams."""
        self._final = state
        self._dequeue = None
        if self._output is not None:
            self._output.notify()
        if self._done is not None:
            self._done.set()

    def _detach(self) -> None:
        """The runner no longer supervises this job: observe it through the store."""
        self._dequeue = None
        done, self._done, self._output = self._done, None, None
        if done is not None:
            done.set()

    def _notify_output(self) -> None:
        if self._output is not None:
            self._output.notify()

    # -- reading ------------------------------------------------------------------------

    @property
    def stdout_log_path(self) -> Path:
        return self.job_dir / STDOUT_LOG

    @property
    def stderr_log_path(self) -> Path:
        return self.job_dir / STDERR_LOG

    def _state(self) -> JobState:
        return self._final if self._final is not None else read_state(self.job_dir)

    def _result(self, state: JobState, max_bytes: int, output: ExcerptSide) -> JobResult:
        if max_bytes <= 0:
            return JobResult.from_state(self.job_dir, state)
        return JobResult.from_state(
            self.job_dir,
            state,
            stdout=read_excerpt(self.job_dir, "stdout", max_bytes, output),
            stderr=read_excerpt(self.job_dir, "stderr", max_bytes, output),
        )

    async def status(self, *, max_bytes: int = 0, output: ExcerptSide = "tail") -> JobResult:
        """The job's current state (a dead supervisor's job reads ``failed``).

        :param max_bytes: also read this many bytes of each log into the result (0: none).
        :param output: take them from the ``"head"`` or the ``"tail"`` of the logs.
        """
        return self._result(self._state(), max_bytes, output)

    async def wait(
        self,
        timeout: float | None = None,
        *,
        kill_on_cancel: bool = False,
        max_bytes: int = DEFAULT_MAX_BYTES,
        output: ExcerptSide = "tail",
    ) -> JobResult:
        """Wait until the job is terminal and return its result, with the ``output`` end
        (``"tail"`` or ``"head"``) of each log, at most ``max_bytes`` bytes each.

        Returns as soon as the terminal state is written: a pending ``kill_after``
        escalation or completion notification does not delay it.

        :param timeout: give up after this many seconds and return the current
            (non-terminal) state; ``None`` waits as long as it takes.
        :param kill_on_cancel: if the wait is cancelled (a caller's deadline, a task group
            going down), kill the job (SIGKILL to its process group; a queued job never
            starts) and wait for its terminal state before re-raising, like
            :meth:`anyio.abc.Process.aclose`.
        """
        try:
            if timeout is None:
                await self._wait_terminal()
            else:
                with anyio.move_on_after(timeout):
                    await self._wait_terminal()
        except BaseException:
            if kill_on_cancel:
                with anyio.CancelScope(shield=True):
                    await self.kill(_signal.SIGKILL, wait=True, timeout=_KILL_GRACE)
            raise
        return self._result(self._state(), max_bytes, output)

    async def _wait_terminal(self) -> None:
        if self._final is not None:
            # Still a checkpoint (anyio's rule): a loop collecting thousands of finished
            # jobs must let the event loop run between them.
            await anyio.lowlevel.checkpoint()
            return
        while self._done is not None and self._final is None:
            await self._done.wait()
            if self._final is None:  # detached from the runner: read the store below
                break
        if self._final is not None:
            return
        delay = 0.01
        while not read_state(self.job_dir).is_terminal:
            await _wait_store_change(self.job_dir, delay)
            delay = min(delay * 2, 0.25)

    async def tail(self, lines: int = 50, max_bytes: int = DEFAULT_MAX_BYTES) -> TailResult:
        """The last ``lines`` lines (within the last ``max_bytes`` bytes) of both logs."""
        return TailResult(
            job_id=self.job_id,
            stdout=read_tail_lines(self.job_dir, "stdout", lines, max_bytes),
            stderr=read_tail_lines(self.job_dir, "stderr", lines, max_bytes),
        )

    def stream(self, streams: Sequence[StreamName] = _BOTH) -> Follow:
        """Yield the job's output from its start, as it is written, until the job is
        terminal and every byte has been yielded::

            async for chunk in job.stream():
                print(chunk.stream, chunk.data)

        Works for any job of the store; a job of this process's runner wakes the reader
        on each write, others are re-read on a short timer. Order is kept per stream.
        """
        return Follow(self.job_dir, tuple(streams), is_terminal=self._is_terminal, signal=self._output)

    def lines(self, streams: Sequence[StreamName] = _BOTH) -> FollowLines:
        """Like :meth:`stream`, one :class:`OutputLine` (stream name and text) per line.
        Breaking out of the loop early is fine: the iterator holds nothing open."""
        return FollowLines(self.stream(streams))

    def _is_terminal(self) -> bool:
        if self._final is not None:
            return True
        if self._done is not None:
            return False
        try:
            return read_state(self.job_dir).is_terminal
        except Exception:
            return False

    # -- killing ------------------------------------------------------------------------

    async def kill(
        self, signal: SignalLike = _signal.SIGTERM, *, wait: bool = False, timeout: float | None = None
    ) -> JobResult:
        """Send ``signal`` to the job's process group and return the job's state.

        A job still queued by this process's runner is cancelled instead: it never starts
        and ends ``failed`` with reason ``cancelled_before_start``.

        :param wait: wait for the terminal state (at most ``timeout`` seconds) and return it.
        :raises InvalidState: for a ``created`` job nobody is going to start (CLI ``create``).
        :raises InvalidSignal: for an unknown signal.
        """
        signum = resolve_signal(signal)
        if self._dequeue is not None and self._dequeue():
            return JobResult.from_state(self.job_dir, self._state())
        state = self._state()
        if state.status is JobStatus.CREATED and self._done is None:
            raise InvalidState(
                f"job {self.job_id} is in 'created' state and has not been started; cannot send signal"
            )
        from ._backends import backend_record_of

        record = backend_record_of(self.job_dir)
        if record is not None:  # e.g. a Ray job: its backend stops it, its watcher records it
            from ._backends.ray import stop_ray_job

            await stop_ray_job(record, self.job_dir, self.job_id, signum)
        elif state.status is JobStatus.RUNNING and state.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                signal_group(state.pid, signum)
        if wait:
            return await self.wait(timeout, max_bytes=0)
        return JobResult.from_state(self.job_dir, self._state())

    # -- restarting ---------------------------------------------------------------------

    async def restart(self, signal: SignalLike = _signal.SIGTERM) -> Job:
        """Relaunch the job in place (same id, same directory) from its ``meta.json``, like
        ``agent-exec restart``, and return this handle.

        A running instance gets ``signal`` (then SIGKILL after 5 s) and its end is awaited;
        the logs and completion records are cleared; the job then runs again under its own
        detached supervisor (so this handle observes it through the store, whoever started
        it first). A job still queued by this process's runner is taken out of the queue.
        Concurrent restarts of one job join each other; ``gc``/``delete`` leave it alone.

        :raises InvalidSignal: for an unknown signal.
        :raises InvalidState: the job cannot be relaunched (a ``run`` job with ``mask``ed
            environment values, which are never stored; an instance that would not stop).
        :raises JobNotFound: the job was deleted.
        """
        import functools

        from ._jobs import launch_detached_exec
        from ._restart import restart_job

        signum = resolve_signal(signal)
        if self._dequeue is not None:
            self._dequeue()
        await anyio.to_thread.run_sync(
            functools.partial(
                restart_job, self.job_dir.parent, self.job_id, launch=launch_detached_exec, signal_name=signum
            )
        )
        self._final = None
        self._detach()
        return self

    # -- scoping ------------------------------------------------------------------------

    async def __aenter__(self) -> Job:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            await self.wait(kill_on_cancel=True, max_bytes=0)
            return
        with anyio.CancelScope(shield=True):
            await self.kill(_signal.SIGKILL, wait=True, timeout=_KILL_GRACE)


async def _wait_store_change(job_dir: Path, delay: float) -> None:
    """Sleep until the job may have changed: the supervisor lock's release wakes a
    ``running`` job's waiter at once; otherwise (``created``) a short timer."""
    from ._jobs import SupervisorWatch

    if read_state(job_dir).status is not JobStatus.RUNNING:
        await anyio.sleep(delay)
        return
    watch = SupervisorWatch(job_dir)
    await anyio.to_thread.run_sync(watch.wait, 3600.0, abandon_on_cancel=True)
