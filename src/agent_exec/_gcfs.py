"""``gc``/``delete`` on the filesystem: scanning job directories and removing them, by
descriptor relative to the root (blocking work, run in worker threads).

Nothing outside the root is touched: job directories are opened relative to the root with
``O_NOFOLLOW``; symlinks, inside job directories or in place of them, are never followed,
neither for size accounting (a symlink counts 0 bytes) nor for removal (the link itself is
unlinked). Only job names (:func:`~agent_exec._paths.is_job_name`) are looked at.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import orjson

from ._errors import IoError, StateCorrupt
from ._gcpolicy import ScanRecord, may_be_candidate
from ._jobdir import JobDir
from ._models import JobMeta, JobState, JobStatus
from ._paths import LOCK_FILE, META_FILE, RESTART_LOCK_FILE, STATE_FILE, is_job_name
from ._store import lock_held_elsewhere, pid_alive, read_state
from ._timeutil import format_ts, parse_ts

#: Attempts at emptying a directory that keeps gaining entries (an atomic write's temp file).
_RMDIR_ATTEMPTS = 3

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def os_error_text(exc: OSError) -> str:
    """``No such file or directory (os error 2)``: the form upstream's messages carry."""
    if exc.errno is None:
        return str(exc)
    return f"{exc.strerror or os.strerror(exc.errno)} (os error {exc.errno})"


def printable(name: str) -> bool:
    """Can ``name`` be reported in JSON? (Names that are not UTF-8 are skipped, unlisted.)"""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# -- blocking I/O helpers (run in worker threads) ----------------------------------------


def _read_at(dir_fd: int, name: str) -> bytes:
    fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    with open(fd, "rb", closefd=True) as file:
        return file.read()


def _tree_size(dir_fd: int) -> int:
    """Bytes in the regular files below ``dir_fd``; symlinks count 0 and are not followed."""
    total = 0
    try:
        with os.scandir(dir_fd) as entries:
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        sub = os.open(entry.name, _DIR_FLAGS, dir_fd=dir_fd)
                        try:
                            total += _tree_size(sub)
                        finally:
                            os.close(sub)
                    elif entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_size
                except OSError:
                    continue  # unreadable parts count as 0
    except OSError:
        return total
    return total


def _lock_held(job_fd: int) -> bool | None:
    """Does a supervisor hold this job's ``supervisor.lock``? ``None``: there is no lock file."""
    try:
        fd = os.open(LOCK_FILE, _FILE_FLAGS, dir_fd=job_fd)
    except FileNotFoundError:
        return None
    except OSError:
        return False
    try:
        return lock_held_elsewhere(fd)
    finally:
        os.close(fd)


#: OS errors that say nothing about the job, only about this moment (descriptor or memory
#: pressure, an interrupted call): a scan that meets one reports ``io_error: ...`` and the
#: job is left alone, never called ``state_unreadable``.
_TRANSIENT = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EAGAIN, errno.EINTR, errno.ENOBUFS, errno.EIO}
)
#: A GC timestamp later than now by more than this is not believed (see :func:`gc_timestamp`).
CLOCK_SKEW = 300.0


def io_error_reason(os_errno: int | None) -> str | None:
    """``io_error: <strerror> (os error <n>)`` for a transient error, else ``None``."""
    if os_errno is None or os_errno not in _TRANSIENT:
        return None
    return f"io_error: {os.strerror(os_errno)} (os error {os_errno})"


def gc_timestamp(state: JobState, state_mtime: float, now: float) -> str:
    """When the job finished, for ``gc``: ``finished_at`` (else ``updated_at``) as recorded.

    An empty one is reported ``no_timestamp`` as the contract says. A recorded time that
    does not parse, or lies in the future (a clock set back, or a
    hand-edited file), would make the job immortal: ``gc`` then goes by the time
    ``state.json`` was last written (its mtime, from this machine's clock), and if that is
    in the future too, by ``now`` (too recent, until the clock catches up).
    """
    recorded = state.finished_at if state.finished_at is not None else state.updated_at
    if recorded == "":
        return recorded  # ``no_timestamp`` (the contract's own reason)
    when = parse_ts(recorded)
    if when is not None and when <= now + CLOCK_SKEW:
        return recorded
    return format_ts(state_mtime if state_mtime <= now + CLOCK_SKEW else now)


