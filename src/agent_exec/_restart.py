"""``restart``: relaunch a job in place (same id, same directory) from its ``meta.json``.

The CLI, ``serve``, the MCP server and :class:`~agent_exec.JobRunner` all call
:func:`restart_job`; they differ only in how a detached supervisor is started (the CLI
forks, hosts with threads or an event loop exec the launcher).

Why it is safe against concurrent ``restart``/``start``/``gc``/``delete`` of the same job:

- Restarts of one job are serialised by an ``flock`` on ``restart.lock`` in the job
  directory. The file holds a generation number, bumped after every relaunch: a restart
  that had to wait for another one finds the number changed and *joins* it (returns the
  job that restart launched) instead of killing it again.
- Two instances never run at once: a job is relaunched only by whoever holds the
  supervisor lock (``supervisor.lock``) exclusively, exactly like ``start``, and a live
  supervisor holds it for as long as it supervises. A running instance is signalled
  (``signal``, then ``SIGKILL`` after a grace period) and its terminal state awaited
  before the lock can be taken. A workload left behind by a *lost* supervisor is
  SIGKILLed first when its recorded identity (pgid + start time) proves it is the job's.
- ``gc``/``delete`` remove a job only while holding its supervisor lock, and refuse a job
  whose ``restart.lock`` is held (``_gc._remove_job``): they can never empty the directory
  between the old instance's end and the new one's launch.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._errors import InvalidState, JobNotFound, StateCorrupt
from ._jobs import PollingWatch, launch_spec
from ._models import JobMeta, JobState, JobStatus
from ._paths import (
    COMPLETION_EVENT_FILE,
    FILE_MODE,
    FULL_LOG,
    META_FILE,
    NOTIFICATION_EVENTS_FILE,
    RESTART_LOCK_FILE,
    STDERR_LOG,
    STDOUT_LOG,
    resolve_job,
)
from ._process import group_alive, resolve_signal, signal_group, split_env_pair
from ._spec import LaunchSpec
from ._store import (
    SUPERVISOR_LOST,
    open_lock,
    read_meta,
    read_state_raw,
    try_lock_exclusive,
    write_state,
)
from ._timeutil import now_ts

#: Seconds a running instance gets after ``signal`` before it is sent ``SIGKILL``, and
#: again after ``SIGKILL`` before the restart gives up.
DEFAULT_GRACE = 5.0
#: Seconds a restart waits for another restart of the same job to finish.
LOCK_PATIENCE = 30.0

Launch = Callable[[LaunchSpec, int], int]


@dataclass(frozen=True)
class Restarted:
    """What :func:`restart_job` did: the job, and whether it joined a concurrent restart."""

    job_id: str
    job_dir: Path
    meta: JobMeta
    joined: bool


def runtime_env(meta: JobMeta) -> list[str]:
    """The ``KEY=VALUE`` pairs to relaunch with.

    ``create`` persists them (``env_vars_runtime``); a ``run`` job keeps only the display
    form, which is the real value except for ``--mask``ed keys, whose values are never
    stored anywhere: such a job cannot be relaunched faithfully, so it is refused.
    """
    if meta.env_vars_runtime:
        return list(meta.env_vars_runtime)
    masked = [key for key in meta.env_keys if key in set(meta.mask)]
    if masked:
        raise InvalidState(
            f"job {meta.job_id} cannot be restarted: the values of its masked --env keys "
            f"({', '.join(masked)}) were not persisted; create the job with 'create' to restart it"
        )
    return [pair for pair in meta.env_vars if split_env_pair(pair)[0]]


def _open_restart_lock(job_dir: Path) -> int:
    try:
        return os.open(job_dir / RESTART_LOCK_FILE, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        pass
    read_meta(job_dir)  # still a job (not being deleted)?
    return os.open(
        job_dir / RESTART_LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, FILE_MODE
    )


def _generation(fd: int) -> int:
    raw = os.pread(fd, 32, 0).strip()
    return int(raw) if raw.isdigit() else 0


def _set_generation(fd: int, value: int) -> None:
    data = str(value).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def _claim_stopped(job_dir: Path, given: str, signum: int, grace: float) -> int:
    """Return the supervisor lock, locked by us, once no instance of the job runs.

    A running instance gets ``signum``, then ``SIGKILL`` after ``grace`` seconds.
    """
    watch = PollingWatch(job_dir)
    sent = 0  # 0: nothing yet, 1: ``signum`` sent, 2: SIGKILL sent
    deadline = time.monotonic() + grace
    while True:
        fd = open_lock(job_dir)
        if try_lock_exclusive(fd, patience=0.05):
            return fd
        os.close(fd)
        try:
            state: JobState | None = read_state_raw(job_dir)
        except StateCorrupt:
            state = None
        now = time.monotonic()
        target = _signal_target(state)
        if target is not None and sent < 2 and (sent == 0 or now >= deadline):
            signal_group(target, signum if sent == 0 else signal.SIGKILL)
            sent += 1
            deadline = now + grace
        elif now >= deadline:
            shown = state.status.value if state is not None else "unknown"
            raise InvalidState(
                f"job {given} could not be restarted: its supervisor still holds it "
                f"(state '{shown}') after {grace:g} s"
            )
        watch.wait(min(0.5, max(0.0, deadline - time.monotonic())))


def _signal_target(state: JobState | None) -> int | None:
    """Whom to signal to stop a running instance: the workload's process group once it is
    recorded, else the supervisor (which passes catchable signals on)."""
    if state is None or state.status is not JobStatus.RUNNING:
        return None
    return state.workload.pgid if state.workload is not None else state.pid


def _stop_orphan(job_dir: Path, given: str, grace: float) -> None:
    """With the supervisor lock ours, make sure no workload of a *lost* supervisor is still
    running (a supervisor killed with SIGKILL leaves its workload behind): SIGKILL its
    process group, but only when the recorded identity proves the group is the job's."""
    try:
        state = read_state_raw(job_dir)
    except StateCorrupt:
        return
    identity = state.workload
    lost = state.status is JobStatus.RUNNING or state.reason == SUPERVISOR_LOST
    if not lost or identity is None:
        return
    deadline = time.monotonic() + grace
    while group_alive(identity.pgid, identity.start_ticks):
        if time.monotonic() >= deadline:
            raise InvalidState(f"job {given} could not be restarted: its previous workload would not stop")
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(identity.pgid, signal.SIGKILL)
        time.sleep(0.05)


