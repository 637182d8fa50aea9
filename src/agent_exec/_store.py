"""Reading and writing job records, and telling whether a job's supervisor is alive.

Every function takes a :class:`~agent_exec._jobdir.JobDir` (the directory held by
descriptor) or, for callers that have only a path, a ``Path`` that is opened for the call
(its last component never followed). State files are replaced atomically (temp file in
the same directory, then ``rename``), so a reader never sees a torn file. Supervisor
liveness is an ``flock`` on ``supervisor.lock`` held for as long as the job is supervised:
the kernel drops it when the supervisor dies, however it dies, so a job can never be
reported ``running`` forever.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time

from ._errors import StateCorrupt
from ._jobdir import MAX_STATE_FILE, JobDir, StateUnreadable, dump_pretty
from ._models import JobMeta, JobState, JobStatus
from ._paths import FILE_MODE, LOCK_FILE, META_FILE, STATE_FILE
from ._timeutil import now_ts

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: read commands import this module
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

__all__ = [
    "MAX_STATE_FILE",
    "SUPERVISOR_LOST",
    "JobRef",
    "atomic_write_bytes",
    "atomic_write_json",
    "dump_pretty",
    "held",
    "lock_held_elsewhere",
    "open_lock",
    "pid_alive",
    "read_meta",
    "read_state",
    "read_state_raw",
    "supervision_claim",
    "supervisor_alive",
    "try_lock_exclusive",
    "write_meta",
    "write_state",
]

SUPERVISOR_LOST = "supervisor_lost"

#: A job directory: held by descriptor, or a path opened for the duration of one call.
if TYPE_CHECKING:
    from pathlib import Path

    JobRef = JobDir | Path

_FSYNC = os.environ.get("AGENT_EXEC_FSYNC", "") not in ("", "0")


@contextlib.contextmanager
def held(job: JobRef, *, reading: str = STATE_FILE) -> Iterator[JobDir]:
    """The :class:`JobDir` of ``job``; a path is opened here (``StateCorrupt`` naming
    ``reading`` if that fails) and closed afterwards."""
    if isinstance(job, JobDir):
        yield job
        return
    try:
        handle = JobDir.open_path(job)
    except OSError as exc:
        raise StateUnreadable(f"failed to read {job / reading}: {exc.strerror or exc}", exc.errno) from None
    with handle:
        yield handle


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def atomic_write_bytes(path: Path, data: bytes, *, mode: int = FILE_MODE) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new file, never a mix
    (for files outside job directories, e.g. installed skills)."""
    tmp = path.parent / f".tmp-{path.name}.{os.urandom(6).hex()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    try:
        try:
            _write_all(fd, data)
            if _FSYNC:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if _FSYNC:
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, dump_pretty(data))


def read_meta(job: JobRef) -> JobMeta:
    with held(job, reading=META_FILE) as handle:
        try:
            return JobMeta.from_dict(handle.read_json(META_FILE))
        except StateCorrupt as exc:
            where = str(handle.path / META_FILE)
            if where in exc.message:
                raise
            raise StateCorrupt(f"invalid {where}: {exc.message}") from None


def read_state_raw(job: JobRef) -> JobState:
    """``state.json`` exactly as written, without staleness detection."""
    with held(job) as handle:
        try:
            return JobState.from_dict(handle.read_json(STATE_FILE))
        except StateCorrupt as exc:
            where = str(handle.path / STATE_FILE)
            if where in exc.message:
                raise
            raise StateCorrupt(f"invalid {where}: {exc.message}") from None


def write_meta(job: JobRef, meta: JobMeta) -> None:
    with held(job, reading=META_FILE) as handle:
        handle.atomic_write(META_FILE, dump_pretty(meta.to_dict()))


def write_state(job: JobRef, state: JobState) -> None:
    with held(job) as handle:
        handle.atomic_write(STATE_FILE, dump_pretty(state.to_dict()))


# -- supervisor liveness ---------------------------------------------------------------


def open_lock(job: JobRef) -> int:
    """Open (creating it) the job's supervisor lock file; the fd is close-on-exec."""
    with held(job, reading=LOCK_FILE) as handle:
        return handle.open_file(LOCK_FILE, os.O_RDWR | os.O_CREAT)


def try_lock_exclusive(fd: int, *, patience: float = 0.0) -> bool:
    """Take the supervisor lock; readers hold it shared for microseconds, hence ``patience``."""
    deadline = time.monotonic() + patience
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.002)


@contextlib.contextmanager
def supervision_claim(job: JobRef, *, patience: float = 0.2) -> Iterator[int | None]:
    """Yield a locked lock fd if nobody supervises the job, else ``None``.

    A supervisor started inside the block inherits the fd (and with it the lock, which
    belongs to the open file description); the block closes only this process's copy.
    """
    fd = open_lock(job)
    try:
        yield fd if try_lock_exclusive(fd, patience=patience) else None
    finally:
        os.close(fd)


def pid_alive(pid: int) -> bool:
    """True if ``pid`` names a process (a permission error still means it exists)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def supervisor_alive(job: JobRef, state: JobState) -> bool:
    """Is somebody still supervising this ``running`` job?

    Jobs written by this implementation have a lock file whose ``flock`` is held by the
    supervisor; jobs without one (written by upstream 0.2.3) fall back to the pid.
    """
    try:
        with held(job, reading=LOCK_FILE) as handle:
            fd = handle.open_file(LOCK_FILE, os.O_RDONLY)
    except (FileNotFoundError, StateCorrupt):
        return state.pid is not None and pid_alive(state.pid)
    except OSError:
        return True
    try:
        return lock_held_elsewhere(fd)
    finally:
        os.close(fd)


def lock_held_elsewhere(fd: int) -> bool:
    """True if another open file description holds the file of ``fd`` locked (a live
    supervisor holds its ``supervisor.lock`` for as long as it supervises)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        return exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
    return False


def _mark_lost(state: JobState) -> JobState:
    now = now_ts()
    return JobState(
        job_id=state.job_id,
        status=JobStatus.FAILED,
        updated_at=now,
        started_at=state.started_at,
        pid=state.pid,
        finished_at=now,
        reason=SUPERVISOR_LOST,
        workload=state.workload,
    )


def read_state(job: JobRef) -> JobState:
    """``state.json``, with a dead supervisor's ``running`` job repaired to ``failed``.

    The repair is persisted (under the supervisor lock, so it can never race a live
    supervisor) so that ``gc`` and every later reader agree.
    """
    with held(job) as handle:
        state = read_state_raw(handle)
        if state.status is not JobStatus.RUNNING or supervisor_alive(handle, state):
            return state
        # The supervisor writes its terminal state before it lets go of the lock: re-read.
        state = read_state_raw(handle)
        if state.status is not JobStatus.RUNNING:
            return state
        lost = _mark_lost(state)
        try:
            with supervision_claim(handle, patience=0.05) as fd:
                if fd is not None:
                    current = read_state_raw(handle)
                    if current.status is not JobStatus.RUNNING:
                        return current
                    write_state(handle, lost)
        except OSError:
            # Not persisted (full disk, read-only root): report it the same way on every
            # read, dated by the last sign of life, not by the time of this read.
            lost.finished_at = lost.updated_at = state.updated_at
        return lost