def _skipped(name: str, exc: BaseException) -> ScanRecord:
    """The record of a job that could not be read: ``io_error`` if that was transient."""
    reason = io_error_reason(getattr(exc, "errno", None) or getattr(exc, "os_errno", None))
    return ScanRecord(name, None, error=reason)


def scan_one(root: Path, root_fd: int, name: str, cutoff: str, now: float) -> ScanRecord | None:
    """Read one job directory; ``None`` if it vanished (a concurrent ``gc`` removed it) or
    was swapped for a symlink or file since it was listed (ignored like a file)."""
    try:
        job = JobDir.open(root, name, root_fd=root_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            return None
        return _skipped(name, exc)
    with job:
        try:
            state = JobState.from_dict(orjson.loads(_read_at(job.fd, STATE_FILE)))
        except FileNotFoundError:
            if not _exists_at(root_fd, name):
                return None
            return ScanRecord(name, None)
        except OSError as exc:
            return _skipped(name, exc)
        except (orjson.JSONDecodeError, StateCorrupt):
            return ScanRecord(name, None)
        if state.status is JobStatus.RUNNING:
            # Repairs (and persists) a job whose supervisor died to ``failed``.
            try:
                state = read_state(job)
            except (OSError, StateCorrupt) as exc:
                return _skipped(name, exc)
        try:
            mtime = os.stat(STATE_FILE, dir_fd=job.fd, follow_symlinks=False).st_mtime
        except OSError:
            mtime = now
        gc_ts = gc_timestamp(state, mtime, now)
        if not may_be_candidate(state.status, gc_ts, cutoff):
            return ScanRecord(name, state.status, gc_ts)
        held = _lock_held(job.fd)
        return ScanRecord(name, state.status, gc_ts, _tree_size(job.fd), bool(held))


def _exists_at(dir_fd: int, name: str) -> bool:
    try:
        os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return True


def _clear_dir(dir_fd: int) -> None:
    """Remove everything inside ``dir_fd``; symlinks are unlinked, never followed.

    Entries that vanish meanwhile (another ``gc``) are fine; other errors propagate.
    """
    with os.scandir(dir_fd) as it:
        entries = list(it)
    for entry in entries:
        name = entry.name
        try:
            if entry.is_dir(follow_symlinks=False):
                _remove_dir_at(dir_fd, name)
            else:
                os.unlink(name, dir_fd=dir_fd)
        except FileNotFoundError:
            continue


def _remove_dir_at(parent_fd: int, name: str) -> None:
    """Remove the directory ``name`` (relative to ``parent_fd``) and everything below it."""
    for attempt in range(_RMDIR_ATTEMPTS):
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                # Swapped for a symlink or a file since it was listed: remove just that.
                os.unlink(name, dir_fd=parent_fd)
                return
            raise
        try:
            _clear_dir(fd)
        finally:
            os.close(fd)
        try:
            os.rmdir(name, dir_fd=parent_fd)
            return
        except OSError as exc:
            if exc.errno != errno.ENOTEMPTY or attempt == _RMDIR_ATTEMPTS - 1:
                raise


@dataclass(frozen=True, slots=True)
class Removal:
    """How removing one job directory went.

    ``outcome`` is ``deleted`` (gone, by us), ``gone`` (removed by someone else first),
    ``busy`` (a supervisor holds the job), ``still_exists`` or ``failed`` (``error`` set).
    """

    outcome: str
    error: str = ""


def _restart_held(job_fd: int) -> bool:
    """Is the job being restarted (``restart.lock`` held)? Checked under the supervisor
    lock, which a restart needs too before it relaunches: then it cannot start meanwhile."""
    try:
        fd = os.open(RESTART_LOCK_FILE, _FILE_FLAGS, dir_fd=job_fd)
    except OSError:
        return False
    try:
        return lock_held_elsewhere(fd)
    finally:
        os.close(fd)


def remove_job(root_fd: int, name: str) -> Removal:
    """Remove one job directory under its supervisor lock, then confirm it is gone."""
    try:
        job_fd = os.open(name, _DIR_FLAGS, dir_fd=root_fd)
    except FileNotFoundError:
        return Removal("gone")
    except OSError as exc:
        return Removal("failed", os_error_text(exc))
    lock_fd: int | None = None
    try:
        try:
            lock_fd = os.open(LOCK_FILE, _FILE_FLAGS, dir_fd=job_fd)
        except FileNotFoundError:
            lock_fd = None  # no lock file (an upstream job): nobody can claim it
        except OSError as exc:
            return Removal("failed", os_error_text(exc))  # never remove what may be held
        if lock_fd is not None:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return Removal("busy")
        if _restart_held(job_fd):
            return Removal("busy")
        try:
            _clear_dir(job_fd)
        except OSError as exc:
            return Removal("failed", os_error_text(exc))
    finally:
        os.close(job_fd)
        if lock_fd is not None:
            # Held until the directory is empty; after that no supervisor can start in it.
            os.close(lock_fd)
    try:
        _remove_dir_at(root_fd, name)
    except FileNotFoundError:
        return Removal("gone")
    except OSError as exc:
        return Removal("failed", os_error_text(exc))
    if _exists_at(root_fd, name):
        return Removal("still_exists")
    return Removal("deleted")


def open_root(root: Path) -> int | None:
    """An fd on the root, ``None`` if it does not exist; other failures are errors."""
    try:
        return os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise IoError.from_os(exc, "failed to read root directory", root) from None


def list_root(root: Path, root_fd: int) -> tuple[list[str], int]:
    """Names of the real job directories in the root (scan order; see
    :func:`~agent_exec._paths.is_job_name`), and how many entries were unreadable."""
    names: list[str] = []
    unreadable = 0
    try:
        with os.scandir(root_fd) as entries:
            for entry in entries:
                try:
                    if is_job_name(entry.name) and entry.is_dir(follow_symlinks=False):
                        names.append(entry.name)
                except OSError:
                    unreadable += 1
    except OSError as exc:
        raise IoError.from_os(exc, "failed to read root directory", root) from None
    return names, unreadable


#: A job directory still under its build name (``.tmp-<id>``) after this long was left by a
#: launcher that died while making it: never a job, removed by ``gc``.
STALE_BUILD_AGE = 3600.0


def sweep_stale_builds(root_fd: int, now: float) -> None:
    """Remove ``.tmp-<id>`` directories older than :data:`STALE_BUILD_AGE` (best effort)."""
    try:
        with os.scandir(root_fd) as entries:
            names = [entry.name for entry in entries if entry.name.startswith(".tmp-")]
    except OSError:
        return
    for name in names:
        try:
            info = os.stat(name, dir_fd=root_fd, follow_symlinks=False)
            if stat.S_ISDIR(info.st_mode) and info.st_mtime < now - STALE_BUILD_AGE:
                _remove_dir_at(root_fd, name)
        except OSError:
            continue


def job_supervised(job_dir: Path) -> bool:
    try:
        fd = os.open(job_dir, _DIR_FLAGS)
    except OSError:
        return False
    try:
        return bool(_lock_held(fd))
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class BulkRecord:
    """One job of ``delete --all``: ``reason`` set when it is skipped, ``None`` if eligible."""

    job_id: str
    in_scope: bool
    state: str = "unknown"
    reason: str | None = None


def bulk_scan_one(root: Path, root_fd: int, name: str, cwd_scope: str) -> BulkRecord | None:
    if not printable(name):
        return BulkRecord(name, False)
    try:
        job_fd = os.open(name, _DIR_FLAGS, dir_fd=root_fd)
    except FileNotFoundError:
        return None
    except OSError:
        return BulkRecord(name, False)
    try:
        try:
            meta = JobMeta.from_dict(orjson.loads(_read_at(job_fd, META_FILE)))
        except (OSError, orjson.JSONDecodeError, StateCorrupt):
            return BulkRecord(name, False)
        if meta.cwd is None or meta.cwd != cwd_scope:
            return BulkRecord(name, False)
        try:
            state = read_state(root / name)
        except (OSError, StateCorrupt):
            return BulkRecord(name, True, "unknown", "state_unreadable")
        if state.status.is_active:
            return BulkRecord(name, True, state.status.value, state.status.value)
        alive = _lock_held(job_fd)
        if alive is None:  # an upstream job: only the recorded pid is left to probe
            alive = state.pid is not None and pid_alive(state.pid)
        return BulkRecord(name, True, state.status.value, "pid_alive" if alive else None)
    finally:
        os.close(job_fd)