def _reset(job_dir: Path, job_id: str) -> None:
    """Empty the logs and drop the previous run's completion records; state ``created``."""
    for name in (STDOUT_LOG, STDERR_LOG, FULL_LOG):
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW
        os.close(os.open(job_dir / name, flags, FILE_MODE))
    for name in (COMPLETION_EVENT_FILE, NOTIFICATION_EVENTS_FILE):
        with contextlib.suppress(FileNotFoundError):
            (job_dir / name).unlink()
    write_state(job_dir, JobState(job_id=job_id, status=JobStatus.CREATED, updated_at=now_ts()))


def restart_job(
    root: Path,
    given: str,
    *,
    launch: Launch,
    signal_name: str | int = "TERM",
    auto_gc: Any = None,
    grace: float = DEFAULT_GRACE,
    patience: float = LOCK_PATIENCE,
) -> Restarted:
    """Relaunch job ``given`` from its ``meta.json`` under the same id and directory.

    A running instance is stopped first (``signal_name``, then ``SIGKILL`` after ``grace``
    seconds) and its terminal state awaited; the logs and completion records are cleared;
    then ``launch(spec, locked_lock_fd)`` hands the job to a new detached supervisor. Works
    on ``created``, ``running`` and finished jobs. Blocking: call it from a worker thread
    in async code.

    :raises JobNotFound, AmbiguousJobId: from resolving ``given`` (or the job was deleted
        before the restart could begin).
    :raises InvalidSignal: for an unknown ``signal_name``.
    :raises InvalidState: the job cannot be relaunched (masked env values were not
        persisted; an instance would not stop; another restart holds it too long).
    """
    signum = resolve_signal(signal_name)
    job_id, job_dir = resolve_job(root, given)
    meta = read_meta(job_dir)
    env_pairs = runtime_env(meta)
    try:
        return _restart_locked(job_id, job_dir, given, env_pairs, launch, signum, auto_gc, grace, patience)
    except (FileNotFoundError, StateCorrupt):
        # A delete/gc that won the race emptied the directory before the restart took hold.
        if not (job_dir / META_FILE).exists():
            raise JobNotFound(given) from None
        raise


