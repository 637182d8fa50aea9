"""Reading and writing job records, and telling whether a job's supervisor is alive.

State files are replaced atomically (temp file in the same directory, then ``rename``),
so a reader never sees a torn file. Supervisor liveness is an ``flock`` on
``supervisor.lock`` held for as long as the job is supervised: the kernel drops it when
the supervisor dies, however it dies, so a job can never be reported ``running`` forever.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from ._errors import StateCorrupt
from ._models import JobMeta, JobState, JobStatus
from ._paths import FILE_MODE, LOCK_FILE, META_FILE, STATE_FILE
from ._timeutil import now_ts

SUPERVISOR_LOST = "supervisor_lost"
#: Larger ``meta.json``/``state.json`` files are refused as corrupt (ours are a few KiB).
MAX_STATE_FILE = 16 << 20

_FSYNC = os.environ.get("AGENT_EXEC_FSYNC", "") not in ("", "0")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def atomic_write_bytes(path: Path, data: bytes, *, mode: int = FILE_MODE) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new file, never a mix.

    With ``AGENT_EXEC_FSYNC=1`` the data and the directory entry are also flushed to disk,
    so the new content survives a power cut (costs one or two disk flushes per write).
    """
    tmp = path.parent / f".tmp-{path.name}.{os.urandom(6).hex()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
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


def dump_pretty(data: Any) -> bytes:
    """Pretty JSON with 2-space indentation and no trailing newline (the state-file layout)."""
    return orjson.dumps(data, option=orjson.OPT_INDENT_2)


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, dump_pretty(data))


def read_json(path: Path) -> Any:
    """Parse a JSON file; raise :class:`StateCorrupt` naming the file if that fails.

    Only a regular file of sane size is read: a FIFO, device or symlink planted in place of
    a state file must give an error, not a hang or an endless read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise StateCorrupt(f"failed to read {path}: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise StateCorrupt(f"failed to read {path}: not a regular file")
        if info.st_size > MAX_STATE_FILE:
            raise StateCorrupt(f"failed to read {path}: larger than {MAX_STATE_FILE} bytes")
        with open(fd, "rb", closefd=False) as file:
            raw = file.read(MAX_STATE_FILE + 1)
    except OSError as exc:
        raise StateCorrupt(f"failed to read {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise StateCorrupt(f"failed to parse {path}: {exc}") from None


def read_meta(job_dir: Path) -> JobMeta:
    path = job_dir / META_FILE
    try:
        return JobMeta.from_dict(read_json(path))
    except StateCorrupt as exc:
        if str(path) in exc.message:
            raise
        raise StateCorrupt(f"invalid {path}: {exc.message}") from None


def read_state_raw(job_dir: Path) -> JobState:
    """``state.json`` exactly as written, without staleness detection."""
    path = job_dir / STATE_FILE
    try:
        return JobState.from_dict(read_json(path))
    except StateCorrupt as exc:
        if str(path) in exc.message:
            raise
        raise StateCorrupt(f"invalid {path}: {exc.message}") from None


def write_meta(job_dir: Path, meta: JobMeta) -> None:
    atomic_write_json(job_dir / META_FILE, meta.to_dict())


def write_state(job_dir: Path, state: JobState) -> None:
    atomic_write_json(job_dir / STATE_FILE, state.to_dict())


# -- supervisor liveness ---------------------------------------------------------------


def open_lock(job_dir: Path) -> int:
    """Open (creating it) the job's supervisor lock file; the fd is close-on-exec."""
    return os.open(job_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)


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
def supervision_claim(job_dir: Path, *, patience: float = 0.2) -> Iterator[int | None]:
    """Yield a locked lock fd if nobody supervises the job, else ``None``.

    A supervisor started inside the block inherits the fd (and with it the lock, which
    belongs to the open file description); the block closes only this process's copy.
    """
    fd = open_lock(job_dir)
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


def supervisor_alive(job_dir: Path, state: JobState) -> bool:
    """Is somebody still supervising this ``running`` job?

    Jobs written by this implementation have a lock file whose ``flock`` is held by the
    supervisor; jobs without one (written by upstream 0.2.3) fall back to the pid.
    """
    try:
        fd = os.open(job_dir / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
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


def _mark_lost(job_dir: Path, state: JobState) -> JobState:
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


def read_state(job_dir: Path) -> JobState:
    """``state.json``, with a dead supervisor's ``running`` job repaired to ``failed``.

    The repair is persisted (under the supervisor lock, so it can never race a live
    supervisor) so that ``gc`` and every later reader agree.
    """
    state = read_state_raw(job_dir)
    if state.status is not JobStatus.RUNNING or supervisor_alive(job_dir, state):
        return state
    # The supervisor writes its terminal state before it lets go of the lock: re-read.
    state = read_state_raw(job_dir)
    if state.status is not JobStatus.RUNNING:
        return state
    lost = _mark_lost(job_dir, state)
    try:
        with supervision_claim(job_dir, patience=0.05) as fd:
            if fd is not None:
                current = read_state_raw(job_dir)
                if current.status is not JobStatus.RUNNING:
                    return current
                write_state(job_dir, lost)
    except OSError:
        # Not persisted (full disk, read-only root): report it the same way on every
        # read, dated by the last sign of life, not by the time of this read.
        lost.finished_at = lost.updated_at = state.updated_at
    return lost
