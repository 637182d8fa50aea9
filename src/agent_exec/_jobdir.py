"""A job directory held by descriptor: :class:`JobDir`.

A job directory is opened once (``O_DIRECTORY | O_NOFOLLOW``) and every file in it is then
reached relative to that descriptor (``dir_fd=``, ``O_NOFOLLOW``). Whoever can write to
the jobs root can rename a job directory away, or put a symlink in its place, at any
moment; a path would then lead writes (and a ``notify_command`` read from the planted
``meta.json``) somewhere else. A descriptor keeps pointing at the directory that was
opened, wherever it is moved, and :meth:`JobDir.in_place` tells whether it is still the
entry ``<root>/<job_id>``. The path is kept only to report log paths and messages.
"""

from __future__ import annotations

import contextlib
import os
import stat

from ._codec import dumps_pretty, loads
from ._errors import TRANSIENT_ERRNOS, StateCorrupt
from ._paths import FILE_MODE

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: every read command imports this module
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

__all__ = [
    "DIR_FLAGS",
    "MAX_STATE_FILE",
    "JobDir",
    "JobDirMoved",
    "StateUnreadable",
    "dump_pretty",
    "open_job",
]

#: Larger ``meta.json``/``state.json`` files are refused as corrupt (ours are a few KiB).
MAX_STATE_FILE = 16 << 20
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_FSYNC = os.environ.get("AGENT_EXEC_FSYNC", "") not in ("", "0")


class JobDirMoved(StateCorrupt):
    """The job directory is no longer the entry ``<root>/<job_id>`` it was opened as."""


class StateUnreadable(StateCorrupt):
    """A job file could not be read because of an OS error (``os_errno``): not necessarily
    corrupt, e.g. ``EMFILE`` under descriptor pressure."""

    def __init__(self, message: str, os_errno: int | None) -> None:
        super().__init__(message)
        self.os_errno = os_errno
        if os_errno in TRANSIENT_ERRNOS:
            # Descriptor or memory pressure is no corruption: report it as the passing OS
            # condition it is (``io_error``, retryable), while callers that skip unreadable
            # jobs (``except StateCorrupt``) still do.
            self.code = "io_error"
            self.retryable = True


