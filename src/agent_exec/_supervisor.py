"""The supervisor: runs one job's workload and owns its lifecycle record.

One coroutine, :func:`supervise`, serves both ways of running a job: the detached
supervisor process that ``agent-exec run`` forks (one ``anyio.run`` per job), and the
:class:`~agent_exec.JobRunner` task group that supervises many jobs in one event loop.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import anyio
import anyio.abc

from ._logs import LogWriter
from ._models import JobState, JobStatus
from ._notify import Notifier
from ._paths import FULL_LOG, STDERR_LOG, STDOUT_LOG
from ._process import build_argv, build_env, signal_group
from ._spec import LaunchSpec
from ._store import write_state
from ._timeutil import now_ts

#: After the workload exits, how long to wait for its pipes to close (a background
#: descendant may hold them open) before the terminal state is written regardless.
DRAIN_TIMEOUT = 2.0
_READ_CHUNK = 1 << 20
_BATCH_LIMIT = 4 << 20
_F_SETPIPE_SZ = 1031


class _Pipe:
    """The read end of one output pipe, drained without blocking the event loop."""

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self.read_fd, self.write_fd = os.pipe()
        with contextlib.suppress(OSError):
            fcntl.fcntl(self.read_fd, _F_SETPIPE_SZ, _READ_CHUNK)
        os.set_blocking(self.read_fd, False)
        self.eof: anyio.Event | None = None  # created in the event loop by pump()

    def read_available(self, writer: LogWriter) -> bool:
        """Move whatever the pipe holds into the logs; False at end of file."""
        chunks: list[bytes] = []
        size = 0
        alive = True
        while size < _BATCH_LIMIT:
            try:
                data = os.read(self.read_fd, _READ_CHUNK)
            except BlockingIOError:
                break
            except OSError:
                alive = False
                break
            if not data:
                alive = False
                break
            chunks.append(data)
            size += len(data)
        if chunks:
            writer.write(self.stream, chunks[0] if len(chunks) == 1 else b"".join(chunks))
        return alive

    @property
    def at_eof(self) -> bool:
        return self.eof is not None and self.eof.is_set()

    async def pump(self, writer: LogWriter) -> None:
        assert self.eof is not None
        while True:
            await anyio.wait_readable(self.read_fd)
            if not self.read_available(writer):
                self.eof.set()
                return

    def close(self) -> None:
        for fd in (self.read_fd, self.write_fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.read_fd = self.write_fd = -1

    def close_write_end(self) -> None:
        os.close(self.write_fd)
        self.write_fd = -1


class Workload:
    """The workload process, waited for through a pidfd so that no watcher thread is
    needed per job (asyncio's default child watcher starts one thread per process)."""

    def __init__(
        self, argv: list[str], *, stdin: int, stdout: int, stderr: int, cwd: str | None, env: dict[str, str]
    ) -> None:
        self._popen = subprocess.Popen(
            argv, stdin=stdin, stdout=stdout, stderr=stderr, cwd=cwd, env=env, start_new_session=True
        )
        self.pid = self._popen.pid
        self.returncode: int | None = None
        try:
            self._pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):
            self._pidfd = -1

    def _reap(self) -> bool:
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        if pid == 0:
            return False
        self.returncode = self._popen.returncode = os.waitstatus_to_exitcode(status)
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1
        return True

    async def wait(self) -> int:
        """Wait for the exit and reap; returns the exit code, or ``-signal``."""
        while self.returncode is None and not self._reap():
            if self._pidfd >= 0:
                await anyio.wait_readable(self._pidfd)
            else:
                await anyio.sleep(0.05)
        assert self.returncode is not None
        return self.returncode


def _seconds_ceil(value: float) -> float:
    return float(math.ceil(value)) if value > 0 else 0.0


