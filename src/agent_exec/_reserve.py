"""Room kept aside so that a job's terminal record can always be written.

A workload may fill the disk, or the descriptor table, right before it exits; the exit
code must not be lost for it. Before the workload starts, its supervisor creates
``.state.reserve`` in the job directory: one page of real data, so its blocks are
allocated. The terminal record is written over the reserve's own bytes (no new block
needed) and the reserve is renamed over ``state.json``, which is just as atomic as a
temporary file, and spares creating one (see :meth:`StateReserve.write_state`).

Swapping (the library, see :func:`enable_swap`): a rename over ``state.json`` frees the
old record's inode, and ext4 skips inodes freed in the last ~30 s when it allocates new
ones (``recently_deleted``), one inode-table lookup each. A runner starting hundreds of
jobs a second then pays for every freed inode again in each later file creation: measured
here, a creation went from ~30 us to ~500 us of CPU within seconds. So a runner *exchanges*
the reserve and ``state.json`` (``renameat2(RENAME_EXCHANGE)``, just as atomic): the old
record becomes the next reserve, its block still allocated, and no inode is freed. The
``running`` record is written the same way. A detached supervisor (one job, where the
``ctypes`` import would cost more than it saves) keeps the plain rename.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time

from ._models import JobState
from ._paths import STATE_FILE
from ._store import dump_pretty, write_state

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: a supervisor imports this before its spawn
if TYPE_CHECKING:
    from typing import Any

    from ._jobdir import JobDir

RESERVE_FILE = ".state.reserve"
#: One page: a terminal record is well under 1 KiB.
RESERVE_SIZE = 4096
#: If even the reserve cannot take the terminal record (a foreign filesystem error), how
#: long the supervisor keeps trying, and how often, before it gives up.
WRITE_PATIENCE = 300.0
RETRY_EVERY = 0.5
_FSYNC = os.environ.get("AGENT_EXEC_FSYNC", "") not in ("", "0")
_RENAME_EXCHANGE = 2
#: ``renameat2`` of the C library, once :func:`enable_swap` found it.
_renameat2: Any = None


def enable_swap() -> bool:
    """Write records by exchanging them with the reserve (see the module docstring), for
    this process; False if the C library has no ``renameat2`` (then nothing changes)."""
    global _renameat2
    if _renameat2 is None:
        import ctypes

        try:
            function = ctypes.CDLL(None, use_errno=True).renameat2
        except (OSError, AttributeError):
            return False
        function.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
        function.restype = ctypes.c_int
        _renameat2 = function
    return True


def _exchange(dir_fd: int, name: str, other: str) -> int:
    """Swap two entries of a directory atomically; 0, or the ``errno`` of the failure."""
    import ctypes

    if _renameat2(dir_fd, name.encode(), dir_fd, other.encode(), _RENAME_EXCHANGE) == 0:
        return 0
    return ctypes.get_errno()


class StateReserve:
    """An allocated page in the job directory for the terminal ``state.json``.

    No descriptor is kept open (descriptors are scarce under ``ulimit -n``; by the time the
    terminal record is written the logs and pipes are closed, so one is available). The
    job directory is reached through its descriptor, never by path.
    """

    def __init__(self, job_dir: JobDir) -> None:
        #: Records go through the reserve by exchange, and it survives them (see above).
        self.swaps = _renameat2 is not None
        self._create(job_dir)

    def _create(self, job_dir: JobDir) -> None:
        self._dir: JobDir | None = job_dir
        self._size = 0
        try:
            fd = job_dir.open_file(RESERVE_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        except OSError:
            self._dir = None  # no room even for this: the normal write is all there is
            return
        try:
            self._size = os.write(fd, b" " * RESERVE_SIZE)
        except OSError:
            pass
        finally:
            os.close(fd)

    @classmethod
    def empty(cls) -> StateReserve:
        """A reserve holding nothing (the normal write only)."""
        reserve = cls.__new__(cls)
        reserve._dir = None
        reserve._size = 0
        reserve.swaps = False
        return reserve

    def _write_over(self, data: bytes) -> bool:
        """The record over the reserve's bytes, renamed onto ``state.json``: True if done."""
        job = self._dir
        if job is None or job.closed or len(data) > self._size:
            return False
        try:
            fd = job.open_file(RESERVE_FILE, os.O_WRONLY)
            try:
                os.pwrite(fd, data, 0)  # over allocated blocks: needs no free space
                os.ftruncate(fd, len(data))
                if _FSYNC:
                    os.fsync(fd)
            finally:
                os.close(fd)
            if self.swaps:
                failure = _exchange(job.fd, RESERVE_FILE, STATE_FILE)
                if failure == 0:
                    return True  # the reserve now holds the previous record: still ours
                if failure != errno.ENOENT:  # (no state.json yet: the rename below)
                    self.swaps = False  # e.g. a filesystem without RENAME_EXCHANGE
            os.rename(RESERVE_FILE, STATE_FILE, src_dir_fd=job.fd, dst_dir_fd=job.fd)
        except OSError:
            return False
        self._dir = None  # it is state.json now
        if self.swaps:
            self._create(job)  # the first record took it: the next one needs one again
        return True

    def write_state(self, job_dir: JobDir, state: JobState) -> None:
        """Write ``state`` atomically through the reserve; release it once written
        (a swapping reserve is kept: it holds the previous record).

        The reserve is the terminal record's temporary file: that costs no file creation
        beyond the reserve's own (a plain atomic write would create a second temporary
        file), and needs no free block. If the record does not fit or the reserve cannot be
        used, the plain atomic write is tried.

        Raises the ``OSError`` if neither way worked (the reserve is kept for a retry).
        """
        if self._write_over(dump_pretty(state.to_dict())):
            if not self.swaps:
                self.release()
            return
        write_state(job_dir, state)
        self.release()

    def write_record(self, job_dir: JobDir, state: JobState) -> None:
        """Write a non-terminal record (``running``): through the reserve if it swaps (no
        inode created or freed), else with a plain atomic write (the reserve stays for the
        terminal record)."""
        if not (self.swaps and self._write_over(dump_pretty(state.to_dict()))):
            write_state(job_dir, state)

    def write_state_patiently(self, job_dir: JobDir, state: JobState) -> None:
        """:meth:`write_state`, retried for up to :data:`WRITE_PATIENCE` seconds.

        The caller holds the supervisor lock meanwhile, so readers see a live ``running``
        job rather than repairing it to ``supervisor_lost``.
        """
        deadline = time.monotonic() + WRITE_PATIENCE
        while True:
            try:
                self.write_state(job_dir, state)
                return
            except OSError:
                if time.monotonic() >= deadline:
                    raise
            time.sleep(RETRY_EVERY)

    def release(self) -> None:
        """Remove the reserve (later calls do nothing)."""
        job = self._dir
        self._dir = None
        if job is not None and not job.closed:
            with contextlib.suppress(OSError):
                os.unlink(RESERVE_FILE, dir_fd=job.fd)