def dump_pretty(data: Any) -> bytes:
    """Pretty JSON with 2-space indentation and no trailing newline (the state-file layout)."""
    return dumps_pretty(data)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class JobDir:
    """One job directory, by descriptor; close it (or use ``with``) when done."""

    __slots__ = ("building", "fd", "ident", "meta_key", "name", "root")

    def __init__(self, root: Path, name: str, fd: int, *, building: str | None = None) -> None:
        self.root = root
        self.name = name
        self.fd = fd
        #: While the directory is being made: its temporary name in the root (see :meth:`build`).
        self.building = building
        info = os.fstat(fd)
        self.ident = (info.st_dev, info.st_ino)
        #: ``(inode, size, mtime_ns)`` of the ``meta.json`` written through this handle.
        self.meta_key: tuple[int, int, int] | None = None

    @classmethod
    def build(cls, root: Path, name: str) -> JobDir:
        """A new job directory made under the temporary name ``.tmp-<name>``: invisible to
        every reader (not a job name) until :meth:`publish` renames it into place, complete."""
        building = f".tmp-{name}"
        os.mkdir(root / building, 0o700)
        try:
            return cls(root, name, os.open(root / building, DIR_FLAGS), building=building)
        except BaseException:
            with contextlib.suppress(OSError):
                os.rmdir(root / building)
            raise

    def publish(self) -> None:
        """Rename a directory made by :meth:`build` to ``<root>/<name>``: the job appears
        whole, in one step."""
        if self.building is not None:
            os.rename(self.root / self.building, self.path)
            self.building = None
            if _FSYNC:
                root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(root_fd)
                finally:
                    os.close(root_fd)

    @property
    def current_path(self) -> Path:
        """Where the directory is now (its temporary name while being built)."""
        return self.root / (self.building or self.name)

    @classmethod
    def open(cls, root: Path, name: str, *, root_fd: int | None = None) -> JobDir:
        """Open ``<root>/<name>``; raises ``OSError`` (``ELOOP``/``ENOTDIR`` for a symlink or
        a file in its place, ``ENOENT`` if absent)."""
        if root_fd is not None:
            fd = os.open(name, DIR_FLAGS, dir_fd=root_fd)
        else:
            fd = os.open(root / name, DIR_FLAGS)
        try:
            return cls(root, name, fd)
        except BaseException:
            os.close(fd)
            raise

    @classmethod
    def open_path(cls, job_dir: Path) -> JobDir:
        """Open a job directory given as a path (the last component is never followed)."""
        return cls.open(job_dir.parent, job_dir.name)

    @property
    def path(self) -> Path:
        """Where the job directory is meant to be (for messages and reported log paths)."""
        return self.root / self.name

    @property
    def job_id(self) -> str:
        return self.name

    @property
    def closed(self) -> bool:
        return self.fd < 0

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    def __enter__(self) -> JobDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"JobDir({str(self.path)!r}, fd={self.fd})"

    def dup(self) -> JobDir:
        """A second handle on the same directory (its own descriptor, same identity)."""
        fd = os.dup(self.fd)
        os.set_inheritable(fd, False)
        return JobDir(self.root, self.name, fd)

    def reopen_fd(self) -> int:
        """A new open file description of this directory (``flock`` is per description: a
        lock probe must never use one whose lock it would convert)."""
        return os.open(".", DIR_FLAGS, dir_fd=self.fd)

    def in_place(self) -> bool:
        """Is this directory still the entry ``<root>/<name>`` (not renamed, not replaced)?"""
        try:
            info = os.lstat(self.path)
        except OSError:
            return False
        return (info.st_dev, info.st_ino) == self.ident

    def check_in_place(self) -> None:
        if not self.in_place():
            raise JobDirMoved(f"job directory {self.path} was moved or replaced")

    # -- files ----------------------------------------------------------------------------

    def open_file(self, name: str, flags: int, mode: int = FILE_MODE) -> int:
        """``openat`` a file of the job directory; never follows a symlink; close-on-exec."""
        return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=self.fd)

    def exists(self, name: str) -> bool:
        try:
            os.lstat(name, dir_fd=self.fd)
        except FileNotFoundError:
            return False
        return True

    def size(self, name: str) -> int:
        """Size of a regular file of the job directory; 0 if absent or not a regular file."""
        try:
            info = os.lstat(name, dir_fd=self.fd)
        except OSError:
            return 0
        return info.st_size if stat.S_ISREG(info.st_mode) else 0

    def unlink(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=self.fd)

    def read_bytes(self, name: str, *, limit: int = MAX_STATE_FILE) -> bytes:
        """A regular file of at most ``limit`` bytes; :class:`StateCorrupt` naming it otherwise
        (a FIFO, device or symlink planted in place of a state file gives an error, not a
        hang or an endless read)."""
        try:
            fd = self.open_file(name, _READ_FLAGS)
        except OSError as exc:
            raise self._unreadable(name, exc) from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise StateCorrupt(f"failed to read {self.path / name}: not a regular file")
            if info.st_size > limit:
                raise StateCorrupt(f"failed to read {self.path / name}: larger than {limit} bytes")
            # Plain reads, no file object (``list`` reads two files per job): the size is
            # a hint (the file may grow meanwhile), the limit is enforced on what is read.
            chunks: list[bytes] = []
            total = 0
            while total <= limit:
                chunk = os.read(fd, min(limit + 1 - total, max(info.st_size + 1, 4096)))
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
            return b"".join(chunks)
        except OSError as exc:
            raise self._unreadable(name, exc) from None
        finally:
            os.close(fd)

    def _unreadable(self, name: str, exc: OSError) -> StateUnreadable:
        return StateUnreadable(f"failed to read {self.path / name}: {exc.strerror or exc}", exc.errno)

    def read_json(self, name: str) -> Any:
        raw = self.read_bytes(name)
        try:
            return loads(raw)
        except ValueError as exc:  # JSONDecodeError, invalid UTF-8, NaN (see _codec)
            raise StateCorrupt(f"failed to parse {self.path / name}: {exc}") from None

    def write_new(self, name: str, data: bytes, *, mode: int = FILE_MODE) -> tuple[int, int, int]:
        """Create ``name`` (it must not exist) holding ``data``: for a directory that no reader
        can see yet, where no temporary file and rename are needed. Returns the file's
        ``(inode, size, mtime_ns)``, to tell later whether it changed."""
        fd = self.open_file(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            _write_all(fd, data)
            if _FSYNC:
                os.fsync(fd)
            info = os.fstat(fd)
        finally:
            os.close(fd)
        return (info.st_ino, info.st_size, info.st_mtime_ns)

    def atomic_write(self, name: str, data: bytes, *, mode: int = FILE_MODE) -> None:
        """Replace ``name`` with ``data`` so that readers see the old or the new file, never a mix.

        With ``AGENT_EXEC_FSYNC=1`` the data and the directory entry are also flushed to disk,
        so the new content survives a power cut (costs one or two disk flushes per write).
        """
        tmp = f".tmp-{name}.{os.urandom(6).hex()}"
        try:
            self.write_new(tmp, data, mode=mode)
            os.replace(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=self.fd)
            raise
        if _FSYNC:
            os.fsync(self.fd)

    def create_empty(self, name: str) -> None:
        """Create ``name`` empty if it does not exist (the logs readers may look at early)."""
        os.close(self.open_file(name, os.O_WRONLY | os.O_CREAT))


def open_job(root: Path, given: str) -> JobDir:
    """Resolve a job id or unique prefix and open its directory.

    :raises UnsafeRoot: the root could be changed by another user (see ``_root``).
    :raises JobNotFound: also when the entry is swapped for a symlink or file meanwhile.
    """
    from ._errors import JobNotFound
    from ._paths import resolve_job
    from ._root import check_root

    check_root(root)
    job_id, _ = resolve_job(root, given)
    try:
        return JobDir.open(root, job_id)
    except OSError:
        raise JobNotFound(given) from None