class _Supervision:
    """State shared by the tasks supervising one workload."""

    def __init__(self, spec: LaunchSpec, lock_fd: int | None) -> None:
        self.spec = spec
        self.lock_fd = lock_fd
        self.started_at = now_ts()
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
        )

    async def write_terminal(self, state: JobState) -> JobState:
        """Record the terminal state (even while being cancelled), then let go of the lock."""
        with anyio.CancelScope(shield=True):
            async with self.state_lock:
                self.finished = True
                write_state(self.spec.job_dir, state)
        self.release_lock()
        return state

    async def refresh_progress(self, every: float) -> None:
        """Touch ``updated_at`` every ``every`` seconds; never after the terminal write."""
        while True:
            await anyio.sleep(every)
            async with self.state_lock:
                if self.finished:
                    return
                write_state(self.spec.job_dir, self.running_state())

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
        await anyio.sleep_until(self.kill_deadline)
        self.kill_deadline = None
        assert self.pid is not None
        with contextlib.suppress(Exception):
            signal_group(self.pid, signal.SIGKILL)


def _failed_state(spec: LaunchSpec, started_at: str, reason: str) -> JobState:
    now = now_ts()
    return JobState(
        job_id=spec.job_id,
        status=JobStatus.FAILED,
        updated_at=now,
        started_at=started_at,
        finished_at=now,
        reason=reason,
    )


def _describe_spawn_error(exc: OSError, spec: LaunchSpec) -> str:
    if spec.cwd is not None and not os.path.isdir(spec.cwd):
        return f"spawn_failed: working directory does not exist: {spec.cwd}"
    return f"spawn_failed: {exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")


def _start_workload(spec: LaunchSpec) -> tuple[Workload, list[_Pipe], LogWriter, float] | str:
    """Open the logs and spawn the workload (blocking work, run in a worker thread).

    Returns the running workload with its pipes, or the ``reason`` it could not start.
    """
    job_dir = spec.job_dir
    try:
        writer = LogWriter(job_dir / STDOUT_LOG, job_dir / STDERR_LOG, spec.full_log or job_dir / FULL_LOG)
    except OSError as exc:
        return f"spawn_failed: cannot open the logs: {exc.strerror or exc}"
    pipes = [_Pipe("stdout"), _Pipe("stderr")]
    stdin_fd: int | None = None
    try:
        env = build_env(
            inherit=spec.inherit_env, env_files=spec.env_files, env_pairs=spec.env_pairs, base=spec.base_env
        )
        if "PATH" not in env:
            env["PATH"] = os.defpath
        if spec.stdin_file is not None:
            stdin_path = Path(spec.stdin_file)
            if not stdin_path.is_absolute():
                stdin_path = job_dir / stdin_path
            stdin_fd = os.open(stdin_path, os.O_RDONLY | os.O_CLOEXEC)
        started_clock = time.monotonic()
        process = Workload(
            build_argv(spec.wrapper, spec.command),
            stdin=stdin_fd if stdin_fd is not None else subprocess.DEVNULL,
            stdout=pipes[0].write_fd,
            stderr=pipes[1].write_fd,
            cwd=spec.cwd,
            env=env,
        )
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        writer.close()
        for pipe in pipes:
            pipe.close()
        if isinstance(exc, OSError):
            return _describe_spawn_error(exc, spec)
        return f"spawn_failed: {exc}"
    finally:
        if stdin_fd is not None:
            os.close(stdin_fd)
    for pipe in pipes:
        pipe.close_write_end()
    return process, pipes, writer, started_clock


