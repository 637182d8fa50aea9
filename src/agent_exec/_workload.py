"""A job's workload process and its output pipes, without an event loop.

Everything here is synchronous, so the detached supervisor can start a workload and drive
it (:func:`drive_until_ready`) while anyio is still being imported; the async
:func:`~agent_exec._supervisor.supervise` then adopts it. Event-loop waits import anyio
lazily, inside the coroutines that need it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import time
from collections.abc import Callable

from ._logs import LogWriter
from ._models import JobState, JobStatus, WorkloadIdentity
from ._paths import FULL_LOG, STDERR_LOG, STDOUT_LOG
from ._process import build_argv, build_env, start_ticks
from ._reserve import StateReserve
from ._spec import LaunchSpec
from ._timeutil import format_ts, now_ts

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: a detached supervisor imports this before its spawn
if TYPE_CHECKING:
    from typing import Any

#: ``reason`` of a job whose directory was renamed or replaced (by whoever can write to the
#: root) before its workload started: nothing is run for it.
DIR_MOVED = "job_directory_moved"
#: A detached supervisor notes every ``HEARTBEAT`` seconds that its workload still runs
#: (see :func:`bound_stop`).
HEARTBEAT = 0.25
#: ``time.monotonic()`` of the last SIGCONT the detached supervisor received.
_resumed_at: list[float] = []
_READ_CHUNK = 1 << 20
_BATCH_LIMIT = 4 << 20
_F_SETPIPE_SZ = 1031


class OutputPipe:
    """The read end of one output pipe, drained without blocking."""

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self.read_fd, self.write_fd = os.pipe()
        with contextlib.suppress(OSError):
            fcntl.fcntl(self.read_fd, _F_SETPIPE_SZ, _READ_CHUNK)
        os.set_blocking(self.read_fd, False)
        self.at_eof = False

    def read_available(self, writer: LogWriter) -> bool:
        """Move whatever the pipe holds into the logs; False (and ``at_eof``) at end of file."""
        chunks: list[bytes] = []
        size = 0
        while size < _BATCH_LIMIT:
            try:
                data = os.read(self.read_fd, _READ_CHUNK)
            except BlockingIOError:
                break
            except OSError:
                self.at_eof = True
                break
            if not data:
                self.at_eof = True
                break
            chunks.append(data)
            size += len(data)
        if chunks:
            writer.write(self.stream, chunks[0] if len(chunks) == 1 else b"".join(chunks))
        return not self.at_eof

    async def pump(self, writer: LogWriter, on_data: Callable[[], None] | None = None) -> None:
        """Stream the pipe into the logs until end of file (event-loop driver); ``on_data``
        runs after each chunk is in the logs."""
        import anyio

        while not self.at_eof:
            await anyio.wait_readable(self.read_fd)
            self.read_available(writer)
            if on_data is not None:
                on_data()

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
        self,
        argv: list[str],
        *,
        stdin: int,
        stdout: int,
        stderr: int,
        cwd: str | None,
        env: dict[str, str] | None,
        sole: bool = False,
    ) -> None:
        #: Descriptors held for the detached supervisor's event loop (``_spawn.hold_room``).
        self.room: list[int] = []
        # Either way the workload gets its own process group (signals reach the whole tree),
        # not its own session: ``setsid`` also creates a scheduler autogroup, which costs
        # 3-30 ms per spawn on a busy machine against ~0.4 ms for ``setpgid``. A detached
        # supervisor is a session leader already, so a CLI job is off the caller's terminal.
        if sole:  # a detached supervisor: see _spawn
            from ._spawn import hold_room, spawn

            self._popen: Any = None
            self.room = hold_room()
            try:
                self.pid = spawn(argv, stdin=stdin, stdout=stdout, stderr=stderr, cwd=cwd, env=env)
            except BaseException:
                self.release_room()
                raise
        else:
            import subprocess

            self._popen = subprocess.Popen(
                argv, stdin=stdin, stdout=stdout, stderr=stderr, cwd=cwd, env=env, process_group=0
            )
            self.pid = self._popen.pid
        self.returncode: int | None = None
        #: ``time.monotonic()`` when the exit was collected (or when it happened, if
        #: ``exit_from_scheduler``: see :func:`exit_age`).
        self.exited_clock: float | None = None
        self.collected_clock: float | None = None
        self.exit_from_scheduler = False
        try:
            self.pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):
            self.pidfd = -1

    def release_room(self) -> None:
        for fd in self.room:
            os.close(fd)
        self.room.clear()

    def reap(self) -> bool:
        """Collect the exit status if the process has exited (never blocks)."""
        if self.returncode is not None:
            return True
        age = None
        if _resumed_at:  # the supervisor has been stopped: when did the exit really happen?
            if os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
                return False
            age = exit_age(self.pid)
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        if pid == 0:
            return False
        self.collected_clock = time.monotonic()
        self.exited_clock = self.collected_clock - (age or 0.0)
        self.exit_from_scheduler = age is not None
        self.returncode = os.waitstatus_to_exitcode(status)
        if self._popen is not None:  # reaped here: Popen must not wait for it again
            self._popen.returncode = self.returncode
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1
        return True

    async def wait(self) -> int:
        """Wait for the exit and reap; returns the exit code, or ``-signal``."""
        import anyio

        while not self.reap():
            if self.pidfd >= 0:
                await anyio.wait_readable(self.pidfd)
            else:
                await anyio.sleep(0.05)
        assert self.returncode is not None
        return self.returncode


class Started:
    """A spawned workload with its pipes and log writer, ready to be supervised.

    (A plain class, not a dataclass: importing ``dataclasses`` costs a detached
    supervisor milliseconds before it can spawn.)
    """

    __slots__ = ("clock", "identity", "last_alive", "pipes", "process", "reserve", "started_at", "writer")

    def __init__(
        self,
        process: Workload,
        pipes: list[OutputPipe],
        writer: LogWriter,
        started_at: str,
        clock: float,
        reserve: StateReserve,
        identity: WorkloadIdentity,
    ) -> None:
        self.process = process
        self.pipes = pipes
        self.writer = writer
        self.started_at = started_at
        self.clock = clock
        self.reserve = reserve
        self.identity = identity
        #: The heartbeat: ``time.monotonic()`` when the workload was last seen running.
        self.last_alive: float | None = None

    def duration_ms(self) -> int:
        """Spawn to the collected exit (or to now, if it has not exited)."""
        end = self.process.exited_clock if self.process.exited_clock is not None else time.monotonic()
        return int((end - self.clock) * 1000)

    def close_pipes(self) -> None:
        for pipe in self.pipes:
            pipe.close()


_DEVNULL: list[int] = []


def _devnull() -> int:
    """One ``/dev/null`` descriptor for every workload's stdin (``subprocess.DEVNULL``
    opens and closes one per spawn)."""
    if not _DEVNULL:
        _DEVNULL.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
    return _DEVNULL[0]


def failed_state(spec: LaunchSpec, started_at: str, reason: str) -> JobState:
    now = now_ts()
    return JobState(
        job_id=spec.job_id,
        status=JobStatus.FAILED,
        updated_at=now,
        started_at=started_at,
        finished_at=now,
        reason=reason,
    )


def describe_spawn_error(exc: OSError, spec: LaunchSpec) -> str:
    if spec.cwd is not None and not os.path.isdir(spec.cwd):
        return f"spawn_failed: working directory does not exist: {spec.cwd}"
    return f"spawn_failed: {exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")


def _inherits_unchanged(spec: LaunchSpec) -> bool:
    """The workload gets exactly this process's environment: let ``exec`` pass it on
    (``env=None``) rather than copy and re-encode ``os.environ`` for every job."""
    return (
        spec.inherit_env
        and spec.base_env is None
        and not spec.env_files
        and not spec.env_pairs
        and "PATH" in os.environ
    )


def start_workload(spec: LaunchSpec, *, sole: bool = False) -> Started | str:
    """Open the logs, spawn the workload and record it ``running`` with its pid (blocking
    work, run in a worker thread or before the event loop exists).

    ``sole``: this process exists for this workload alone (a detached supervisor before
    its event loop), so it may spawn the way :mod:`~agent_exec._spawn` does.

    Returns the running workload with its pipes, or the ``reason`` it could not start.
    """
    try:
        job_dir = spec.handle()
    except OSError as exc:
        return f"{DIR_MOVED}: {spec.job_dir}: {exc.strerror or exc}"
    if not job_dir.in_place():
        return f"{DIR_MOVED}: {spec.job_dir} was moved or replaced before the workload started"
    reserve = StateReserve(job_dir)
    try:
        fd = job_dir.fd
        writer = LogWriter((fd, STDOUT_LOG), (fd, STDERR_LOG), spec.full_log or (fd, FULL_LOG))
    except OSError as exc:
        reserve.release()
        return f"spawn_failed: cannot open the logs: {exc.strerror or exc}"
    pipes: list[OutputPipe] = []
    try:
        for stream in ("stdout", "stderr"):
            pipes.append(OutputPipe(stream))  # noqa: PERF401 - keep what opened
    except OSError as exc:
        for pipe in pipes:
            pipe.close()
        writer.close()
        reserve.release()
        return f"spawn_failed: {exc.strerror or exc}"
    stdin_fd: int | None = None
    try:
        env: dict[str, str] | None = None
        if not _inherits_unchanged(spec):
            env = build_env(
                inherit=spec.inherit_env,
                env_files=spec.env_files,
                env_pairs=spec.env_pairs,
                base=spec.base_env,
            )
            if "PATH" not in env:
                env["PATH"] = os.defpath
        if spec.stdin_file is not None:
            if os.path.isabs(spec.stdin_file):
                stdin_fd = os.open(spec.stdin_file, os.O_RDONLY | os.O_CLOEXEC)
            else:
                stdin_fd = job_dir.open_file(spec.stdin_file, os.O_RDONLY)
        started_at = now_ts()
        started_clock = time.monotonic()
        process = Workload(
            build_argv(spec.wrapper, spec.command),
            stdin=stdin_fd if stdin_fd is not None else _devnull(),
            stdout=pipes[0].write_fd,
            stderr=pipes[1].write_fd,
            cwd=spec.cwd,
            env=env,
            sole=sole,
        )
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        writer.close()
        reserve.release()
        for pipe in pipes:
            pipe.close()
        if isinstance(exc, OSError):
            return describe_spawn_error(exc, spec)
        return f"spawn_failed: {exc}"
    finally:
        if stdin_fd is not None:
            os.close(stdin_fd)
    for pipe in pipes:
        pipe.close_write_end()
    identity = WorkloadIdentity(pid=process.pid, pgid=process.pid, start_ticks=start_ticks(process.pid))
    with contextlib.suppress(OSError):  # informational; the terminal record is what counts
        reserve.write_record(
            job_dir,
            JobState(
                job_id=spec.job_id,
                status=JobStatus.RUNNING,
                updated_at=started_at,
                started_at=started_at,
                pid=process.pid,
                workload=identity,
            ),
        )
    return Started(process, pipes, writer, started_at, started_clock, reserve, identity)


def note_resumed(signum: int, frame: object) -> None:
    """SIGCONT handler of the detached supervisor: it has just been stopped."""
    _resumed_at[:] = [time.monotonic()]


def _exec_start_ms(path: str) -> float | None:
    try:
        with open(path, "rb") as file:
            for line in file:
                if line.startswith(b"se.exec_start"):
                    return float(line.split(b":", 1)[1])
    except (OSError, ValueError):
        pass
    return None


def exit_age(pid: int) -> float | None:
    """Seconds since the exited, not yet reaped, process ``pid`` last ran: when it exited.

    The scheduler records when each task last got the CPU (``se.exec_start`` in
    ``/proc/<pid>/sched``, kernels with scheduler debugging); compared with the same field
    of the running thread, in the same clock. ``None`` if the kernel does not say.
    """
    then = _exec_start_ms(f"/proc/{pid}/sched")
    cpu = _last_cpu(pid)
    if then is None or cpu is None:
        return None
    # Each CPU's task clock has its own offset (it leaves out interrupt and steal time):
    # read ours on the CPU the workload last ran on.
    try:
        allowed = os.sched_getaffinity(0)
        if cpu not in allowed:
            return None
        os.sched_setaffinity(0, {cpu})
        try:
            now = _exec_start_ms("/proc/thread-self/sched")
        finally:
            os.sched_setaffinity(0, allowed)
    except OSError:
        return None
    if now is None or now < then:
        return None
    return (now - then) / 1000


def _last_cpu(pid: int) -> int | None:
    """The CPU ``pid`` last ran on (``/proc/<pid>/stat`` field 39)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            raw = file.read()
        return int(raw[raw.rindex(b")") + 2 :].split()[36])
    except (OSError, ValueError, IndexError):
        return None


