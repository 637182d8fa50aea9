"""Detached supervisors: processes of their own, in their own session, that outlive
whoever launched the job (the CLI exiting, being SIGKILLed, or its terminal going away).

``agent-exec run``/``start`` fork the supervisor at their very first instruction
(:meth:`Supervisor.prefork`), before parsing arguments: while the CLI builds the job
directory, the supervisor imports anyio on the other core, so interpreter start-up is not
paid twice on the critical path. The finished job spec and the locked supervisor lock
are then handed over a socket pair (the lock's file descriptor travels with
``SCM_RIGHTS``). A host running an event loop cannot fork safely; it execs
``python -m agent_exec._launch`` instead (:func:`exec_argv`), which speaks the same
protocol. Either way the supervisor is re-parented to init: nobody has to reap it.

This module imports only the standard library, so forking early costs ~1 ms.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import sys
import threading

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: this module runs before the fork, keep it light
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from ._models import JobState
    from ._spec import LaunchSpec
    from ._workload import Started

_HEADER = struct.Struct("!Q")
#: How long the launcher waits for the supervisor to acknowledge its job.
HAND_OVER_TIMEOUT = 60.0


def _read_exact(sock: socket.socket, size: int) -> bytes:
    chunks: list[bytes] = []
    while size > 0:
        chunk = sock.recv(min(size, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _detach_stdio(keep: int) -> None:
    """Never hold the caller's terminal or pipes: a ``run | jq`` must see EOF at once."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for target in (0, 1, 2):
        os.dup2(devnull, target)
    os.close(devnull)
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        fds = list(range(3, 256))
    for fd in fds:
        if fd > 2 and fd != keep:
            with contextlib.suppress(OSError):
                os.close(fd)


class _SignalRelay:
    """Passes termination signals sent to the supervisor on to the workload's process group.

    ``kill`` signals the pid recorded in ``state.json``, which is the supervisor's until the
    workload is spawned (supervisor.md §8.2), and an operator may signal the supervisor
    directly. Dying of it would orphan the workload with nobody draining its pipes and the
    job ``supervisor_lost``; instead the signal goes where it was meant to go, and the
    supervisor records the outcome. A signal arriving before the spawn is held back and
    delivered right after it. (Python handlers are reset to the default by ``exec``, so the
    workload itself is unaffected.)
    """

    #: Every catchable signal whose default action would end the supervisor (``kill
    #: --signal usr1`` may reach it before the workload is recorded). SIGKILL and SIGSTOP
    #: cannot be caught: ``kill`` waits for the workload's record before sending those.
    SIGNALS = (
        signal.SIGTERM,
        signal.SIGINT,
        signal.SIGHUP,
        signal.SIGQUIT,
        signal.SIGUSR1,
        signal.SIGUSR2,
        signal.SIGALRM,
        signal.SIGVTALRM,
        signal.SIGPROF,
        signal.SIGXCPU,
        signal.SIGPOLL,
    )

    def __init__(self) -> None:
        self.pid: int | None = None
        self.pending: list[int] = []

    def install(self) -> None:
        for signum in self.SIGNALS:
            signal.signal(signum, self._on_signal)
        # A workload that closes its output early must not kill the supervisor by SIGPIPE
        # (Python ignores it already; keep it so even if something reset it).
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)

    def _forward(self, signum: int) -> None:
        assert self.pid is not None
        with contextlib.suppress(OSError):
            os.killpg(self.pid, signum)

    def _on_signal(self, signum: int, frame: object) -> None:
        if self.pid is None:
            self.pending.append(signum)
        else:
            self._forward(signum)

    def finished(self) -> None:
        """The workload was reaped: its pid must never be signalled again (it may be reused)."""
        self.pid = None

    def started(self, value: int | None = None) -> None:
        """``task_status.started`` of :func:`~agent_exec._supervisor.supervise`: the workload pid."""
        self.pid = value
        if value is not None:
            for signum in self.pending:
                self._forward(signum)
        self.pending.clear()


