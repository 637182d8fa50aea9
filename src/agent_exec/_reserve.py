"""Room kept aside so that a job's terminal record can always be written.

A workload may fill the disk, or the descriptor table, right before it exits; the exit
code must not be lost for it. Before the workload starts, its supervisor creates
``.state.reserve`` in the job directory: one page of real data (so the blocks are
allocated) and an open descriptor. The terminal record is written over the reserve's own
bytes (no new block, no new descriptor needed) and the reserve is renamed over
``state.json``, which is just as atomic as a temporary file would be, and spares creating
one (see :meth:`StateReserve.write_state`).
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import TYPE_CHECKING

from ._models import JobState
from ._paths import STATE_FILE
from ._store import dump_pretty, write_state

if TYPE_CHECKING:
    from ._jobdir import JobDir

RESERVE_FILE = ".state.reserve"
_FSYNC = os.environ.get("AGENT_EXEC_FSYNC", "") not in ("", "0")
#: One page: a terminal record is well under 1 KiB.
RESERVE_SIZE = 4096
#: If even the reserve cannot take the terminal record (a foreign filesystem error), how
#: long the supervisor keeps trying, and how often, before it gives up.
WRITE_PATIENCE = 300.0
RETRY_EVERY = 0.5


class StateReserve:
    """An allocated page and an open descriptor for the terminal ``state.json``."""

    def __init__(self, job_dir: JobDir) -> None:
        self._dir: JobDir | None = job_dir
        self._fd = -1
        self._size = 0
        try:
            fd = job_dir.open_file(RESERVE_FILE, os.O_RDWR | os.O_CREAT | os.O_TRUNC)
        except OSError:
            self._dir = None
            return  # no room even for this: the normal write is all there is
        self._fd = fd
        with contextlib.suppress(OSError):
            self._size = os.write(fd, b" " * RESERVE_SIZE)

    @classmethod
    def empty(cls) -> StateReserve:
        """A reserve holding nothing (the normal write only)."""
        reserve = cls.__new__(cls)
        reserve._dir = None
        reserve._fd = -1
        reserve._size = 0
        return reserve

    def write_state(self, job_dir: JobDir, state: JobState) -> None:
        """Write ``state`` atomically through the reserve; release it once written.

        The reserve is the terminal record's temporary file: the record is written over
        its bytes (allocated already, so even a full disk takes it) and the file renamed
        over ``state.json``, as any atomic write does. That costs no file creation beyond
        the reserve's own (a plain atomic write would create a second temporary file). If
        the record does not fit or the reserve is gone, the plain atomic write is used.

        Raises the ``OSError`` if neither way worked (the reserve is kept for a retry).
        """
        data = dump_pretty(state.to_dict())
        if self._fd >= 0 and self._dir is not None and len(data) <= self._size:
            try:
                os.pwrite(self._fd, data, 0)
                os.ftruncate(self._fd, len(data))
                if _FSYNC:
                    os.fsync(self._fd)
                os.rename(RESERVE_FILE, STATE_FILE, src_dir_fd=self._dir.fd, dst_dir_fd=job_dir.fd)
            except OSError:
                pass
            else:
                self._dir = None  # it is state.json now
                self.release()
                return
        write_state(job_dir, state)
        self.release()

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
        """Close and remove the reserve (later calls do nothing)."""
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1
        if self._dir is not None:
            with contextlib.suppress(OSError):
                if not self._dir.closed:
                    os.unlink(RESERVE_FILE, dir_fd=self._dir.fd)
            self._dir = None
