"""Notifications: ``job.finished`` completion events and ``job.output.matched`` events.

Both are configured in ``meta.json.notification`` and re-read by the supervisor, so
``notify set`` reaches a running job (supervisor.md §9). The job's definition (command,
cwd, the configuration at launch) comes with the job the supervisor was handed; only the
``notification`` object is re-read, and only through the job directory's descriptor
(``O_NOFOLLOW``, a regular file): a directory renamed away or swapped for a symlink by
whoever can write to the root cannot feed the supervisor a ``meta.json``, and once the
directory is no longer ``<root>/<job_id>`` no sink runs at all (the event's paths would
lead somewhere else).

Output matching
    :meth:`Notifier.attach` hooks the job's :class:`~agent_exec._logs.LogWriter`. Before
    each chunk of output is written the notifier ``stat``\\s ``meta.json`` (about a
    microsecond) and re-parses it only when its inode, size or mtime changed; the
    per-line callback is installed on the writer only while an ``on_output_match``
    configuration exists. A job without one therefore pays one ``stat`` per chunk and
    nothing per line, and a ``notify set`` is seen from the next chunk read after it.
    A ``meta.json`` that cannot be read or parsed keeps the previous configuration.

    Matching happens synchronously in the log pump (after the line is in the logs);
    delivery never does. A match is queued and delivered by :meth:`Notifier.run`, a
    task of its own: command sink, then file sink, then one record (the event plus
    ``delivery_results``) appended to ``<job>/notification_events.ndjson``.

    The queue is bounded in memory (:data:`MAX_QUEUED_BYTES`). A match that finds it
    full is dropped: the job and its logs are unaffected, and the number of dropped
    matches is recorded in ``notification_events.ndjson`` as an extension record
    ``{"schema_version", "event_type": "job.output.dropped", "job_id", "dropped",
    "reason"}``; ``reason`` is ``"queue_full"``, ``"drain_timeout"`` (still undelivered
    when the drain bound below passed) or ``"error"`` (delivery itself broke: a bug).
    These records never go to a sink. Upstream delivers synchronously in the reader
    instead, so a slow sink stalls the job's output; here a slow sink costs events,
    never output. (A pathological regex still costs the pump its matching time:
    Python's ``re`` has no linear-time guarantee, unlike upstream's Rust ``regex``.)

Bounds (beyond upstream, which waits for sinks forever)
    Each command-sink run is bounded: :data:`COMPLETION_TIMEOUT` for ``job.finished``,
    :data:`MATCH_TIMEOUT` per ``job.output.matched``. When the bound passes, the sink's
    process group is SIGKILLed and the result is ``success: false`` with error
    ``timed out after <N>s``. File sinks run in a worker thread under the same bounds
    (a file on a hung network mount is abandoned; a FIFO without a reader fails at
    ``open`` instead of blocking). After the workload exits, :meth:`Notifier.drain`
    gives queued matches at most :data:`DRAIN_TIMEOUT` before the terminal state is
    written. ``AGENT_EXEC_NOTIFY_TIMEOUT`` (seconds, in the supervisor's environment)
    sets the completion bound and caps the two others.

``job.finished`` extensions
    ``state`` may also be ``failed`` (the workload could not be spawned; then
    ``duration_ms`` is 0), and a ``reason`` key (``timeout``, ``spawn_failed: ...``)
    follows the spec's keys when the terminal state has one.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import anyio.lowlevel
import orjson

from ._errors import AgentExecError, StateCorrupt
from ._models import SCHEMA_VERSION, JobMeta, NotificationConfig, OutputMatch
from ._paths import (
    COMPLETION_EVENT_FILE,
    META_FILE,
    NOTIFICATION_EVENTS_FILE,
    STDERR_LOG,
    STDOUT_LOG,
)
from ._process import LIBRARY_SHELL
from ._store import dump_pretty, read_meta
from ._timeutil import now_ts

if TYPE_CHECKING:
    from ._jobdir import JobDir
    from ._logs import LogWriter
    from ._models import JobState
    from ._spec import LaunchSpec

__all__ = ["Notifier", "validate_pattern"]

#: Bound of one ``--notify-command`` run (``job.finished``), in seconds.
COMPLETION_TIMEOUT = 30.0
#: Bound of one output-match command-sink run, in seconds.
MATCH_TIMEOUT = 10.0
#: How long queued matches may delay the terminal state once the workload has exited.
DRAIN_TIMEOUT = 5.0
#: Environment variable overriding :data:`COMPLETION_TIMEOUT` (and capping the others).
TIMEOUT_ENV = "AGENT_EXEC_NOTIFY_TIMEOUT"
#: Memory bound of the match queue: line bytes plus :data:`_ITEM_COST` per queued match
#: (so at most ~260,000 short lines, fewer long ones).
MAX_QUEUED_BYTES = 32 << 20
_ITEM_COST = 128
#: How long a drain waits for a cancelled delivery to kill and reap its sink.
_SETTLE_TIMEOUT = 2.0
#: Matches delivered per batch (file-sink writes of a batch share one worker thread).
_BATCH = 1024

FINISHED = "job.finished"
MATCHED = "job.output.matched"
DROPPED = "job.output.dropped"


@dataclass(frozen=True)
class _Bounds:
    completion: float
    match: float
    drain: float

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> _Bounds:
        try:
            value = float(environ.get(TIMEOUT_ENV, ""))
        except ValueError:
            value = 0.0
        if not value > 0 or value == float("inf"):
            return cls(COMPLETION_TIMEOUT, MATCH_TIMEOUT, DRAIN_TIMEOUT)
        return cls(value, min(MATCH_TIMEOUT, value), min(DRAIN_TIMEOUT, value))


def _os_error(exc: OSError) -> str:
    """An OS error worded like upstream's (Rust ``io::Error``) messages."""
    if exc.errno is not None and exc.strerror:
        return f"{exc.strerror} (os error {exc.errno})"
    return str(exc)