def supervisor_main(sock: socket.socket) -> None:
    """The supervisor process: receive a job, supervise it, then auto-GC.

    Importing anyio and asyncio costs several interpreter start-ups, so it happens in a
    thread while this one receives the job and starts the workload at once, streaming
    its output synchronously (``_workload.drive_until_ready``). A job that finishes before
    the event loop is even loaded is finished right here; otherwise the async supervisor
    adopts the running workload.

    The hand-over is a two-step handshake: this process acknowledges the job (``k``), the
    launcher records it ``running`` and says go (``g``). Anything else, an end of file
    included, means the launcher gave up: the workload is never started. Once it is, no
    failure of this process may leave it behind: :func:`_give_up` kills and reaps the
    workload's group and records why.
    """
    relay = _SignalRelay()
    relay.install()
    from ._spec import LaunchSpec

    ready_r, ready_w = os.pipe()
    warming = _start_warm_up(ready_w)
    try:
        header, fds, _, _ = socket.recv_fds(sock, _HEADER.size, 1)
        if len(header) < _HEADER.size:
            header += _read_exact(sock, _HEADER.size - len(header))
        spec = LaunchSpec.from_json(_read_exact(sock, _HEADER.unpack(header)[0]))
    except (EOFError, OSError, ValueError):
        return  # the launcher gave up before handing over a job
    lock_fd = fds[0] if fds else None
    try:
        sock.sendall(b"k")
        go = sock.recv(1)
    except OSError:
        go = b""
    sock.close()
    if go != b"g":  # the launcher failed after the hand-over: no job, nothing started
        if lock_fd is not None:
            os.close(lock_fd)
        return
    try:
        import setproctitle

        setproctitle.setproctitle(
            f"agent-exec _supervise --job-id {spec.job_id} --supervise-root {spec.job_dir.parent}"
        )
    except Exception:  # cosmetic; never fail a job over it
        pass
    if not warming:  # no thread to spare (process limit): load the event loop inline
        _warm_up(ready_w)
    holder: list[Any] = []
    try:
        _run_job(spec, relay, lock_fd, ready_r, holder)
    except BaseException as exc:
        _give_up(spec, relay, holder[0] if holder else None, lock_fd, exc)


def _warm_up(ready_w: int) -> None:
    try:
        import anyio._backends._asyncio  # noqa: F401 - what anyio.run needs

        from . import _supervisor  # noqa: F401
    except BaseException:
        pass
    finally:
        os.write(ready_w, b"r")


def _start_warm_up(ready_w: int) -> bool:
    """Import anyio in a thread; False if no thread could be started."""
    sys.setswitchinterval(0.0005)  # hand the GIL back quickly while the import thread runs
    try:
        threading.Thread(target=_warm_up, args=(ready_w,), name="warm-up", daemon=True).start()
    except RuntimeError:
        return False
    return True


def _run_job(
    spec: LaunchSpec, relay: _SignalRelay, lock_fd: int | None, ready_r: int, holder: list[Any]
) -> None:
    from . import _workload
    from ._store import read_meta

    started = None
    if not _matches_output(spec, read_meta):
        outcome = _workload.start_workload(spec)
        if isinstance(outcome, str):
            # Recorded at once, without the event loop: loading it may be what fails
            # (descriptor limits), and the reason must not become ``supervisor_lost``.
            from ._store import write_state

            state = _workload.failed_state(spec, _now(), outcome)
            write_state(spec.job_dir, state)
            if lock_fd is not None:
                os.close(lock_fd)
            os.read(ready_r, 1)
            import anyio

            anyio.run(_after_job, spec, state)
            return
        started = outcome
        holder.append(started)
        relay.started(started.process.pid)
        returncode = _workload.drive_until_ready(started, ready_r)
        if returncode is not None:
            state = _finish_now(spec, started, returncode, lock_fd)
            holder.clear()
            relay.finished()
            os.read(ready_r, 1)
            import anyio

            anyio.run(_after_job, spec, state)
            return
    os.read(ready_r, 1)
    import anyio

    anyio.run(_supervise_and_collect, relay, spec, lock_fd, started)


def _now() -> str:
    from ._timeutil import now_ts

    return now_ts()


