"""Job operations on the store: define, launch, observe, and the read side (status, tail,
wait, kill, list). The CLI, ``serve`` and :class:`~agent_exec.JobRunner` all go through
these functions, so every way in creates and reports jobs identically.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time

from ._codec import BULK_THRESHOLD, use_orjson
from ._errors import InvalidArgument, InvalidState, InvalidTag, IoError, StateCorrupt, StdinTooLarge
from ._jobdir import DIR_FLAGS, JobDir, open_job
from ._logs import ENCODING, read_head, read_tail
from ._models import JobMeta, JobState, JobStatus, NotificationConfig
from ._paths import (
    FILE_MODE,
    FULL_LOG,
    LOCK_FILE,
    META_FILE,
    STATE_FILE,
    STDERR_LOG,
    STDIN_FILE,
    STDOUT_LOG,
    canonical_cwd,
    iter_job_dirs,
    new_job_id,
)
from ._process import DEFAULT_WRAPPER, group_alive, split_env_pair
from ._root import check_root, ensure_root
from ._spec import LaunchSpec
from ._store import (
    SUPERVISOR_LOST,
    dump_pretty,
    held,
    lock_held_elsewhere,
    read_meta,
    read_state,
    read_state_raw,
    supervision_claim,
    write_meta,
    write_state,
)
from ._timeutil import now_ts

# Every CLI command that reads or launches a job imports this module: no typing,
# dataclasses or threading at run time (tests/test_import_budget.py keeps it that way).
TYPE_CHECKING = False  # not typing.TYPE_CHECKING (importing typing costs milliseconds)
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from pathlib import Path
    from typing import IO, Any

    from ._store import JobRef

    StdinSource = bytes | Path | IO[bytes] | None


DEFAULT_MAX_BYTES = 65536
#: How long ``run`` waits for completion after it first sees output (see :func:`observe`).
OUTPUT_SETTLE = 0.15
DEFAULT_STDIN_MAX_BYTES = 64 * 1024 * 1024
_TAG_CHARACTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-")


# -- tags -----------------------------------------------------------------------------


def _is_tag(text: str) -> bool:
    """Dot-separated, non-empty segments of ASCII letters, digits and ``-``, nothing else
    (not even a trailing newline, which a ``$`` in a regular expression would let by).
    Plain string tests: ``re`` costs a CLI call milliseconds to import."""
    return all(segment and _TAG_CHARACTERS.issuperset(segment) for segment in text.split("."))


def validate_tag(tag: str) -> str:
    """A stored tag: dot-separated segments of ASCII letters, digits and ``-``."""
    if not _is_tag(tag):
        raise InvalidTag(
            f"invalid tag {tag!r}: use dot-separated segments of letters, digits and '-' (e.g. ci.build)"
        )
    return tag


def validate_tag_pattern(pattern: str) -> str:
    """A tag filter: a stored tag (exact) or ``<tag>.*`` (namespace)."""
    base = pattern[:-2] if pattern.endswith(".*") else pattern
    if not _is_tag(base):
        raise InvalidTag(f"invalid tag pattern {pattern!r}: expected a tag or '<tag>.*'")
    return pattern


def dedupe(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def tags_match(patterns: Sequence[str], tags: Sequence[str]) -> bool:
    """True if every pattern matches at least one tag (``ns.*`` matches ``ns`` and ``ns.x``)."""
    for pattern in patterns:
        if pattern.endswith(".*"):
            base = pattern[:-2]
            if not any(tag == base or tag.startswith(base + ".") for tag in tags):
                return False
        elif pattern not in tags:
            return False
    return True


# -- defining a job -------------------------------------------------------------------


class JobDefinition:
    """What to run and how: the definition-time options of ``run``/``create``.

    ``wrapper`` empty: the command is exec'd directly (the library's argv policy).
    ``record_argv``: record the exact argv exec'd (``meta.json`` ``argv`` and ``shell``),
    for library jobs. (A plain class, not a dataclass: ``run`` builds one on every call.)
    """

    __slots__ = (
        "command",
        "cwd",
        "env",
        "env_files",
        "inherit_env",
        "kill_after_s",
        "mask",
        "notification",
        "progress_every_s",
        "record_argv",
        "tags",
        "timeout_s",
        "wrapper",
    )

    def __init__(
        self,
        command: list[str],
        cwd: str | None = None,
        env: list[str] | None = None,
        env_files: list[str] | None = None,
        inherit_env: bool = True,
        mask: list[str] | None = None,
        tags: list[str] | None = None,
        timeout_s: float = 0,
        kill_after_s: float = 0,
        progress_every_s: float = 0,
        notification: NotificationConfig | None = None,
        wrapper: list[str] | None = None,
        record_argv: bool = False,
    ) -> None:
        self.command = command
        self.cwd = cwd
        self.env: list[str] = [] if env is None else env
        self.env_files: list[str] = [] if env_files is None else env_files
        self.inherit_env = inherit_env
        self.mask: list[str] = [] if mask is None else mask
        self.tags: list[str] = [] if tags is None else tags
        self.timeout_s = timeout_s
        self.kill_after_s = kill_after_s
        self.progress_every_s = progress_every_s
        self.notification = notification
        self.wrapper: list[str] = list(DEFAULT_WRAPPER) if wrapper is None else wrapper
        self.record_argv = record_argv

    def masked_env(self) -> list[str]:
        masked = set(self.mask)
        shown = []
        for pair in self.env:
            key, _ = split_env_pair(pair)
            shown.append(f"{key}=***" if key in masked else pair)
        return shown


def require_text(value: str, what: str) -> str:
    """``value`` if it is valid UTF-8, else :class:`InvalidArgument` naming ``what``.

    POSIX allows any bytes but NUL in arguments, environment values and paths, and Python
    carries undecodable ones as surrogates; a job's definition is recorded as JSON text,
    which cannot hold them. They are refused up front, with where the bad byte is, rather
    than stored altered (a command that is not what was asked for) or failing later.
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raw = value[exc.start : exc.end].encode("utf-8", "surrogateescape")
        raise InvalidArgument(
            f"{what} is not valid UTF-8 (byte 0x{raw[:1].hex()} at offset {exc.start}): "
            "agent-exec records jobs as JSON text, which cannot hold it"
        ) from None
    return value