def _seconds(value: float) -> str:
    return f"{value:g}s"


# -- output matching --------------------------------------------------------------------


class _Matcher:
    """A compiled ``on_output_match`` rule."""

    def __init__(self, config: OutputMatch, regex: re.Pattern[str] | None) -> None:
        self.config = config
        self.stream = None if config.stream == "either" else config.stream
        self.needle = config.pattern.encode("utf-8")
        self.regex = regex

    @classmethod
    def compile(cls, config: OutputMatch | None) -> _Matcher | None:
        """The matcher for ``config``; ``None`` if there is nothing that could match
        (no rule, or a regex that does not compile: upstream never matches those)."""
        if config is None or not config.pattern:
            return None
        if config.match_type != "regex":
            return cls(config, None)
        try:
            return cls(config, re.compile(config.pattern))
        except (re.error, OverflowError, RecursionError, ValueError):
            return None

    def matches(self, stream: str, line: bytes) -> bool:
        if self.stream is not None and stream != self.stream:
            return False
        if self.regex is None:
            # ``line`` is valid UTF-8 (the writer made it lossy), so a byte substring test
            # is the same as a character substring test.
            return self.needle in line
        return self.regex.search(line.decode("utf-8", "replace")) is not None


@dataclass(slots=True)
class _Match:
    """A matched line waiting for delivery, with the rule that matched it."""

    config: OutputMatch
    stream: str
    line: bytes


# -- sinks ------------------------------------------------------------------------------


def _result(sink_type: str, target: str, attempted_at: str, error: str | None) -> dict[str, Any]:
    result: dict[str, Any] = {"sink_type": sink_type, "target": target, "success": error is None}
    if error is not None:
        result["error"] = error
    result["attempted_at"] = attempted_at
    return result