async def supervise(
    spec: LaunchSpec,
    *,
    lock_fd: int | None = None,
    task_status: anyio.abc.TaskStatus[int | None] = anyio.TASK_STATUS_IGNORED,
) -> JobState:
    """Run the workload of ``spec`` to completion and return its terminal state.

    Output is streamed into the job's logs; the terminal state is written only after
    every byte the workload wrote is in them; then ``lock_fd`` (the supervisor lock) is
    released and completion notifications are delivered. ``task_status.started`` gets the
    workload pid (``None`` if it could not be spawned). If cancelled, the workload's
    process group is killed and reaped and the job is recorded ``killed``.
    """
    sup = _Supervision(spec, lock_fd)
    notifier = Notifier(spec)
    # Spawning forks: keep it off the event loop. Shielded, so that a spawned workload is
    # always owned by the ``try`` below (no checkpoint between the spawn and it).
    with anyio.CancelScope(shield=True):
        started = await anyio.to_thread.run_sync(_start_workload, spec)
    if isinstance(started, str):
        state = await sup.write_terminal(_failed_state(spec, sup.started_at, started))
        task_status.started(None)
        await notifier.completion(state)
        return state
    process, pipes, writer, started_clock = started
    try:
        sup.pid = process.pid
        write_state(spec.job_dir, sup.running_state())
        task_status.started(process.pid)
        notifier.attach(writer)
        state = await _supervise_running(sup, process, pipes, writer, notifier, started_clock)
    finally:
        for pipe in pipes:
            pipe.close()
        sup.release_lock()
    await notifier.completion(state)
    return state


async def _supervise_running(
    sup: _Supervision,
    process: Workload,
    pipes: Sequence[_Pipe],
    writer: LogWriter,
    notifier: Notifier,
    started_clock: float,
) -> JobState:
    spec = sup.spec
    try:
        async with anyio.create_task_group() as tg:
            for pipe in pipes:
                pipe.eof = anyio.Event()
                tg.start_soon(pipe.pump, writer)
            tg.start_soon(notifier.run)
            if spec.timeout_s > 0:
                timeout, kill_after = _seconds_ceil(spec.timeout_s), _seconds_ceil(spec.kill_after_s)
                tg.start_soon(sup.enforce_timeout, timeout, kill_after)
            if spec.progress_every_s > 0:
                tg.start_soon(sup.refresh_progress, spec.progress_every_s)
            returncode = await process.wait()
            duration_ms = int((time.monotonic() - started_clock) * 1000)
            with anyio.move_on_after(DRAIN_TIMEOUT):
                for pipe in pipes:
                    assert pipe.eof is not None
                    await pipe.eof.wait()
            for pipe in pipes:
                if not pipe.at_eof:
                    pipe.read_available(writer)
            writer.close()
            await notifier.drain()
            state = _exit_state(sup, returncode, duration_ms)
            await sup.write_terminal(state)
            tg.cancel_scope.cancel()
    except BaseException:
        with anyio.CancelScope(shield=True):
            await _kill_and_record(sup, process, pipes, writer, started_clock)
        raise
    await sup.escalate()
    return state


def _exit_state(sup: _Supervision, returncode: int, duration_ms: int) -> JobState:
    now = now_ts()
    state = JobState(
        job_id=sup.spec.job_id,
        status=JobStatus.EXITED,
        updated_at=now,
        started_at=sup.started_at,
        exit_code=returncode,
        duration_ms=duration_ms,
        pid=sup.pid,
        finished_at=now,
    )
    if returncode < 0:
        state.status = JobStatus.KILLED
        state.exit_code = None
        state.signal = str(-returncode)
    if sup.timed_out:
        state.reason = "timeout"
    return state


async def _kill_and_record(
    sup: _Supervision,
    process: Workload,
    pipes: Sequence[_Pipe],
    writer: LogWriter,
    started_clock: float,
) -> None:
    """Teardown on cancellation: SIGKILL the group, reap, keep the output, record ``killed``."""
    if sup.finished:
        return
    # The whole group, even if the workload itself already exited: descendants holding
    # the pipes must not outlive the job. (killpg only: never a possibly reused bare pid.)
    with contextlib.suppress(OSError):
        os.killpg(process.pid, signal.SIGKILL)
    returncode = await process.wait()
    for pipe in pipes:
        if not pipe.at_eof:
            pipe.read_available(writer)
    with contextlib.suppress(OSError):
        writer.close()
    state = _exit_state(sup, returncode, int((time.monotonic() - started_clock) * 1000))
    if state.status is JobStatus.EXITED:
        state.reason = "runner_cancelled"
    else:
        state.reason = state.reason or "runner_cancelled"
    with contextlib.suppress(OSError):
        await sup.write_terminal(state)