def _require_text_definition(definition: JobDefinition) -> None:
    for index, word in enumerate(definition.command):
        require_text(word, f"command word {index + 1}")
    for word in definition.wrapper:
        require_text(word, "the shell wrapper")
    for pair in definition.env:
        require_text(pair, f"--env {split_env_pair(pair)[0]!r}")
    for path in definition.env_files:
        require_text(path, "an --env-file path")
    if definition.cwd is not None:
        require_text(definition.cwd, "--cwd")
    notification = definition.notification
    if notification is not None:
        for name, value in (
            ("--notify-command", notification.notify_command),
            ("--notify-file", notification.notify_file),
        ):
            if value is not None:
                require_text(value, name)
        match = notification.on_output_match
        if match is not None:
            for name, value in (
                ("--output-pattern", match.pattern),
                ("--output-command", match.command),
                ("--output-file", match.file),
            ):
                if value is not None:
                    require_text(value, name)


def _materialise_stdin(job: JobDir, source: bytes | Path | IO[bytes], limit: int) -> None:
    fd = job.open_file(STDIN_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        with open(fd, "wb", closefd=True) as out:
            if isinstance(source, bytes):
                if len(source) > limit:
                    raise StdinTooLarge(limit)
                out.write(source)
                return
            stream: IO[bytes]
            with contextlib.ExitStack() as stack:
                if isinstance(source, os.PathLike):  # a Path (no pathlib import for read commands)
                    try:
                        stream = stack.enter_context(open(source, "rb"))
                    except OSError as exc:
                        raise StateCorrupt(f"failed to open --stdin-file {source}: {exc.strerror}") from None
                else:
                    stream = source
                written = 0
                while chunk := stream.read(1 << 20):
                    written += len(chunk)
                    if written > limit:
                        raise StdinTooLarge(limit)
                    out.write(chunk)
    except BaseException:
        with contextlib.suppress(OSError):
            job.unlink(STDIN_FILE)
        raise


def create_job(
    root: Path,
    definition: JobDefinition,
    *,
    stdin: StdinSource = None,
    stdin_max_bytes: int = DEFAULT_STDIN_MAX_BYTES,
    persist_runtime_env: bool = False,
    mask_env: bool = True,
    precreate_logs: bool = True,
    backend: dict[str, Any] | None = None,
) -> tuple[str, Path, JobMeta]:
    """:func:`create_job_dir` for callers that work with paths (the handle is closed)."""
    job, meta = create_job_dir(
        root,
        definition,
        stdin=stdin,
        stdin_max_bytes=stdin_max_bytes,
        persist_runtime_env=persist_runtime_env,
        mask_env=mask_env,
        precreate_logs=precreate_logs,
        backend=backend,
    )
    job.close()
    return meta.job_id, root / meta.job_id, meta


def create_job_dir(
    root: Path,
    definition: JobDefinition,
    *,
    stdin: StdinSource = None,
    stdin_max_bytes: int = DEFAULT_STDIN_MAX_BYTES,
    persist_runtime_env: bool = False,
    mask_env: bool = True,
    precreate_logs: bool = True,
    initial_state: Callable[[str], JobState] | None = None,
    publish: bool = True,
    backend: dict[str, Any] | None = None,
    root_checked: bool = False,
) -> tuple[JobDir, JobMeta]:
    """Create the job directory with ``meta.json``, ``stdin.bin``, empty logs and (given
    ``initial_state(job_id)``) ``state.json``; return it held by descriptor (the caller
    closes it) with the definition as written.

    The directory is made complete under a temporary name and renamed into place once
    (:meth:`JobDir.build`), so no reader ever sees a job without its records, and the files
    are written directly (no temporary file and rename each: nobody can see them yet). With
    ``publish=False`` the caller renames it (:meth:`JobDir.publish`) once the job is
    launched. If anything fails, the directory is removed again: a failed ``run``/``create``
    leaves nothing behind. ``backend`` is recorded in ``meta.json`` for a job that does not
    run locally (``{"kind": "ray", "address": ...}``).
    """
    _require_text_definition(definition)
    if not root_checked:  # a runner checks its root once a second, not for every job
        ensure_root(root)
    job_id = new_job_id(root)
    meta = JobMeta(
        job_id=job_id,
        command=list(definition.command),
        created_at=now_ts(),
        root=str(root),
        env_keys=[split_env_pair(pair)[0] for pair in definition.env],
        env_vars=definition.masked_env() if mask_env else list(definition.env),
        env_vars_runtime=list(definition.env) if persist_runtime_env else [],
        mask=list(definition.mask),
        cwd=canonical_cwd(definition.cwd),
        notification=definition.notification,
        tags=dedupe(definition.tags),
        inherit_env=definition.inherit_env,
        env_files=list(definition.env_files),
        timeout_ms=round(definition.timeout_s * 1000),
        kill_after_ms=round(definition.kill_after_s * 1000),
        progress_every_ms=round(definition.progress_every_s * 1000),
        shell_wrapper=list(definition.wrapper),
    )
    if definition.record_argv:
        from ._process import build_argv

        meta.extra["argv"] = build_argv(definition.wrapper, definition.command)
        meta.extra["shell"] = bool(definition.wrapper)
    if backend is not None:
        meta.extra["backend"] = backend
    try:
        job = JobDir.build(root, job_id)
    except OSError as exc:
        raise IoError.from_os(exc, "failed to create job directory", root / job_id) from None
    try:
        if stdin is not None:
            _materialise_stdin(job, stdin, stdin_max_bytes)
            meta.stdin_file = STDIN_FILE
        job.meta_key = job.write_new(META_FILE, dump_pretty(meta.to_dict()))
        # The CLI pre-creates the logs (readers may look before the supervisor starts);
        # an in-process runner's supervisor creates them an instant later.
        for name in (STDOUT_LOG, STDERR_LOG, FULL_LOG) if precreate_logs else ():
            job.create_empty(name)
        if initial_state is not None:
            job.write_new(STATE_FILE, dump_pretty(initial_state(job_id).to_dict()))
        if publish:
            job.publish()
    except BaseException:
        discard(job)
        raise
    return job, meta


def discard(job: JobDir) -> None:
    """Close and remove a job directory that never became a job (a failed launch)."""
    import shutil

    where = job.current_path
    job.close()
    shutil.rmtree(where, ignore_errors=True)


def created_state(job_id: str) -> JobState:
    return JobState(job_id=job_id, status=JobStatus.CREATED, updated_at=now_ts())


def write_created_state(job_dir: JobRef, job_id: str) -> JobState:
    state = JobState(job_id=job_id, status=JobStatus.CREATED, updated_at=now_ts())
    write_state(job_dir, state)
    return state


def launch_spec(
    job_dir: JobRef,
    meta: JobMeta,
    *,
    env_pairs: Sequence[str],
    cwd: str | None,
    full_log: Path | None = None,
) -> LaunchSpec:
    """What the supervisor runs: taken from ``meta`` as written, with the directory handle
    (if ``job_dir`` is one) that travels with it."""
    return LaunchSpec(
        job_id=meta.job_id,
        job_dir=job_dir.path if isinstance(job_dir, JobDir) else job_dir,
        dir=job_dir if isinstance(job_dir, JobDir) else None,
        meta=meta.to_dict(),
        meta_key=job_dir.meta_key if isinstance(job_dir, JobDir) else None,
        command=meta.command,
        # ``[]`` (not missing) is a library job's direct exec.
        wrapper=meta.shell_wrapper if meta.shell_wrapper is not None else list(DEFAULT_WRAPPER),
        cwd=cwd,
        env_pairs=list(env_pairs),
        env_files=meta.env_files,
        inherit_env=meta.inherit_env,
        stdin_file=meta.stdin_file,
        timeout_s=meta.timeout_ms / 1000,
        kill_after_s=meta.kill_after_ms / 1000,
        progress_every_s=meta.progress_every_ms / 1000,
        full_log=full_log,
    )


def running_state(job_id: str, pid: int | None) -> JobState:
    now = now_ts()
    return JobState(job_id=job_id, status=JobStatus.RUNNING, updated_at=now, started_at=now, pid=pid)


def launch_detached_locked(spec: LaunchSpec, lock_fd: int) -> int:
    """Hand the job to a detached supervisor; the job is ``running`` when this returns.

    If this raises, the workload was not started (see ``Supervisor.hand_over``).
    """
    from ._launch import take_supervisor

    return take_supervisor().hand_over(
        spec, lock_fd, lambda pid: write_state(spec.handle(), running_state(spec.job_id, pid))
    )


def launch_detached_exec(spec: LaunchSpec, lock_fd: int) -> int:
    """:func:`launch_detached_locked` for hosts that must not fork (threads, event loops)."""
    from ._launch import exec_supervisor

    return exec_supervisor(
        spec, lock_fd, lambda pid: write_state(spec.job_dir, running_state(spec.job_id, pid))
    )


def launch_new_job(
    spec: LaunchSpec, supervisor: Any = None, launch: Callable[[LaunchSpec, int], int] | None = None
) -> None:
    """Launch a job directory just made by :func:`create_job_dir`: all or nothing.

    A directory still being built (``publish=False``, its ``running`` record written) is
    renamed into place at the hand-over, before the supervisor may start the workload. If
    the launch fails, the workload was never started and the directory is removed again,
    so the caller gets an error and no job (a retry cannot run the command twice).
    ``launch`` replaces :func:`launch_detached_locked` for a published directory (threaded
    hosts pass :func:`launch_detached_exec`).
    """
    job = spec.dir
    try:
        with supervision_claim(job or spec.job_dir) as lock_fd:
            assert lock_fd is not None  # a brand-new job directory
            if job is not None and job.building is not None:
                from ._launch import take_supervisor

                (supervisor or take_supervisor()).hand_over(spec, lock_fd, lambda pid: job.publish())
            else:
                (launch or launch_detached_locked)(spec, lock_fd)
    except BaseException:
        if job is not None and job.building is not None:
            discard(job)
        else:
            remove_new_job_dir(spec.job_dir)
        raise


def launch_new(
    root: Path,
    definition: JobDefinition,
    *,
    launch: Callable[[LaunchSpec, int], int],
    stdin: StdinSource = None,
    stdin_max_bytes: int = DEFAULT_STDIN_MAX_BYTES,
    auto_gc: Any = None,
) -> tuple[str, Path, JobMeta]:
    """Create a job and hand it to a detached supervisor (``launch``): the core of ``run``."""
    job_id, job_dir, meta = create_job(root, definition, stdin=stdin, stdin_max_bytes=stdin_max_bytes)
    spec = launch_spec(job_dir, meta, env_pairs=definition.env, cwd=definition.cwd)
    spec.auto_gc = auto_gc
    launch_new_job(spec, launch=launch)
    return job_id, job_dir, meta


#: Every file a job directory can hold before its workload starts.
_NEW_JOB_FILES = (
    META_FILE,
    STATE_FILE,
    STDIN_FILE,
    STDOUT_LOG,
    STDERR_LOG,
    FULL_LOG,
    LOCK_FILE,
    ".meta.lock",
    ".state.reserve",
)


def remove_new_job_dir(job_dir: Path) -> None:
    """Remove a job directory whose launch failed, even without a descriptor to spare
    (``rmtree`` needs some; unlinking the known names by path needs none)."""
    import shutil

    shutil.rmtree(job_dir, ignore_errors=True)
    if not os.path.lexists(job_dir):
        return
    for name in _NEW_JOB_FILES:
        with contextlib.suppress(OSError):
            os.unlink(job_dir / name)
    with contextlib.suppress(OSError):
        os.rmdir(job_dir)


def masked_env_view(meta: JobMeta) -> list[str]:
    """``KEY=VALUE`` of a created job's runtime env with masked keys shown as ``KEY=***``."""
    masked = set(meta.mask)
    return [
        f"{split_env_pair(pair)[0]}=***" if split_env_pair(pair)[0] in masked else pair
        for pair in meta.env_vars_runtime
    ]


#: ``state.json`` ``reason`` of a job a :class:`~agent_exec.JobRunner` queued (its ``pid`` is
#: the runner's process): the runner starts it in its turn, ``agent-exec start`` must not.
QUEUED_REASON = "queued"


def queued_by_live_runner(state: JobState) -> bool:
    """A ``created`` job queued by a runner whose process still lives (it holds no lock
    while queued: a queued job costs no file descriptor)."""
    from ._store import pid_alive

    return (
        state.status is JobStatus.CREATED
        and state.reason == QUEUED_REASON
        and state.pid is not None
        and pid_alive(state.pid)
    )


def start_created(root: Path, given: str, *, auto_gc: Any = None) -> tuple[JobDir, JobMeta]:
    """Launch a ``created`` job exactly once, even if several callers race to start it.

    Returns the job directory held by descriptor (the caller closes it).
    """
    job = open_job(root, given)
    try:
        meta = read_meta(job)
        read_state_raw(job)
        with supervision_claim(job) as lock_fd:
            state = read_state_raw(job)
            if lock_fd is None or state.status is not JobStatus.CREATED:
                shown = state.status.value if lock_fd is not None else "running"
                raise InvalidState(f"job {given} is in '{shown}' state; only 'created' jobs can be started")
            if queued_by_live_runner(state):
                raise InvalidState(
                    f"job {given} is queued by a JobRunner (pid {state.pid}); it starts in its turn"
                )
            spec = launch_spec(job, meta, env_pairs=meta.env_vars_runtime, cwd=meta.cwd)
            spec.auto_gc = auto_gc
            from ._backends import backend_record

            record = backend_record(meta)
            try:
                if record is not None:  # a Ray job: submit it, hand it to its detached watcher
                    from ._backends.ray_cli import launch_on_ray, ray_client_for

                    address = str(record.get("address", ""))
                    launch_on_ray(ray_client_for(address), address, spec, meta, lock_fd)
                else:
                    launch_detached_locked(spec, lock_fd)
            except BaseException:
                # Not started: the job stays ``created`` (we still hold its lock).
                with contextlib.suppress(OSError):
                    write_state(job, state)
                raise
    except BaseException:
        job.close()
        raise
    return job, meta


# -- observing ------------------------------------------------------------------------


class SupervisorWatch:
    """Wakes a waiter the moment a job's supervisor lets go of its lock (the job finished
    or the supervisor died), instead of polling ``state.json``."""

    def __init__(self, job: JobRef) -> None:
        self._job = job
        # Made by the first wait: a finished job is reported without importing threading.
        self._released: Any = None
        self._thread: Any = None

    def _open_lock(self) -> int | None:
        """The lock file, opened by the caller's thread while the job directory is surely
        open (a descriptor number read by another thread after a close could be reused)."""
        try:
            if isinstance(self._job, JobDir):
                return self._job.open_file(LOCK_FILE, os.O_RDONLY)
            return os.open(self._job / LOCK_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None

    def _watch(self, fd: int) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            fcntl.flock(fd, fcntl.LOCK_UN)
            self._released.set()
        except OSError:
            pass
        finally:
            os.close(fd)

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds; True once the lock was seen free."""
        import threading

        if self._released is None:
            self._released = threading.Event()
        if self._released.is_set():
            self._released.clear()
            self._thread = None
        if self._thread is None:
            fd = self._open_lock()
            if fd is None:
                self._thread = False  # nothing to watch: the timeout decides
            else:
                thread = threading.Thread(target=self._watch, args=(fd,), daemon=True)
                try:
                    thread.start()
                except RuntimeError:  # no thread to spare (process limit): poll instead
                    os.close(fd)
                    time.sleep(max(0.0, min(timeout, 0.05)))
                    return False
                self._thread = thread
        if timeout <= 0:
            return bool(self._released.is_set())
        return bool(self._released.wait(timeout))


class PollingWatch:
    """:class:`SupervisorWatch`'s interface for long-lived hosts (``serve``, ``mcp``).

    It probes the lock every ``interval`` seconds instead of blocking a thread on it, so
    an observation that gives up at its deadline leaves no thread (and no open file)
    behind while the job keeps running: a host answering thousands of bounded calls
    about long jobs stays flat.
    """

    def __init__(self, job: JobRef, interval: float = 0.02) -> None:
        self._job = job
        self._interval = interval

    def _released(self) -> bool:
        try:
            if isinstance(self._job, JobDir):
                fd = self._job.open_file(LOCK_FILE, os.O_RDONLY)
            else:
                fd = os.open(self._job / LOCK_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return True
        try:
            return not lock_held_elsewhere(fd)
        finally:
            os.close(fd)

    def wait(self, timeout: float) -> bool:
        """Sleep in short steps up to ``timeout`` seconds; True once the lock is free."""
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            if self._released():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(self._interval, remaining))


Watch = SupervisorWatch | PollingWatch


def observe(
    job_dir: JobRef, *, wait: bool, until: float, forever: bool, polling: bool = False
) -> tuple[JobState, int]:
    """The inline observation of ``run``/``start``: return at the terminal state at once,
    or at the first 100 ms tick that finds output in the logs, or at the deadline.

    A job seen with output gets a short grace (``OUTPUT_SETTLE``) to finish: a quick
    command that printed and is exiting right now is then reported ``exited`` with its
    exit code, even on a loaded machine, instead of ``running``.

    ``polling=True`` (long-lived hosts) watches with :class:`PollingWatch`.
    """
    if not wait:
        return read_state(job_dir), 0
    with held(job_dir) as job:
        return _observe(job, until=until, forever=forever, polling=polling)


def _observe(job_dir: JobDir, *, until: float, forever: bool, polling: bool) -> tuple[JobState, int]:
    start = time.monotonic()
    deadline = None if forever else start + until
    watch: Watch = PollingWatch(job_dir) if polling else SupervisorWatch(job_dir)
    tick = 0
    while True:
        state = read_state(job_dir)
        now = time.monotonic()
        if state.is_terminal:
            break
        if now >= start + tick * 0.1:
            if job_dir.size(STDOUT_LOG) or job_dir.size(STDERR_LOG):
                settle = OUTPUT_SETTLE if deadline is None else min(OUTPUT_SETTLE, deadline - now)
                if settle > 0 and watch.wait(settle):
                    continue
                break
            tick = int((now - start) / 0.1) + 1
        if deadline is not None and now >= deadline:
            break
        wake_at = start + tick * 0.1
        if deadline is not None:
            wake_at = min(wake_at, deadline)
        watch.wait(max(0.0, wake_at - time.monotonic()))
    return read_state(job_dir), int((time.monotonic() - start) * 1000)


def observe_launched(
    job_dir: JobRef, job_id: str, *, wait: bool, until: float, forever: bool
) -> tuple[JobState, int]:
    """:func:`observe` for a job this call has just launched (recorded ``running``).

    Looking at the job can fail where launching it did not (no descriptor or thread to
    spare): the caller must then still get the job, not an error that invites a retry
    running the command twice. It is reported as it was recorded: ``running``.
    """
    start = time.monotonic()
    try:
        return observe(job_dir, wait=wait, until=until, forever=forever)
    except (OSError, RuntimeError, StateCorrupt):
        now = now_ts()
        state = JobState(job_id=job_id, status=JobStatus.RUNNING, updated_at=now, started_at=now)
        return state, int((time.monotonic() - start) * 1000)


def output_fields(job_dir: JobRef, max_bytes: int) -> dict[str, Any]:
    """The bounded inline output block shared by ``run``, ``start`` and ``wait``."""
    with held(job_dir, reading=STDOUT_LOG) as job:
        stdout, stdout_range, stdout_total = read_head((job.fd, STDOUT_LOG), max_bytes)
        stderr, stderr_range, stderr_total = read_head((job.fd, STDERR_LOG), max_bytes)
    return {
        "stdout": stdout,
        "stderr": stderr,
        "stdout_range": stdout_range,
        "stderr_range": stderr_range,
        "stdout_total_bytes": stdout_total,
        "stderr_total_bytes": stderr_total,
        "encoding": ENCODING,
    }


def outcome_fields(state: JobState) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if state.exit_code is not None:
        data["exit_code"] = state.exit_code
    if state.finished_at is not None:
        data["finished_at"] = state.finished_at
    if state.signal is not None:
        data["signal"] = state.signal
    if state.duration_ms is not None:
        data["duration_ms"] = state.duration_ms
    if state.reason is not None:
        data["reason"] = state.reason
    data.update(fault_fields(state))
    return data


def fault_fields(state: JobState) -> dict[str, Any]:
    """Extension fields that only appear when something went wrong: ``output_dropped_bytes``
    (output the logs could not take), ``supervisor_stopped_ms`` (see :class:`JobState`) and,
    for a job whose supervisor is lost, ``workload_alive`` (whether its process group
    provably still runs; omitted when that cannot be told)."""
    data: dict[str, Any] = {}
    if state.output_dropped_bytes:
        data["output_dropped_bytes"] = state.output_dropped_bytes
    if state.supervisor_stopped_ms is not None:
        data["supervisor_stopped_ms"] = state.supervisor_stopped_ms
    if state.reason == SUPERVISOR_LOST and state.workload is not None:
        alive = group_alive(state.workload.pgid, state.workload.start_ticks)
        if alive is not None:
            data["workload_alive"] = alive
    return data


def run_data(
    job_id: str,
    job_dir: JobRef,
    state: JobState,
    *,
    tags: list[str],
    env_vars: list[str] | None,
    elapsed_ms: int,
    waited_ms: int,
    max_bytes: int,
) -> dict[str, Any]:
    data: dict[str, Any] = {"job_id": job_id, "state": state.status.value, "tags": tags}
    if env_vars:
        data["env_vars"] = env_vars
    path = job_dir.path if isinstance(job_dir, JobDir) else job_dir
    data["stdout_log_path"] = str(path / STDOUT_LOG)
    data["stderr_log_path"] = str(path / STDERR_LOG)
    data["elapsed_ms"] = elapsed_ms
    data["waited_ms"] = waited_ms
    data.update(output_fields(job_dir, max_bytes))
    data.update(outcome_fields(state))
    return data


# -- the read side --------------------------------------------------------------------


def status_data(root: Path, given: str) -> dict[str, Any]:
    with open_job(root, given) as job:
        meta = read_meta(job)
        state = read_state(job)
    data: dict[str, Any] = {"job_id": job.job_id, "state": state.status.value}
    if state.exit_code is not None:
        data["exit_code"] = state.exit_code
    data["created_at"] = meta.created_at
    if state.started_at is not None:
        data["started_at"] = state.started_at
    if state.finished_at is not None:
        data["finished_at"] = state.finished_at
    if state.signal is not None:
        data["signal"] = state.signal
    if state.reason is not None:
        data["reason"] = state.reason
    data.update(fault_fields(state))
    return data


def tail_data(
    root: Path, given: str, *, tail_lines: int = 50, max_bytes: int = DEFAULT_MAX_BYTES
) -> dict[str, Any]:
    with open_job(root, given) as job:
        stdout, stdout_range, stdout_total = read_tail((job.fd, STDOUT_LOG), tail_lines, max_bytes)
        stderr, stderr_range, stderr_total = read_tail((job.fd, STDERR_LOG), tail_lines, max_bytes)
    job_id, job_dir = job.job_id, job.path
    return {
        "job_id": job_id,
        "stdout": stdout,
        "stderr": stderr,
        "encoding": ENCODING,
        "stdout_log_path": str(job_dir / STDOUT_LOG),
        "stderr_log_path": str(job_dir / STDERR_LOG),
        "stdout_range": stdout_range,
        "stderr_range": stderr_range,
        "stdout_total_bytes": stdout_total,
        "stderr_total_bytes": stderr_total,
    }


def wait_for(job_dir: JobRef, *, until: float | None, poll: float = 1.0, polling: bool = False) -> JobState:
    """Block until the job is terminal or ``until`` seconds passed (``None``: no deadline).

    A supervised job wakes the waiter the moment it finishes; only a ``created`` job (no
    supervisor yet) is polled, every ``poll`` seconds.
    """
    with held(job_dir) as job:
        return _wait_for(job, until=until, poll=poll, polling=polling)


def _wait_for(job_dir: JobDir, *, until: float | None, poll: float, polling: bool) -> JobState:
    deadline = None if until is None else time.monotonic() + until
    watch: Watch = PollingWatch(job_dir) if polling else SupervisorWatch(job_dir)
    while True:
        state = read_state(job_dir)
        if state.is_terminal:
            return state
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            return state
        if state.status is JobStatus.RUNNING:
            watch.wait(3600.0 if remaining is None else remaining)
        else:
            time.sleep(poll if remaining is None else min(poll, remaining))


def wait_data(
    root: Path,
    given: str,
    *,
    until: float | None,
    poll: float = 1.0,
    max_bytes: int = DEFAULT_MAX_BYTES,
    polling: bool = False,
) -> dict[str, Any]:
    with open_job(root, given) as job:
        state = wait_for(job, until=until, poll=max(poll, 1.0) if poll else 1.0, polling=polling)
        outputs = output_fields(job, max_bytes)
    data: dict[str, Any] = {"job_id": job.job_id, "state": state.status.value}
    if state.is_terminal and state.exit_code is not None:
        data["exit_code"] = state.exit_code
    data["stdout_total_bytes"] = outputs.pop("stdout_total_bytes")
    data["stderr_total_bytes"] = outputs.pop("stderr_total_bytes")
    data["updated_at"] = state.updated_at
    if state.is_terminal:
        for key in ("finished_at", "signal", "duration_ms", "reason"):
            value = getattr(state, key)
            if value is not None:
                data[key] = value
        data.update(fault_fields(state))
    data.update(outputs)
    return data


def kill_job(root: Path, given: str, *, signal_name: str = "TERM", wait: bool = True) -> dict[str, Any]:
    """Moved to :func:`agent_exec._kill.kill_job` (kept here for callers of the old home)."""
    from ._kill import kill_job as kill

    return kill(root, given, signal_name=signal_name, wait=wait)


def list_data(
    root: Path,
    *,
    state_filter: str | None = None,
    limit: int = 50,
    cwd_filter: str | None = None,
    tag_patterns: Sequence[str] = (),
) -> dict[str, Any]:
    jobs: list[dict[str, Any]] = []
    skipped = 0
    check_root(root)
    entries = iter_job_dirs(root)
    if len(entries) > BULK_THRESHOLD:
        use_orjson()  # its import pays for itself over this many files (see _codec)
    try:  # job directories are opened relative to the root's descriptor (no path lookups)
        root_fd: int | None = os.open(root, DIR_FLAGS) if entries else None
    except OSError:
        root_fd = None
    try:
        for entry in entries:
            try:
                job_dir = JobDir.open(root, entry.name, root_fd=root_fd)
            except (FileNotFoundError, NotADirectoryError):
                continue  # vanished, or swapped for something that is no directory
            except OSError as exc:
                if exc.errno != errno.ELOOP:  # a symlink planted in its place is no job
                    skipped += 1
                continue
            with job_dir:
                summary = _summary(job_dir, cwd_filter, tag_patterns, state_filter)
            if summary is None:
                skipped += 1
            elif summary:
                jobs.append(summary)
    finally:
        if root_fd is not None:
            os.close(root_fd)
    jobs.sort(key=lambda job: job["job_id"], reverse=True)
    jobs.sort(key=lambda job: job.get("started_at", ""), reverse=True)
    truncated = limit > 0 and len(jobs) > limit
    if truncated:
        jobs = jobs[:limit]
    return {"root": str(root), "jobs": jobs, "truncated": truncated, "skipped": skipped}


def _summary(
    job_dir: JobDir, cwd_filter: str | None, tag_patterns: Sequence[str], state_filter: str | None
) -> dict[str, Any] | None:
    """One ``list`` row; ``None`` if ``meta.json`` is unreadable, ``{}`` if filtered out."""
    try:
        meta = read_meta(job_dir)
    except StateCorrupt:
        return None
    if cwd_filter is not None and meta.cwd != cwd_filter:
        return {}
    if tag_patterns and not tags_match(tag_patterns, meta.tags):
        return {}
    summary: dict[str, Any] = {"job_id": meta.job_id, "short_job_id": meta.job_id[:7]}
    try:
        state: JobState | None = read_state(job_dir)
    except StateCorrupt:
        state = None
    summary["state"] = state.status.value if state else "unknown"
    if state is not None and state.exit_code is not None:
        summary["exit_code"] = state.exit_code
    summary["created_at"] = meta.created_at
    if state is not None:
        if state.started_at is not None:
            summary["started_at"] = state.started_at
        if state.finished_at is not None:
            summary["finished_at"] = state.finished_at
        summary["updated_at"] = state.updated_at
        if state.reason is not None:
            summary["reason"] = state.reason
        summary.update(fault_fields(state))
    summary["tags"] = meta.tags
    summary["command"] = meta.command
    if state_filter is not None and summary["state"] != state_filter:
        return {}
    return summary


# -- metadata updates -----------------------------------------------------------------


@contextlib.contextmanager
def _meta_lock(job_dir: JobDir) -> Any:
    """Serialise read-modify-write cycles of ``meta.json`` (``tag set`` vs ``notify set``)."""
    fd = job_dir.open_file(".meta.lock", os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def set_tags(root: Path, given: str, tags: Sequence[str]) -> dict[str, Any]:
    """Replace a job's tags (validated, de-duplicated, first occurrence wins)."""
    clean = dedupe(validate_tag(tag) for tag in tags)
    with open_job(root, given) as job_dir, _meta_lock(job_dir):
        meta = read_meta(job_dir)
        meta.tags = clean
        write_meta(job_dir, meta)
    return {"job_id": job_dir.job_id, "tags": clean}


def set_notification(
    root: Path,
    given: str,
    *,
    command: str | None = None,
    output_pattern: str | None = None,
    output_match_type: str | None = None,
    output_stream: str | None = None,
    output_command: str | None = None,
    output_file: str | None = None,
) -> dict[str, Any]:
    """Update ``meta.json.notification`` only (never fires a sink), merging as upstream does."""
    from ._models import OutputMatch
    from ._notify import validate_pattern

    with open_job(root, given) as job_dir, _meta_lock(job_dir):
        meta = read_meta(job_dir)
        config = meta.notification or NotificationConfig()
        if command is not None:
            config.notify_command = command
        config.on_output_match = merge_output_match(
            config.on_output_match,
            pattern=output_pattern,
            match_type=output_match_type,
            stream=output_stream,
            command=output_command,
            file=output_file,
        )
        if config.on_output_match is not None:
            validate_pattern(config.on_output_match)
        meta.notification = None if config.is_empty else config
        write_meta(job_dir, meta)
    _ = OutputMatch
    return {"job_id": job_dir.job_id, "notification": config.to_dict()}


def merge_output_match(
    existing: Any,
    *,
    pattern: str | None,
    match_type: str | None,
    stream: str | None,
    command: str | None,
    file: str | None,
) -> Any:
    """Apply the given output-match options over ``existing``; an empty pattern clears it."""
    from ._models import OutputMatch

    if all(value is None for value in (pattern, match_type, stream, command, file)):
        return existing
    base = existing or OutputMatch(pattern="")
    merged = OutputMatch(
        pattern=pattern if pattern is not None else base.pattern,
        match_type=match_type if match_type is not None else base.match_type,
        stream=stream if stream is not None else base.stream,
        command=command if command is not None else base.command,
        file=file if file is not None else base.file,
    )
    return merged if merged.pattern else None
