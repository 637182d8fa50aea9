"""Room kept aside so that a job's terminal record can always be written.

A workload may fill the disk, or the descriptor table, right before it exits; the exit
code must not be lost for it. Before the workload starts, its supervisor creates
``.state.reserve`` in the job directory: one page of real data, so its blocks are
allocated. If the normal atomic write of the terminal ``state.json`` fails, the record is
written over the reserve's own bytes (no new block needed) and the reserve is renamed
over ``state.json``, which is just as atomic. Otherwise the reserve is removed.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from ._models import JobState
from ._paths import FILE_MODE, STATE_FILE
from ._store import dump_pretty, write_state

RESERVE_FILE = ".state.reserve"
#: One page: a terminal record is well under 1 KiB.
RESERVE_SIZE = 4096
#: If even the reserve cannot take the terminal record (a foreign filesystem error), how
#: long the supervisor keeps trying, and how often, before it gives up.
WRITE_PATIENCE = 300.0
RETRY_EVERY = 0.5


class StateReserve:
    """An allocated page in the job directory for the terminal ``state.json``.

    No descriptor is kept open (descriptors are scarce under ``ulimit -n``; by the time the
    terminal record is written the logs and pipes are closed, so one is available).
    """

    def __init__(self, job_dir: Path) -> None:
        self._path: Path | None = job_dir / RESERVE_FILE
        self._size = 0
        try:
            fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
        except OSError:
            self._path = None  # no room even for this: the normal write is all there is
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
        reserve._path = None
        reserve._size = 0
        return reserve

    def write_state(self, job_dir: Path, state: JobState) -> None:
        """Write ``state`` atomically, falling back on the reserve; release it once written.

        Raises the ``OSError`` if neither way worked (the reserve is kept for a retry).
        """
        try:
            write_state(job_dir, state)
        except OSError:
            data = dump_pretty(state.to_dict())
            if self._path is None or len(data) > self._size:
                raise
            fd = os.open(self._path, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            try:
                os.pwrite(fd, data, 0)  # over allocated blocks: needs no free space
                os.ftruncate(fd, len(data))
            finally:
                os.close(fd)
            os.rename(self._path, job_dir / STATE_FILE)
            self._path = None  # it is state.json now
        self.release()

    def write_state_patiently(self, job_dir: Path, state: JobState) -> None:
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
        if self._path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._path)
            self._path = None