def _give_up(
    spec: LaunchSpec, relay: _SignalRelay, started: Started | None, lock_fd: int | None, exc: BaseException
) -> None:
    """The supervisor cannot go on: kill and reap the workload's group, record why.

    Nothing is written over a terminal record (the failure may come after it, e.g. in a
    notification or the auto-GC).
    """
    from . import _workload
    from ._store import read_state_raw, write_state

    reason = f"supervisor_error: {_describe(exc)}"
    try:
        if read_state_raw(spec.job_dir).is_terminal:
            return  # recorded (and reaped) already: the failure came later
    except Exception:
        pass
    pid = relay.pid
    returncode: int | None = None
    if pid is not None:
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
        if started is not None and started.process.returncode is not None:
            returncode = started.process.returncode
        else:
            with contextlib.suppress(OSError):
                _, status = os.waitpid(pid, 0)
                returncode = os.waitstatus_to_exitcode(status)
    if started is not None:
        for pipe in started.pipes:
            with contextlib.suppress(Exception):
                if not pipe.at_eof:
                    pipe.read_available(started.writer)
        with contextlib.suppress(Exception):
            started.writer.close()
    if returncode is not None and started is not None:
        state = _workload.exit_state(spec.job_id, started.started_at, pid, returncode, started.duration_ms())
        _workload.apply_output_drops(state, started.writer)
        state.workload = started.identity
        state.reason = reason if state.reason is None else f"{state.reason}; {reason}"
    else:
        state = _workload.failed_state(spec, started.started_at if started else _now(), reason)
        state.pid = pid
    with contextlib.suppress(Exception):
        if started is not None:
            started.reserve.write_state(spec.job_dir, state)
        else:
            write_state(spec.job_dir, state)
    if lock_fd is not None:
        with contextlib.suppress(OSError):
            os.close(lock_fd)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror + (f": {exc.filename}" if exc.filename is not None else "")
    if isinstance(exc, RuntimeError) and "can't start new thread" in str(exc):
        return "cannot start a thread (process limit)"
    return f"{type(exc).__name__}: {exc}"


def _matches_output(spec: LaunchSpec, read_meta: Callable[..., Any]) -> bool:
    """Output matching needs the per-line hook from the first line: no head start then."""
    try:
        notification = read_meta(spec.job_dir).notification
    except Exception:
        return False
    return notification is not None and notification.on_output_match is not None


def _finish_now(spec: LaunchSpec, started: Started, returncode: int, lock_fd: int | None) -> JobState:
    """Terminal record of a workload that finished during the head start: logs complete
    first, then the state, then the lock (exactly the async supervisor's order)."""
    from ._workload import apply_output_drops, exit_state

    started.writer.close()
    started.close_pipes()
    state = exit_state(
        spec.job_id, started.started_at, started.process.pid, returncode, started.duration_ms()
    )
    state.workload = started.identity
    apply_output_drops(state, started.writer)
    started.reserve.write_state_patiently(spec.job_dir, state)
    if lock_fd is not None:
        os.close(lock_fd)
    return state


async def _after_job(spec: LaunchSpec, state: JobState) -> None:
    """Completion notifications and auto-GC of a job finished during the head start."""
    from ._notify import Notifier

    await Notifier(spec).completion(state)
    _collect_garbage(spec)


async def _supervise_and_collect(
    relay: _SignalRelay, spec: LaunchSpec, lock_fd: int | None, started: Started | None
) -> None:
    from ._supervisor import supervise

    await supervise(spec, lock_fd=lock_fd, started=started, stop_aware=True, task_status=relay)
    relay.finished()
    _collect_garbage(spec)


def _collect_garbage(spec: LaunchSpec) -> None:
    if spec.auto_gc is not None:
        with contextlib.suppress(Exception):
            from ._gc import auto_gc

            auto_gc(spec.job_dir.parent, spec.auto_gc)


