"""Job operations on the store: define, launch, observe, and the read side (status, tail,
wait, kill, list). The CLI, ``serve`` and :class:`~agent_exec.JobRunner` all go through
these functions, so every way in creates and reports jobs identically.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ._errors import InvalidState, InvalidTag, IoError, StateCorrupt, StdinTooLarge
from ._logs import ENCODING, file_size, read_head, read_tail
from ._models import JobMeta, JobState, JobStatus, NotificationConfig
from ._paths import (
    DIR_MODE,
    FILE_MODE,
    FULL_LOG,
    LOCK_FILE,
    STDERR_LOG,
    STDIN_FILE,
    STDOUT_LOG,
    canonical_cwd,
    iter_job_dirs,
    new_job_id,
    resolve_job,
)
from ._process import DEFAULT_WRAPPER, group_alive, split_env_pair
from ._spec import LaunchSpec
from ._store import (
    SUPERVISOR_LOST,
    lock_held_elsewhere,
    read_meta,
    read_state,
    read_state_raw,
    supervision_claim,
    write_meta,
    write_state,
)
from ._timeutil import now_ts

DEFAULT_MAX_BYTES = 65536
#: How long ``run`` waits for completion after it first sees output (see :func:`observe`).
OUTPUT_SETTLE = 0.15
DEFAULT_STDIN_MAX_BYTES = 64 * 1024 * 1024
_TAG = re.compile(r"^[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*$")


# -- tags -----------------------------------------------------------------------------


def validate_tag(tag: str) -> str:
    """A stored tag: dot-separated segments of ASCII letters, digits and ``-``."""
    if not _TAG.match(tag):
        raise InvalidTag(
            f"invalid tag {tag!r}: use dot-separated segments of letters, digits and '-' (e.g. ci.build)"
        )
    return tag


def validate_tag_pattern(pattern: str) -> str:
    """A tag filter: a stored tag (exact) or ``<tag>.*`` (namespace)."""
    base = pattern[:-2] if pattern.endswith(".*") else pattern
    if not _TAG.match(base):
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


@dataclass
class JobDefinition:
    """What to run and how: the definition-time options of ``run``/``create``."""

    command: list[str]
    cwd: str | None = None
    env: list[str] = field(default_factory=list)
    env_files: list[str] = field(default_factory=list)
    inherit_env: bool = True
    mask: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    timeout_s: float = 0
    kill_after_s: float = 0
    progress_every_s: float = 0
    notification: NotificationConfig | None = None
    #: The shell wrapper; empty: the command is exec'd directly (the library's argv policy).
    wrapper: list[str] = field(default_factory=lambda: list(DEFAULT_WRAPPER))
    #: Record the exact argv exec'd (``meta.json`` ``argv`` and ``shell``): library jobs.
    record_argv: bool = False

    def masked_env(self) -> list[str]:
        masked = set(self.mask)
        shown = []
        for pair in self.env:
            key, _ = split_env_pair(pair)
            shown.append(f"{key}=***" if key in masked else pair)
        return shown


StdinSource = bytes | Path | IO[bytes] | None


def _materialise_stdin(job_dir: Path, source: bytes | Path | IO[bytes], limit: int) -> None:
    path = job_dir / STDIN_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
    try:
        with open(fd, "wb", closefd=True) as out:
            if isinstance(source, bytes):
                if len(source) > limit:
                    raise StdinTooLarge(limit)
                out.write(source)
                return
            stream: IO[bytes]
            with contextlib.ExitStack() as stack:
                if isinstance(source, Path):
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
            path.unlink()
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
) -> tuple[str, Path, JobMeta]:
    """Create the job directory with ``meta.json``, ``stdin.bin`` and empty logs.

    If stdin cannot be materialised the whole directory is removed again: a failed
    ``run``/``create`` leaves nothing half-made behind.
    """
    try:
        root.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    except OSError as exc:
        raise IoError.from_os(exc, "failed to create jobs root", root) from None
    job_id = new_job_id(root)
    job_dir = root / job_id
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
    try:
        job_dir.mkdir(mode=DIR_MODE)
    except OSError as exc:
        raise IoError.from_os(exc, "failed to create job directory", job_dir) from None
    try:
        if stdin is not None:
            _materialise_stdin(job_dir, stdin, stdin_max_bytes)
            meta.stdin_file = STDIN_FILE
        write_meta(job_dir, meta)
        # The CLI pre-creates the logs (readers may look before the supervisor starts);
        # an in-process runner's supervisor creates them an instant later.
        for name in (STDOUT_LOG, STDERR_LOG, FULL_LOG) if precreate_logs else ():
            os.close(os.open(job_dir / name, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, FILE_MODE))
    except BaseException:
        import shutil

        shutil.rmtree(job_dir, ignore_errors=True)
        raise
    return job_id, job_dir, meta


def write_created_state(job_dir: Path, job_id: str) -> JobState:
    state = JobState(job_id=job_id, status=JobStatus.CREATED, updated_at=now_ts())
    write_state(job_dir, state)
    return state


def launch_spec(
    job_dir: Path,
    meta: JobMeta,
    *,
    env_pairs: Sequence[str],
    cwd: str | None,
    full_log: Path | None = None,
) -> LaunchSpec:
    return LaunchSpec(
        job_id=meta.job_id,
        job_dir=job_dir,
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
        spec, lock_fd, lambda pid: write_state(spec.job_dir, running_state(spec.job_id, pid))
    )


def launch_detached_exec(spec: LaunchSpec, lock_fd: int) -> int:
    """:func:`launch_detached_locked` for hosts that must not fork (threads, event loops)."""
    from ._launch import exec_supervisor

    return exec_supervisor(
        spec, lock_fd, lambda pid: write_state(spec.job_dir, running_state(spec.job_id, pid))
    )


def launch_new_job(spec: LaunchSpec, launch: Callable[[LaunchSpec, int], int] | None = None) -> None:
    """Launch a job directory just made by :func:`create_job`: all or nothing.

    If the launch fails, the workload was never started and the directory is removed
    again, so the caller gets an error and no job (a retry cannot run the command twice).
    ``launch`` defaults to :func:`launch_detached_locked` (the CLI forks);
    :func:`launch_detached_exec` is for threaded hosts.
    """
    try:
        with supervision_claim(spec.job_dir) as lock_fd:
            assert lock_fd is not None  # a brand-new job directory
            (launch or launch_detached_locked)(spec, lock_fd)
    except BaseException:
        import shutil

        shutil.rmtree(spec.job_dir, ignore_errors=True)
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
    launch_new_job(spec, launch)
    return job_id, job_dir, meta


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


def start_created(root: Path, given: str, *, auto_gc: Any = None) -> tuple[str, Path, JobMeta]:
    """Launch a ``created`` job exactly once, even if several callers race to start it."""
    job_id, job_dir = resolve_job(root, given)
    meta = read_meta(job_dir)
    read_state_raw(job_dir)
    with supervision_claim(job_dir) as lock_fd:
        state = read_state_raw(job_dir)
        if lock_fd is None or state.status is not JobStatus.CREATED:
            shown = state.status.value if lock_fd is not None else "running"
            raise InvalidState(f"job {given} is in '{shown}' state; only 'created' jobs can be started")
        if queued_by_live_runner(state):
            raise InvalidState(
                f"job {given} is queued by a JobRunner (pid {state.pid}); it starts in its turn"
            )
        spec = launch_spec(job_dir, meta, env_pairs=meta.env_vars_runtime, cwd=meta.cwd)
        spec.auto_gc = auto_gc
        try:
            launch_detached_locked(spec, lock_fd)
        except BaseException:
            # Not started: the job stays ``created`` (we still hold its lock).
            with contextlib.suppress(OSError):
                write_state(job_dir, state)
            raise
    return job_id, job_dir, meta


# -- observing ------------------------------------------------------------------------


class SupervisorWatch:
    """Wakes a waiter the moment a job's supervisor lets go of its lock (the job finished
    or the supervisor died), instead of polling ``state.json``."""

    def __init__(self, job_dir: Path) -> None:
        import threading

        self._threading = threading
        self._path = job_dir / LOCK_FILE
        self._released = threading.Event()
        self._thread: Any = None

    def _watch(self) -> None:
        try:
            fd = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return
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
        if self._released.is_set():
            self._released.clear()
            self._thread = None
        if self._thread is None:
            thread = self._threading.Thread(target=self._watch, daemon=True)
            try:
                thread.start()
            except RuntimeError:  # no thread to spare (process limit): poll instead
                time.sleep(max(0.0, min(timeout, 0.05)))
                return False
            self._thread = thread
        if timeout <= 0:
            return self._released.is_set()
        return self._released.wait(timeout)


class PollingWatch:
    """:class:`SupervisorWatch`'s interface for long-lived hosts (``serve``, ``mcp``).

    It probes the lock every ``interval`` seconds instead of blocking a thread on it, so
    an observation that gives up at its deadline leaves no thread (and no open file)
    behind while the job keeps running: a host answering thousands of bounded calls
    about long jobs stays flat.
    """

    def __init__(self, job_dir: Path, interval: float = 0.02) -> None:
        self._path = job_dir / LOCK_FILE
        self._interval = interval

    def _released(self) -> bool:
        try:
            fd = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC)
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
    job_dir: Path, *, wait: bool, until: float, forever: bool, polling: bool = False
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
            if file_size(job_dir / STDOUT_LOG) or file_size(job_dir / STDERR_LOG):
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
    job_dir: Path, job_id: str, *, wait: bool, until: float, forever: bool
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


def output_fields(job_dir: Path, max_bytes: int) -> dict[str, Any]:
    """The bounded inline output block shared by ``run``, ``start`` and ``wait``."""
    stdout, stdout_range, stdout_total = read_head(job_dir / STDOUT_LOG, max_bytes)
    stderr, stderr_range, stderr_total = read_head(job_dir / STDERR_LOG, max_bytes)
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
    job_dir: Path,
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
    data["stdout_log_path"] = str(job_dir / STDOUT_LOG)
    data["stderr_log_path"] = str(job_dir / STDERR_LOG)
    data["elapsed_ms"] = elapsed_ms
    data["waited_ms"] = waited_ms
    data.update(output_fields(job_dir, max_bytes))
    data.update(outcome_fields(state))
    return data


# -- the read side --------------------------------------------------------------------


def status_data(root: Path, given: str) -> dict[str, Any]:
    job_id, job_dir = resolve_job(root, given)
    meta = read_meta(job_dir)
    state = read_state(job_dir)
    data: dict[str, Any] = {"job_id": job_id, "state": state.status.value}
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
    job_id, job_dir = resolve_job(root, given)
    stdout, stdout_range, stdout_total = read_tail(job_dir / STDOUT_LOG, tail_lines, max_bytes)
    stderr, stderr_range, stderr_total = read_tail(job_dir / STDERR_LOG, tail_lines, max_bytes)
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


def wait_for(job_dir: Path, *, until: float | None, poll: float = 1.0, polling: bool = False) -> JobState:
    """Block until the job is terminal or ``until`` seconds passed (``None``: no deadline).

    A supervised job wakes the waiter the moment it finishes; only a ``created`` job (no
    supervisor yet) is polled, every ``poll`` seconds.
    """
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
    job_id, job_dir = resolve_job(root, given)
    state = wait_for(job_dir, until=until, poll=max(poll, 1.0) if poll else 1.0, polling=polling)
    data: dict[str, Any] = {"job_id": job_id, "state": state.status.value}
    if state.is_terminal and state.exit_code is not None:
        data["exit_code"] = state.exit_code
    outputs = output_fields(job_dir, max_bytes)
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
    for entry in iter_job_dirs(root):
        job_dir = Path(entry.path)
        try:
            meta = read_meta(job_dir)
        except StateCorrupt:
            skipped += 1
            continue
        if cwd_filter is not None and meta.cwd != cwd_filter:
            continue
        if tag_patterns and not tags_match(tag_patterns, meta.tags):
            continue
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
            continue
        jobs.append(summary)
    jobs.sort(key=lambda job: job["job_id"], reverse=True)
    jobs.sort(key=lambda job: job.get("started_at", ""), reverse=True)
    truncated = limit > 0 and len(jobs) > limit
    if truncated:
        jobs = jobs[:limit]
    return {"root": str(root), "jobs": jobs, "truncated": truncated, "skipped": skipped}


# -- metadata updates -----------------------------------------------------------------


@contextlib.contextmanager
def _meta_lock(job_dir: Path) -> Any:
    """Serialise read-modify-write cycles of ``meta.json`` (``tag set`` vs ``notify set``)."""
    fd = os.open(job_dir / ".meta.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def set_tags(root: Path, given: str, tags: Sequence[str]) -> dict[str, Any]:
    """Replace a job's tags (validated, de-duplicated, first occurrence wins)."""
    clean = dedupe(validate_tag(tag) for tag in tags)
    job_id, job_dir = resolve_job(root, given)
    with _meta_lock(job_dir):
        meta = read_meta(job_dir)
        meta.tags = clean
        write_meta(job_dir, meta)
    return {"job_id": job_id, "tags": clean}


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

    job_id, job_dir = resolve_job(root, given)
    with _meta_lock(job_dir):
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
    return {"job_id": job_id, "notification": config.to_dict()}


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