class _SinkProcess:
    """A command sink: ``W + [command]`` in its own session (so a bound can kill all of
    it), the event on its stdin, its output discarded, waited for through a pidfd."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        read_fd, self.stdin_fd = os.pipe()
        try:
            self._popen = subprocess.Popen(
                argv,
                stdin=read_fd,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        except BaseException:
            os.close(self.stdin_fd)
            raise
        finally:
            os.close(read_fd)
        os.set_blocking(self.stdin_fd, False)
        self.pid = self._popen.pid
        self.returncode: int | None = None
        try:
            self._pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):
            self._pidfd = -1

    @classmethod
    def spawn(cls, argv: list[str], env: dict[str, str]) -> _SinkProcess | str:
        try:
            return cls(argv, env)
        except OSError as exc:
            return f"spawn error: {_os_error(exc)}"
        except (ValueError, subprocess.SubprocessError) as exc:
            return f"spawn error: {exc}"

    async def feed(self, data: bytes) -> None:
        """Write ``data`` to the sink's stdin, then close it (a sink that exits without
        reading it is not an error)."""
        view = memoryview(data)
        try:
            while view:
                try:
                    view = view[os.write(self.stdin_fd, view) :]
                except BlockingIOError:
                    await anyio.wait_writable(self.stdin_fd)
        except OSError:
            pass
        finally:
            self.close_stdin()

    def close_stdin(self) -> None:
        if self.stdin_fd >= 0:
            os.close(self.stdin_fd)
            self.stdin_fd = -1

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
        while self.returncode is None and not self._reap():
            if self._pidfd >= 0:
                await anyio.wait_readable(self._pidfd)
            else:
                await anyio.sleep(0.02)
        assert self.returncode is not None
        return self.returncode

    async def kill(self) -> None:
        """SIGKILL the sink's whole process group and reap the sink (never cancelled)."""
        with anyio.CancelScope(shield=True):
            if self.returncode is None:
                # The group outlives its leader until the leader is reaped: no pid reuse.
                with contextlib.suppress(OSError):
                    os.killpg(self.pid, signal.SIGKILL)
            self.close_stdin()
            await self.wait()


def _exit_error(returncode: int) -> str | None:
    if returncode == 0:
        return None
    if returncode > 0:
        return f"exited with status exit status: {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        return f"exited with status signal: {-returncode}"
    return f"exited with status signal: {-returncode} ({name})"


async def run_command_sink(
    command: str, *, wrapper: Sequence[str], payload: bytes, env: dict[str, str], bound: float
) -> str | None:
    """Run one command sink; ``None`` on success, else the error text.

    Bounded by ``bound`` seconds: then the sink's process group is killed. If the caller
    is cancelled the group is killed too, so a sink never outlives its delivery.
    """
    if not command.strip():
        return "empty shell command"
    with anyio.CancelScope(shield=True):  # a spawned sink is always owned by the try below
        process = await anyio.to_thread.run_sync(_SinkProcess.spawn, [*wrapper, command], env)
    if isinstance(process, str):
        return process
    try:
        with anyio.move_on_after(bound) as scope:
            await process.feed(payload)
            returncode = await process.wait()
        if scope.cancelled_caught:
            await process.kill()
            return f"timed out after {_seconds(bound)}"
    except BaseException:
        await process.kill()
        raise
    return _exit_error(returncode)


def _append_lines(writes: Sequence[tuple[str, bytes]]) -> list[str | None]:
    """File sinks: append each ``(path, line)`` with one ``os.write`` on an ``O_APPEND``
    descriptor, so lines of concurrent writers never interleave. Blocking; run in a thread.
    """
    fds: dict[str, int | str] = {}
    errors: list[str | None] = []
    try:
        for path, line in writes:
            fd = fds.get(path)
            if fd is None:
                fd = fds[path] = _open_append(path)
            if isinstance(fd, str):
                errors.append(fd)
                continue
            try:
                written = os.write(fd, line)
            except OSError as exc:
                errors.append(f"write error: {_os_error(exc)}")
                continue
            errors.append(
                None if written == len(line) else f"write error: wrote {written} of {len(line)} bytes"
            )
    finally:
        for fd in fds.values():
            if isinstance(fd, int):
                os.close(fd)
    return errors