def _restart_locked(
    job_id: str,
    job_dir: Path,
    given: str,
    env_pairs: list[str],
    launch: Launch,
    signum: int,
    auto_gc: Any,
    grace: float,
    patience: float,
) -> Restarted:
    try:
        restart_fd = _open_restart_lock(job_dir)
    except (FileNotFoundError, StateCorrupt):
        raise JobNotFound(given) from None
    try:
        seen = _generation(restart_fd)
        if not try_lock_exclusive(restart_fd, patience=patience):
            raise InvalidState(f"job {given} is being restarted by another caller; try again")
        generation = _generation(restart_fd)
        try:
            meta = read_meta(job_dir)
        except StateCorrupt:
            _abandon(job_dir)
            raise JobNotFound(given) from None
        if generation != seen:  # another restart ran while we waited: join it
            return Restarted(job_id, job_dir, meta, joined=True)
        lock_fd = _claim_stopped(job_dir, given, signum, grace)
        try:
            try:
                meta = read_meta(job_dir)
            except StateCorrupt:
                raise JobNotFound(given) from None
            _stop_orphan(job_dir, given, grace)
            _reset(job_dir, job_id)
            spec = launch_spec(job_dir, meta, env_pairs=env_pairs, cwd=meta.cwd)
            spec.auto_gc = auto_gc
            try:
                launch(spec, lock_fd)
            except BaseException as exc:
                now = now_ts()
                failed = JobState(
                    job_id=job_id,
                    status=JobStatus.FAILED,
                    updated_at=now,
                    finished_at=now,
                    reason=f"restart_failed: {exc}",
                )
                with contextlib.suppress(OSError):
                    write_state(job_dir, failed)
                raise
        finally:
            os.close(lock_fd)
        _set_generation(restart_fd, generation + 1)
        return Restarted(job_id, job_dir, meta, joined=False)
    finally:
        os.close(restart_fd)


def _abandon(job_dir: Path) -> None:
    """A delete/gc emptied the job directory while this restart waited: take back the
    ``restart.lock`` it may have created there, so the directory can go (or goes now)."""
    with contextlib.suppress(OSError):
        (job_dir / RESTART_LOCK_FILE).unlink()
    with contextlib.suppress(OSError):
        job_dir.rmdir()


def display_env(meta: JobMeta) -> list[str]:
    """The ``env_vars`` shown for a restarted job (masked values as ``***``)."""
    from ._jobs import masked_env_view

    return masked_env_view(meta) if meta.env_vars_runtime else list(meta.env_vars)


def restart_data(
    done: Restarted, state: JobState, *, elapsed_ms: int, waited_ms: int, max_bytes: int
) -> dict[str, Any]:
    """The ``restart`` document: ``start``'s fields, plus ``joined`` (this call joined a
    restart already in progress instead of relaunching the job a second time)."""
    from ._jobs import run_data

    data = run_data(
        done.job_id,
        done.job_dir,
        state,
        tags=done.meta.tags,
        env_vars=display_env(done.meta),
        elapsed_ms=elapsed_ms,
        waited_ms=waited_ms,
        max_bytes=max_bytes,
    )
    data["joined"] = done.joined
    return data
