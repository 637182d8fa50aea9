"""The detached supervisor process: what runs after :meth:`~agent_exec._launch.Supervisor.prefork`
(or ``python -m agent_exec._launch``) has forked it.

It receives its job over the hand-over socket, starts the workload at once and streams its
output synchronously while anyio loads in a thread (the head start), then lets the async
:func:`~agent_exec._supervisor.supervise` adopt the workload. Whatever fails after the
spawn, the workload is never left behind (:func:`_give_up`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading

from ._launch import HEADER_SIZE, _read_exact, _recv_with_fds

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: imported before anyio warms up, keep it light
if TYPE_CHECKING:
    import _socket
    from typing import Any

    from ._models import JobState, WorkloadIdentity
    from ._spec import LaunchSpec
    from ._workload import Started


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
        # (Python ignores it already; keep it so even if something reset it), nor a log
        # growing past ``ulimit -f`` by SIGXFSZ: the write fails instead and is counted.
        # (The workload gets both back at their defaults: Popen's ``restore_signals``.)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

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

    def started(self, value: WorkloadIdentity | int | None = None) -> None:
        """``task_status.started`` of :func:`~agent_exec._supervisor.supervise` (the
        workload's identity), or the workload's pid."""
        self.pid = value if value is None or isinstance(value, int) else value.pid
        if value is not None:
            for signum in self.pending:
                self._forward(signum)
        self.pending.clear()


def supervisor_main(sock: _socket.socket) -> None:
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
    from ._workload import note_resumed

    signal.signal(signal.SIGCONT, note_resumed)  # time spent stopped is not the workload's

    ready_r, ready_w = os.pipe()
    spawned = threading.Event()
    wanted = threading.Event()  # the main thread waits for the event loop now
    warm_up: list[str] = []  # the process title, once the job is known
    warming = _start_warm_up(ready_w, (spawned, wanted), warm_up)
    try:
        header, fds = _recv_with_fds(sock, HEADER_SIZE, 2)
        if len(header) < HEADER_SIZE:
            header += _read_exact(sock, HEADER_SIZE - len(header))
        spec = LaunchSpec.from_json(_read_exact(sock, int.from_bytes(header, "big")))
        if len(fds) > 1:  # the job directory, held by descriptor since the launcher made it
            from ._jobdir import JobDir

            spec.dir = JobDir(spec.job_dir.parent, spec.job_dir.name, fds[1])
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
    title = f"agent-exec _supervise --job-id {spec.job_id} --supervise-root {spec.job_dir.parent}"
    warm_up.append(title)
    if warming is None:  # no thread to spare (process limit): load the event loop inline
        _warm_up(ready_w, None, warm_up)
    holder: list[Any] = []
    try:
        _run_job(spec, relay, lock_fd, ready_r, holder, (spawned, wanted), warming)
    except BaseException as exc:
        _give_up(spec, relay, holder[0] if holder else None, lock_fd, exc)


#: How long the event loop's import waits after the spawn, unless it is wanted sooner.
WARM_UP_DELAY = 0.1

#: The warm-up's cues: the workload was spawned; the main thread now waits for the loop.
_Cues = tuple[threading.Event, threading.Event]


def _warm_up(ready_w: int, cues: _Cues | None, title: list[str]) -> None:
    """Set the process title and load the event loop, once the workload is spawned and
    has run for :data:`WARM_UP_DELAY` (or as soon as the main thread waits for the loop).

    The main thread has the GIL to itself meanwhile: from the hand-over to the spawn
    (importing anyio then doubled that step, the critical path of ``run``; and
    ``setproctitle`` imports ``logging``), and while a short job runs and is recorded
    (each of the main thread's wake-ups otherwise waits for a switch interval, which
    made streaming, reaping and the terminal write of ``run -- true`` ~4 ms slower). A
    longer job loses nothing: its output is streamed synchronously until the loop is up.
    """
    try:
        if cues is not None:
            spawned, wanted = cues
            spawned.wait()
            wanted.wait(WARM_UP_DELAY)
        _set_title(title)
        import anyio._backends._asyncio  # noqa: F401 - what anyio.run needs

        from . import _supervisor  # noqa: F401
    except BaseException:
        pass
    finally:
        os.write(ready_w, b"r")


def _set_title(title: list[str]) -> None:
    if not title:
        return  # the launcher gave up: no job
    try:
        import setproctitle

        setproctitle.setproctitle(title[0])
    except Exception:  # cosmetic; never fail a job over it
        pass


def _start_warm_up(ready_w: int, cues: _Cues, title: list[str]) -> threading.Thread | None:
    """Import anyio in a thread (cued by ``cues``); ``None`` if no thread could be started.

    The thread is started before the job arrives, so that a process limit is known (and
    the event loop loaded inline) before anything is spawned.
    """
    sys.setswitchinterval(0.0005)  # hand the GIL back quickly while the import thread runs
    try:
        args = (ready_w, cues, title)
        thread = threading.Thread(target=_warm_up, args=args, name="warm-up", daemon=True)
        thread.start()
    except RuntimeError:
        return None
    return thread


def _run_job(
    spec: LaunchSpec,
    relay: _SignalRelay,
    lock_fd: int | None,
    ready_r: int,
    holder: list[Any],
    cues: _Cues,
    warming: threading.Thread | None,
) -> None:
    from . import _workload

    spawned, wanted = cues
    started = None
    if not _matches_output(spec):
        try:
            outcome = _workload.start_workload(spec, sole=True)
        finally:
            spawned.set()
        if isinstance(outcome, str):
            # Recorded at once, without the event loop: loading it may be what fails
            # (descriptor limits), and the reason must not become ``supervisor_lost``.
            from ._store import write_state

            state = _workload.failed_state(spec, _now(), outcome)
            write_state(spec.handle(), state)
            if lock_fd is not None:
                os.close(lock_fd)
            if _silent(spec):
                _yield_cpu(warming)
            _load_loop(spec, ready_r, wanted, None).run(_after_job, spec, state)
            return
        started = outcome
        holder.append(started)
        relay.started(started.process.pid)
        returncode = _workload.drive_until_ready(started, ready_r)
        if returncode is not None:
            state = _finish_now(spec, started, returncode, lock_fd)
            holder.clear()
            relay.finished()
            if _silent(spec):
                _yield_cpu(warming)
            _load_loop(spec, ready_r, wanted, started).run(_after_job, spec, state)
            return
    spawned.set()
    anyio = _load_loop(spec, ready_r, wanted, started)
    anyio.run(_supervise_and_collect, relay, spec, lock_fd, started)


def _load_loop(spec: LaunchSpec, ready_r: int, wanted: threading.Event, started: Started | None) -> Any:
    """Wait for the warm-up (asking for it now), give the event loop the descriptors held
    for it since the spawn (see ``_spawn.hold_room``), and return ``anyio`` (imported here
    if the warm-up could not)."""
    wanted.set()
    os.read(ready_r, 1)
    if started is not None:
        started.process.release_room()
    _full_paths(spec)
    import anyio

    return anyio


def _full_paths(spec: LaunchSpec) -> None:
    """The job directory as a ``Path`` for the event-loop side (notifier, supervisor,
    auto-GC), now that loading the event loop has loaded ``pathlib``. Until the spawn it is
    a :class:`~agent_exec._paths.RootPath` (``LaunchSpec.from_json``): importing
    ``pathlib`` cost milliseconds between the fork and the hand-over, the critical path of
    ``run``."""
    from pathlib import Path

    spec.job_dir = Path(spec.job_dir)


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
    from ._process import group_alive
    from ._store import read_state_raw, write_state

    reason = f"supervisor_error: {_describe(exc)}"
    identity = started.identity if started is not None else None
    try:
        recorded = read_state_raw(spec.handle())
        if recorded.is_terminal:
            return  # recorded (and reaped) already: the failure came later
        identity = identity or recorded.workload
    except Exception:
        pass
    pid = relay.pid
    returncode: int | None = None
    if pid is not None:
        # Once reaped, the pid may be reused: signal the group only while it provably is ours.
        if identity is None or group_alive(identity.pgid, identity.start_ticks) is not False:
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
            started.reserve.write_state(spec.handle(), state)
        else:
            write_state(spec.handle(), state)
    if lock_fd is not None:
        with contextlib.suppress(OSError):
            os.close(lock_fd)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror + (f": {exc.filename}" if exc.filename is not None else "")
    if isinstance(exc, RuntimeError) and "can't start new thread" in str(exc):
        return "cannot start a thread (process limit)"
    return f"{type(exc).__name__}: {exc}"


def _matches_output(spec: LaunchSpec) -> bool:
    """Output matching needs the per-line hook from the first line: no head start then.

    Decided from the definition handed over with the job, never from a file on disk.
    """
    notification = (spec.meta or {}).get("notification")
    return isinstance(notification, dict) and notification.get("on_output_match") is not None


def _finish_now(spec: LaunchSpec, started: Started, returncode: int, lock_fd: int | None) -> JobState:
    """Terminal record of a workload that finished during the head start: logs complete
    first, then the state, then the lock (exactly the async supervisor's order)."""
    from ._workload import apply_output_drops, bound_stop, exit_state

    started.writer.close()
    started.close_pipes()
    state = exit_state(
        spec.job_id, started.started_at, started.process.pid, returncode, started.duration_ms()
    )
    state.workload = started.identity
    bound_stop(state, started)
    apply_output_drops(state, started.writer)
    started.reserve.write_state_patiently(spec.handle(), state)
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


def _silent(spec: LaunchSpec) -> bool:
    """Does the definition handed over ask for no completion notification? (``notify
    set`` may still add one later: it is then delivered, only at a lower priority.)"""
    notification = (spec.meta or {}).get("notification")
    return not isinstance(notification, dict) or (
        notification.get("notify_command") is None and notification.get("notify_file") is None
    )


def _yield_cpu(*threads: threading.Thread | None) -> None:
    """Lower this thread's priority (and that of ``threads`` still running) to ``nice`` 10
    at least.

    Called once the job is finished (logs, state and lock are final): what is left (the
    completion notification, the auto-GC, loading the event loop for them) is
    housekeeping that nobody waits for, and it must not slow down the calls an agent
    makes next (``status``, the next ``run``) on a busy machine. Linux sets priorities
    per thread; best effort. (A thread that has ended is skipped: its id may name another
    process some day.)
    """
    tids: list[int | None] = [threading.get_native_id()]
    tids += [thread.native_id for thread in threads if thread is not None and thread.is_alive()]
    for tid in tids:
        if tid is None:
            continue
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, tid, max(10, os.getpriority(os.PRIO_PROCESS, tid)))


def _collect_garbage(spec: LaunchSpec) -> None:
    if spec.auto_gc is not None:
        _yield_cpu()
        with contextlib.suppress(Exception):
            from ._gc import auto_gc

            auto_gc(spec.job_dir.parent, spec.auto_gc)