def _open_append(path: str) -> int | str:
    """An append descriptor for ``path`` (parents created), or the error text."""
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"create parent dir: {_os_error(exc)}"
    # O_NONBLOCK: a FIFO without a reader fails here instead of hanging the delivery.
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        return os.open(path, flags, 0o666)
    except OSError as exc:
        return f"open error: {_os_error(exc)}"


async def append_lines(writes: Sequence[tuple[str, bytes]], bound: float) -> list[str | None]:
    """:func:`_append_lines` in a worker thread, abandoned (all failed) after ``bound``."""
    if not writes:
        return []
    with anyio.move_on_after(bound):
        return await anyio.to_thread.run_sync(_append_lines, writes, abandon_on_cancel=True)
    return [f"write error: timed out after {_seconds(bound)}"] * len(writes)


# -- the notifier -----------------------------------------------------------------------


class Notifier:
    """Delivers one job's notifications without ever blocking its log streaming.

    Used by the supervisor: :meth:`attach` to the log writer before output flows,
    :meth:`run` as a task while the workload runs, :meth:`drain` once the logs are
    complete (before the terminal state), :meth:`completion` after the terminal state.
    """

    def __init__(self, spec: LaunchSpec) -> None:
        # Kept to a few assignments: a supervisor makes one per job, and most jobs never
        # notify (paths and bounds are worked out when a sink runs).
        self.spec = spec
        self._meta_key: tuple[int, int, int] | None = None
        #: The configuration last parsed, and the ``meta.json`` it was parsed from.
        self._config: NotificationConfig | None = None
        self._config_key: tuple[int, int, int] | None = None
        self._matcher: _Matcher | None = None
        self._writer: LogWriter | None = None
        self._queue: deque[_Match] = deque()
        self._queued_bytes = 0
        self._dropped = {"queue_full": 0, "drain_timeout": 0, "error": 0}
        self._batch_recorded = 0
        self._wakeup: anyio.Event | None = None
        self._progress: anyio.Event | None = None
        self._busy = False
        self._closed = False
        self._batch_scope: anyio.CancelScope | None = None
        #: Where :meth:`run` is started once there is something to deliver (see :meth:`bind`).
        self._task_group: anyio.abc.TaskGroup | None = None
        self._delivering = False

    @property
    def _sink_wrapper(self) -> list[str]:
        # A sink command is a shell string; a library job whose workload is exec'd
        # directly (no wrapper) runs its sinks through ``sh -c``.
        return list(self.spec.wrapper) or list(LIBRARY_SHELL)

    @property
    def _events_path(self) -> Path:
        return self.spec.job_dir / NOTIFICATION_EVENTS_FILE

    @property
    def _stdout_path(self) -> str:
        return str(self.spec.job_dir / STDOUT_LOG)

    @property
    def _stderr_path(self) -> str:
        return str(self.spec.job_dir / STDERR_LOG)

    @property
    def _bounds(self) -> _Bounds:
        return _Bounds.from_env(os.environ)

    @property
    def delivering(self) -> bool:
        """Has the delivery task been started?"""
        return self._delivering

    def bind(self, task_group: anyio.abc.TaskGroup) -> None:
        """Deliver output matches from a task of ``task_group``, started with the first
        match (a job without matches costs no task)."""
        self._task_group = task_group

    # -- configuration ------------------------------------------------------------------

    def attach(self, writer: LogWriter) -> None:
        """Watch ``writer``'s output: re-check the configuration before every chunk.

        The writer's per-line callback is installed only while an output-match rule
        exists (see the module docstring for the cost model).
        """
        self._writer = writer
        self.refresh()
        write = writer.write

        def write_checked(stream: str, data: bytes) -> None:
            self.refresh()
            write(stream, data)

        writer.write = write_checked  # type: ignore[method-assign]

    def refresh(self) -> None:
        """Reload the output-match rule if ``meta.json`` changed since the last look."""
        try:
            job = self.spec.handle()
            st = os.stat(META_FILE, dir_fd=job.fd, follow_symlinks=False)
        except OSError:
            return
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        if key == self._meta_key:
            return
        self._meta_key = key
        if key == self.spec.meta_key and self.spec.meta is not None:
            data = self.spec.meta  # the file the launcher wrote, unchanged: no need to read it
        else:
            try:
                data = orjson.loads(job.read_bytes(META_FILE))
            except (StateCorrupt, orjson.JSONDecodeError):
                return  # keep the previous configuration
        if not isinstance(data, dict):
            return
        config = NotificationConfig.from_dict(data.get("notification"))
        self._config, self._config_key = config, key
        rule = config.on_output_match if config is not None else None
        if self._matcher is None or rule != self._matcher.config:
            self._matcher = _Matcher.compile(rule)
        if self._writer is not None:
            self._writer.on_line = self.on_line if self._matcher is not None else None

    @property
    def watches_output(self) -> bool:
        """Whether an output-match rule is active right now."""
        return self._matcher is not None

    # -- output matching ----------------------------------------------------------------

    def on_line(self, stream: str, line: bytes) -> None:
        """A complete line of ``stream`` (already in the logs): queue it if it matches.

        Runs inside the log pump: constant time, never blocks, never raises.
        """
        matcher = self._matcher
        if matcher is None or not matcher.matches(stream, line):
            return
        if self._closed:
            self._dropped["drain_timeout"] += 1
            return
        cost = len(line) + _ITEM_COST
        if self._queued_bytes + cost > MAX_QUEUED_BYTES:
            self._dropped["queue_full"] += 1
            return
        self._queue.append(_Match(matcher.config, stream, line))
        self._queued_bytes += cost
        if not self._delivering and self._task_group is not None:
            self._delivering = True
            self._task_group.start_soon(self.run)
        if self._wakeup is not None:
            self._wakeup.set()

    async def run(self) -> None:
        """Deliver queued matches, in order, until cancelled."""
        self._delivering = True
        while not self._closed:
            if not self._queue:
                self._signal_progress()
                self._wakeup = anyio.Event()
                await self._wakeup.wait()
                continue
            batch = [self._queue.popleft() for _ in range(min(_BATCH, len(self._queue)))]
            self._queued_bytes -= sum(len(item.line) + _ITEM_COST for item in batch)
            self._busy = True
            self._batch_recorded = 0
            try:
                with anyio.CancelScope() as self._batch_scope:
                    await self._deliver(batch)
            except Exception:  # a bug here must never take the job down with it
                pass
            finally:
                self._batch_scope = None
                self._busy = False
            if self._batch_recorded < len(batch):
                self._dropped["drain_timeout" if self._closed else "error"] += (
                    len(batch) - self._batch_recorded
                )
            self._record_drops()
            self._signal_progress()
            await anyio.lowlevel.checkpoint()

    def _signal_progress(self) -> None:
        if self._progress is not None:
            self._progress.set()

    async def drain(self) -> None:
        """Give queued matches up to the drain bound; drop (and record) the rest, so that
        ``notification_events.ndjson`` is complete when the terminal state is written."""
        if not self._delivering and not self._queue:  # nothing was ever matched
            self._closed = True
            self._record_drops()
            return
        with anyio.move_on_after(self._bounds.drain):
            await self._wait_settled(queue_too=True)
        self._closed = True
        self._dropped["drain_timeout"] += len(self._queue)
        self._queue.clear()
        self._queued_bytes = 0
        if self._batch_scope is not None:
            # The cancelled batch kills and reaps its sink, then counts what it dropped.
            self._batch_scope.cancel()
            with anyio.move_on_after(_SETTLE_TIMEOUT):
                await self._wait_settled(queue_too=False)
        if self._wakeup is not None:
            self._wakeup.set()
        self._record_drops()

    async def _wait_settled(self, *, queue_too: bool) -> None:
        while self._busy or (queue_too and self._queue):
            self._progress = anyio.Event()
            await self._progress.wait()

    def _matched_event(self, item: _Match) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "event_type": MATCHED,
            "job_id": self.spec.job_id,
            "pattern": item.config.pattern,
            "match_type": item.config.match_type,
            "stream": item.stream,
            "line": item.line.decode("utf-8", "replace"),
            "stdout_log_path": self._stdout_path,
            "stderr_log_path": self._stderr_path,
        }

    async def _deliver(self, batch: list[_Match]) -> None:
        """Deliver ``batch``, counting recorded matches in ``_batch_recorded`` (so that a
        batch cancelled by the drain bound knows what it dropped). File-sink writes of consecutive matches
        share one worker thread; the per-match order command → file → record holds."""
        env = self._sink_env(MATCHED, self._events_path)
        events = [self._matched_event(item) for item in batch]
        payloads = [orjson.dumps(event) for event in events]
        results: list[list[dict[str, Any]]] = [[] for _ in batch]
        pending: list[tuple[int, str, str]] = []  # (index, path, attempted_at)
        recorded = 0

        async def flush(upto: int) -> int:
            if pending:
                errors = await append_lines(
                    [(path, payloads[index] + b"\n") for index, path, _ in pending], self._bounds.match
                )
                for (index, path, attempted_at), error in zip(pending, errors, strict=True):
                    results[index].append(_result("file", path, attempted_at, error))
                pending.clear()
            self._append_records(
                [{**events[index], "delivery_results": results[index]} for index in range(recorded, upto)]
            )
            self._batch_recorded = upto
            return upto

        for index, item in enumerate(batch):
            command, file = item.config.command, item.config.file
            if command is not None:
                recorded = await flush(index)
                attempted_at = now_ts()
                error = await run_command_sink(
                    command,
                    wrapper=self._sink_wrapper,
                    payload=payloads[index],
                    env=env,
                    bound=self._bounds.match,
                )
                results[index].append(_result("command", command, attempted_at, error))
            if file is not None:
                pending.append((index, file, now_ts()))
        await flush(len(batch))

    def _append_records(self, records: Sequence[dict[str, Any]]) -> None:
        """Append records to ``notification_events.ndjson``, one ``os.write`` each (a
        local file in the job directory, like the logs: written from the event loop)."""
        if not records:
            return
        try:
            fd = self.spec.handle().open_file(
                NOTIFICATION_EVENTS_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT
            )
        except OSError:
            return
        try:
            for record in records:
                os.write(fd, orjson.dumps(record) + b"\n")
        except OSError:
            pass
        finally:
            os.close(fd)

    def _record_drops(self) -> None:
        for reason, count in self._dropped.items():
            if count:
                self._dropped[reason] = 0
                record = {
                    "schema_version": SCHEMA_VERSION,
                    "event_type": DROPPED,
                    "job_id": self.spec.job_id,
                    "dropped": count,
                    "reason": reason,
                }
                self._append_records([record])

    # -- completion -----------------------------------------------------------------------

    def _sink_env(self, event_type: str, event_path: Path) -> dict[str, str]:
        """The supervisor's (launcher's) environment, not the job's ``--env``, plus the
        three ``AGENT_EXEC_EVENT_*`` variables."""
        env = dict(self.spec.base_env if self.spec.base_env is not None else os.environ)
        env["AGENT_EXEC_EVENT_PATH"] = str(event_path)
        env["AGENT_EXEC_JOB_ID"] = self.spec.job_id
        env["AGENT_EXEC_EVENT_TYPE"] = event_type
        return env

    def _finished_event(self, meta: JobMeta, state: JobState) -> dict[str, Any]:
        event: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "event_type": FINISHED,
            "job_id": self.spec.job_id,
            "state": state.status.value,
            "command": meta.command,
        }
        if meta.cwd is not None:
            event["cwd"] = meta.cwd
        event["started_at"] = state.started_at or state.updated_at
        event["finished_at"] = state.finished_at or state.updated_at
        event["duration_ms"] = state.duration_ms if state.duration_ms is not None else 0
        if state.exit_code is not None:
            event["exit_code"] = state.exit_code
        if state.signal is not None:
            event["signal"] = state.signal
        event["stdout_log_path"] = self._stdout_path
        event["stderr_log_path"] = self._stderr_path
        if state.reason is not None:
            event["reason"] = state.reason
        return event

    async def completion(self, state: JobState) -> None:
        """Deliver ``job.finished`` if the job's *current* ``meta.json`` asks for it.

        Best effort: nothing here can fail the job or the supervisor.
        """
        with contextlib.suppress(Exception):
            await self._complete(state)

    def _definition(self) -> JobMeta:
        """The job's definition as the supervisor received it (``meta.json`` through the
        directory's descriptor only for a launcher that did not hand one over)."""
        if self.spec.meta is not None:
            return JobMeta.from_dict(self.spec.meta)
        return read_meta(self.spec.handle())

    def _surely_silent(self) -> bool:
        """``meta.json`` is unchanged since it was parsed and asks for no completion sink:
        skip re-reading it (most jobs, and the runner's thousands of short ones)."""
        if self._config_key is None:
            return False
        try:
            st = os.stat(META_FILE, dir_fd=self.spec.handle().fd, follow_symlinks=False)
        except OSError:
            return False
        if (st.st_ino, st.st_size, st.st_mtime_ns) != self._config_key:
            return False
        config = self._config
        return config is None or (config.notify_command is None and config.notify_file is None)

    async def _complete(self, state: JobState) -> None:
        if self._surely_silent():
            return
        job = self.spec.handle()
        try:
            # ``notify set`` may have changed the configuration since the launch: the
            # current one, read through the descriptor (see the module docstring).
            meta = read_meta(job)
        except (StateCorrupt, OSError):
            return  # an unreadable meta.json means "no notification"
        config = meta.notification
        if config is None or (config.notify_command is None and config.notify_file is None):
            return
        if not job.in_place():
            return  # moved or replaced: the event's paths would lead elsewhere
        event = self._finished_event(self._definition(), state)
        path = self.spec.job_dir / COMPLETION_EVENT_FILE
        self._write_completion(job, {**event, "delivery_results": []})
        payload = orjson.dumps(event)
        results: list[dict[str, Any]] = []
        bound = self._bounds.completion
        if config.notify_command is not None:
            attempted_at = now_ts()
            error = await run_command_sink(
                config.notify_command,
                wrapper=self._sink_wrapper,
                payload=payload,
                env=self._sink_env(FINISHED, path),
                bound=bound,
            )
            results.append(_result("command", config.notify_command, attempted_at, error))
        if config.notify_file is not None:
            attempted_at = now_ts()
            [error] = await append_lines([(config.notify_file, payload + b"\n")], bound)
            results.append(_result("file", config.notify_file, attempted_at, error))
        self._write_completion(job, {**event, "delivery_results": results})

    @staticmethod
    def _write_completion(job: JobDir, data: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):  # e.g. the job directory was deleted meanwhile
            job.atomic_write(COMPLETION_EVENT_FILE, dump_pretty(data))


def validate_pattern(match: object) -> None:
    """Raise an :class:`AgentExecError` if a regex output pattern does not compile.

    (Upstream stores any pattern and an invalid regex silently never matches; refusing
    it up front is friendlier and changes no valid configuration.)
    """
    assert isinstance(match, OutputMatch)
    if match.match_type == "regex":
        try:
            re.compile(match.pattern)
        except re.error as exc:
            raise AgentExecError(f"invalid output pattern regex {match.pattern!r}: {exc}") from None