class Supervisor:
    """The launcher's handle on a detached supervisor process that awaits its job."""

    def __init__(self, sock: socket.socket, pid: int) -> None:
        self._sock = sock
        self.pid = pid

    @classmethod
    def prefork(cls) -> Supervisor:
        """Fork (twice, with ``setsid``) a supervisor that warms up and waits for a job.

        Call only from a single-threaded process.
        """
        parent_sock, child_sock = socket.socketpair()
        pid_r, pid_w = os.pipe()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        try:
            child = os.fork()
        except OSError as exc:
            for fd in (pid_r, pid_w):
                os.close(fd)
            parent_sock.close()
            child_sock.close()
            raise _cannot_start(exc.errno) from None
        if child == 0:  # pragma: no cover - runs in the forked children
            status = 1
            try:
                parent_sock.close()
                os.close(pid_r)
                os.setsid()
                try:
                    grandchild = os.fork()
                except OSError as exc:
                    os.write(pid_w, b"!%d" % (exc.errno or 0))
                    raise
                if grandchild == 0:
                    try:
                        os.close(pid_w)
                        _detach_stdio(child_sock.fileno())
                        supervisor_main(child_sock)
                        status = 0
                    finally:
                        os._exit(status)
                os.write(pid_w, str(grandchild).encode())
                status = 0
            finally:
                os._exit(status)
        child_sock.close()
        os.close(pid_w)
        try:
            os.waitpid(child, 0)
            raw = b""
            while chunk := os.read(pid_r, 64):
                raw += chunk
        finally:
            os.close(pid_r)
        if not raw.isdigit():
            parent_sock.close()
            raise _cannot_start(int(raw[1:]) if raw[1:].isdigit() else None)
        return cls(parent_sock, int(raw))

    def hand_over(self, spec: LaunchSpec, lock_fd: int, on_handed_over: Callable[[int], None]) -> int:
        """Give the supervisor its job and the locked lock fd; return its pid.

        All or nothing: the supervisor acknowledges the job, ``on_handed_over(pid)`` writes
        the launcher's ``running`` record, and only then is the supervisor told to start
        the workload. If anything before that fails, the supervisor exits without starting
        it and the error is raised here (an :class:`~agent_exec.IoError` for OS failures).
        """
        from ._errors import IoError

        payload = spec.to_json()
        try:
            try:
                socket.send_fds(self._sock, [_HEADER.pack(len(payload))], [lock_fd])
                self._sock.sendall(payload)
                self._sock.settimeout(HAND_OVER_TIMEOUT)
                ack = self._sock.recv(1)
            except OSError as exc:
                raise IoError.from_os(
                    exc, "cannot hand the job to its supervisor", f"(pid {self.pid})"
                ) from None
            if ack != b"k":
                raise _cannot_start(None)
            on_handed_over(self.pid)
            try:
                self._sock.sendall(b"g")
            except OSError as exc:
                raise IoError.from_os(exc, "cannot start the job's supervisor", f"(pid {self.pid})") from None
        finally:
            self._sock.close()
        return self.pid

    def cancel(self) -> None:
        """Tell an unused supervisor to exit (closing the socket does it)."""
        self._sock.close()


#: A supervisor forked ahead of time by the CLI, taken by the next launch.
_preforked: list[Supervisor] = []


def prefork() -> None:
    """Fork a detached supervisor now so it warms up while the caller prepares the job.

    Best effort: if the fork fails (process limit), :func:`take_supervisor` tries again
    and reports the failure as a JSON error.
    """
    try:
        _preforked.append(Supervisor.prefork())
    except Exception:
        pass


def _cannot_start(errno_: int | None) -> Exception:
    import errno

    from ._errors import IoError

    code = errno_ or errno.EAGAIN
    return IoError(f"cannot start the job's supervisor: {os.strerror(code)}", errno_=code)


def take_supervisor() -> Supervisor:
    """The pre-forked supervisor if there is one, else a freshly forked one."""
    return _preforked.pop() if _preforked else Supervisor.prefork()


def exec_argv(fd: int) -> list[str]:
    """The command a host with an event loop runs to get a supervisor on socket ``fd``."""
    return [sys.executable, "-m", "agent_exec._launch", str(fd)]


def main() -> None:  # pragma: no cover - exercised through JobRunner(detached=True)
    """``python -m agent_exec._launch FD``: fork, print the supervisor pid, exit."""
    sock = socket.socket(fileno=int(sys.argv[1]))
    child = os.fork()
    if child:
        sys.stdout.write(f"{child}\n")
        sys.stdout.flush()
        os._exit(0)
    os.setsid()
    _detach_stdio(sock.fileno())
    supervisor_main(sock)
    os._exit(0)


if __name__ == "__main__":  # pragma: no cover
    main()
