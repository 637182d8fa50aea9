"""What happens to a runner's jobs when the host process dies (SIGKILL, an unhandled
SIGTERM, a crash): they are killed, not orphaned.

The runner supervises its jobs inside its own process; when that process dies nobody drains
their pipes or records their end, and the store can only say ``failed/supervisor_lost``. So
the runner starts one small guard process (per runner, not per job) that holds the read end
of a pipe: the runner writes ``+<pgid> <start time>`` when a job's process group starts and
``-<pgid>`` when the job is over. When the pipe reaches end of file without a goodbye (the
host died, however it died: the kernel closes its descriptors), the guard SIGKILLs every
group still listed, skipping a group whose leader's pid now names a different process (start
time differs: the pid was reused). The guard waits for the hang-up only and reads the pipe
once a second: a runner's write never wakes it (waking a process per job costs the runner a
context switch each on a busy machine).

Why not ``PR_SET_PDEATHSIG``: it needs ``preexec_fn`` (which turns ``subprocess``'s vfork
fast path into a full fork), fires when the spawning *thread* exits rather than the process,
and reaches only the direct child, never the rest of its process group. A subreaper acts
only while the host lives.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sys

import anyio

__all__ = ["HostGuard"]

_F_SETPIPE_SZ = 1031

_GUARD_CODE = r"""
import os, select, signal, sys
if os.fork():
    os._exit(0)  # the runner reaps this parent at once; the guard is nobody's child to wait for
for s in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM, signal.SIGPIPE):
    signal.signal(s, signal.SIG_IGN)
def start_time(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return raw[raw.rindex(b")") + 2:].split()[19].decode()
groups, buffer, bye = {}, b"", False
os.set_blocking(0, False)
hangup = select.poll()
hangup.register(0, 0)  # hang-up only: the runner's writes never wake the guard
while True:
    hangup.poll(1000)  # woken by the end of the pipe; else drain it once a second
    eof = False
    while True:
        try:
            data = os.read(0, 1 << 20)
        except (BlockingIOError, InterruptedError):
            break
        if not data:
            eof = True
            break
        buffer += data
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line == b"bye":
                bye = True
            elif line.startswith(b"+"):
                pgid, _, started = line[1:].partition(b" ")
                groups[int(pgid)] = started.decode()
            elif line.startswith(b"-"):
                groups.pop(int(line[1:]), None)
    if eof:
        break
if not bye:
    for pgid, started in groups.items():
        now = start_time(pgid)
        if now is not None and now != started:
            continue  # the pid was reused: not our group
        try:
            os.killpg(pgid, signal.SIGKILL)
        except OSError:
            pass
"""


class HostGuard:
    """The runner's side of the guard process: started on the first in-process job."""

    def __init__(self) -> None:
        self._started = False
        self._write_fd = -1
        self._backlog = b""
        self._failed = False

    @property
    def active(self) -> bool:
        return self._write_fd >= 0

    async def start(self) -> None:
        """Start the guard once; a failure (e.g. out of descriptors) leaves jobs unguarded
        rather than failing them."""
        if self._started or self._failed:
            return
        read_fd, write_fd = os.pipe()
        try:
            process = await anyio.open_process(
                [sys.executable, "-I", "-S", "-c", _GUARD_CODE],
                stdin=read_fd,
                stdout=-3,
                stderr=-3,
                start_new_session=True,  # a terminal's Ctrl-C or hang-up must not stop it
            )
        except OSError:
            self._failed = True
            os.close(write_fd)
            return
        finally:
            os.close(read_fd)
        async with process:
            await process.wait()
        self._started = True
        os.set_blocking(write_fd, False)
        with contextlib.suppress(OSError):  # room for a second of registrations, unread
            fcntl.fcntl(write_fd, _F_SETPIPE_SZ, 1 << 20)
        self._write_fd = write_fd

    def _send(self, line: bytes) -> None:
        if self._write_fd < 0:
            return
        data = self._backlog + line
        try:
            written = os.write(self._write_fd, data)
        except BlockingIOError:
            written = 0
        except OSError as exc:  # the guard died: nothing more to tell it
            if exc.errno == errno.EPIPE:
                os.close(self._write_fd)
                self._write_fd = -1
            return
        self._backlog = data[written:]

    def add(self, pgid: int, started: int | None) -> None:
        """Watch a job's process group, whose leader started at ``started`` (clock ticks,
        see :func:`~agent_exec._process.start_ticks`)."""
        self._send(f"+{pgid} {'' if started is None else started}\n".encode())

    def remove(self, pgid: int) -> None:
        """Forget a finished job's group. Sent with the next message, not now: a stale
        entry is harmless (the guard checks the start time before it kills), and one
        write per job instead of two keeps the guard asleep."""
        if self._write_fd < 0:
            return
        self._backlog += f"-{pgid}\n".encode()
        if len(self._backlog) > 1 << 15:
            self._send(b"")

    def close(self) -> None:
        """Say goodbye (the runner ended: its jobs are over, nothing to kill); the guard
        exits on its own."""
        if self._write_fd >= 0:
            os.set_blocking(self._write_fd, True)
            with contextlib.suppress(OSError):
                os.write(self._write_fd, self._backlog + b"bye\n")
            os.close(self._write_fd)
            self._write_fd = -1