def bound_stop(state: JobState, started: Started) -> None:
    """Keep time the supervisor spent stopped out of ``duration_ms``/``finished_at``.

    Linux records when an exit is collected, not when it happened. If the supervisor was
    stopped (a SIGCONT came) after the last heartbeat that saw the workload running, the
    exit happened while it was stopped: its time comes from the scheduler when the kernel
    tells (:func:`exit_age`; then exact to a few milliseconds); otherwise the heartbeat is
    recorded as the end, with the gap as ``supervisor_stopped_ms`` (the workload ended at
    most that much later).
    """
    process = started.process
    exited, collected, alive = process.exited_clock, process.collected_clock, started.last_alive
    if exited is None or collected is None or alive is None or not _resumed_at or _resumed_at[0] < alive:
        return
    if process.exit_from_scheduler and exited >= alive:
        state.finished_at = format_ts(time.time() - (time.monotonic() - exited))
        return
    state.duration_ms = max(0, int((alive - started.clock) * 1000))
    state.finished_at = format_ts(time.time() - (time.monotonic() - alive))
    state.supervisor_stopped_ms = int((collected - alive) * 1000)


def apply_output_drops(state: JobState, writer: LogWriter) -> None:
    """Record in ``state`` what the logs could not take (``output_dropped_bytes``, ``reason``)."""
    drops = writer.drops
    reason = drops.reason()
    if reason is None:
        return
    state.output_dropped_bytes = drops.raw_bytes or None
    state.reason = reason if state.reason is None else f"{state.reason}; {reason}"


def exit_state(
    job_id: str,
    started_at: str,
    pid: int | None,
    returncode: int,
    duration_ms: int,
    *,
    timed_out: bool = False,
) -> JobState:
    """The terminal record of a workload that exited (``exited``) or died of a signal (``killed``)."""
    now = now_ts()
    state = JobState(
        job_id=job_id,
        status=JobStatus.EXITED,
        updated_at=now,
        started_at=started_at,
        exit_code=returncode,
        duration_ms=duration_ms,
        pid=pid,
        finished_at=now,
    )
    if returncode < 0:
        state.status = JobStatus.KILLED
        state.exit_code = None
        state.signal = str(-returncode)
    if timed_out:
        state.reason = "timeout"
    return state


def drive_until_ready(started: Started, ready_fd: int) -> int | None:
    """Stream output and watch for the exit synchronously until ``ready_fd`` becomes
    readable (the event loop is available) or the workload has finished.

    Returns the exit code once the workload exited and every pipe reached end of file;
    ``None`` if the event loop is ready first (the caller then adopts the workload, and its
    bounded drain deals with descendants that keep the pipes open).
    """
    process = started.process
    # ``select.poll`` itself: ``selectors`` costs a detached supervisor an import before
    # its spawn. Any event counts as readable: a pipe at end of file reports POLLHUP only.
    poller = select.poll()
    watched: dict[int, OutputPipe | str] = {}
    for pipe in started.pipes:
        watched[pipe.read_fd] = pipe
    if process.pidfd >= 0:
        watched[process.pidfd] = "exit"
    watched[ready_fd] = "ready"
    for fd in watched:
        poller.register(fd, select.POLLIN)
    timeout_ms = int((HEARTBEAT if process.pidfd >= 0 else 0.01) * 1000)
    while True:
        if not process.reap():
            started.last_alive = time.monotonic()
        elif all(pipe.at_eof for pipe in started.pipes):
            return process.returncode
        for fd, _ in poller.poll(timeout_ms):
            what = watched[fd]
            if what == "ready":
                return None
            if what == "exit":
                poller.unregister(fd)
                process.reap()
            elif isinstance(what, OutputPipe) and not what.read_available(started.writer):
                poller.unregister(fd)
