"""Watching a running workload: its output pipes drained into the logs, its exit noticed.

On asyncio this is done the way asyncio's own subprocess transports do it: plain reader
callbacks on the event loop (``add_reader``), no task and no future per descriptor. A
runner supervising thousands of short jobs spends most of its time in that bookkeeping, and
three tasks per job (two pipes and the exit) cost more than spawning the job itself. Other
event loops (trio) get the portable version: one task per pipe, and the exit awaited through
the pidfd.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import anyio
import anyio.abc

from ._logs import LogWriter
from ._workload import OutputPipe, Workload

__all__ = ["Watch", "start_watch"]


class Watch:
    """The portable watch: a pump task per pipe, in the supervisor's task group."""

    #: Does it run tasks in the task group given to :meth:`start`?
    has_tasks = True

    def __init__(
        self,
        process: Workload,
        pipes: list[OutputPipe],
        writer: LogWriter,
        on_output: Callable[[], None] | None,
    ) -> None:
        self.process = process
        self.pipes = pipes
        self.writer = writer
        self.on_output = on_output
        self._pumping = len(pipes)
        self._drained = anyio.Event()
        if not pipes:
            self._drained.set()

    def start(self, task_group: anyio.abc.TaskGroup) -> None:
        for pipe in self.pipes:
            task_group.start_soon(self._pump, pipe)

    async def _pump(self, pipe: OutputPipe) -> None:
        await pipe.pump(self.writer, self.on_output)
        self._pumping -= 1
        if not self._pumping:
            self._drained.set()

    async def exited(self) -> int:
        """Wait for the workload's exit and reap it; its exit code (or ``-signal``)."""
        return await self.process.wait()

    async def drained(self) -> None:
        """Wait until every pipe reached end of file."""
        await self._drained.wait()

    def close(self) -> None:
        """Stop watching (the pump tasks end with their task group)."""


class _LoopWatch(Watch):
    """asyncio: reader callbacks instead of tasks (see the module docstring)."""

    has_tasks = False

    def __init__(
        self,
        process: Workload,
        pipes: list[OutputPipe],
        writer: LogWriter,
        on_output: Callable[[], None] | None,
    ) -> None:
        super().__init__(process, pipes, writer, on_output)
        import asyncio

        self._loop = asyncio.get_running_loop()
        self._exited = anyio.Event()
        self._readers: set[int] = set()
        #: An exception raised inside a callback, re-raised by the waiting task.
        self._failure: BaseException | None = None

    def start(self, task_group: anyio.abc.TaskGroup) -> None:
        for pipe in self.pipes:
            self._loop.add_reader(pipe.read_fd, self._on_output, pipe)
            self._readers.add(pipe.read_fd)
        if self.process.pidfd >= 0:
            self._loop.add_reader(self.process.pidfd, self._on_exit)
            self._readers.add(self.process.pidfd)
            # It may have exited before the reader was added: a pidfd stays readable, so the
            # callback runs on the next loop iteration anyway.

    def _stop_reading(self, fd: int) -> None:
        if fd in self._readers:
            self._readers.discard(fd)
            self._loop.remove_reader(fd)

    def _fail(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc
        self.close()
        self._exited.set()
        self._drained.set()

    def _on_output(self, pipe: OutputPipe) -> None:
        try:
            more = pipe.read_available(self.writer)
            if not more:
                self._stop_reading(pipe.read_fd)
                self._pumping -= 1
                if not self._pumping:
                    self._drained.set()
            if self.on_output is not None:
                self.on_output()
        except BaseException as exc:  # e.g. MemoryError: the supervising task reports it
            self._fail(exc)

    def _on_exit(self) -> None:
        try:
            pidfd = self.process.pidfd
            self._stop_reading(pidfd)  # before ``reap`` closes it
            if self.process.reap():
                self._exited.set()
            else:  # not gone after all (cannot happen for a readable pidfd): look again
                self._loop.add_reader(pidfd, self._on_exit)
                self._readers.add(pidfd)
        except BaseException as exc:
            self._fail(exc)

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    async def exited(self) -> int:
        if self.process.pidfd < 0:  # no pidfd (old kernel): the portable poll
            return await self.process.wait()
        await self._exited.wait()
        self._raise_failure()
        assert self.process.returncode is not None
        return self.process.returncode

    async def drained(self) -> None:
        await self._drained.wait()
        self._raise_failure()

    def close(self) -> None:
        for fd in list(self._readers):
            self._stop_reading(fd)


def start_watch(
    task_group: anyio.abc.TaskGroup,
    process: Workload,
    pipes: list[OutputPipe],
    writer: LogWriter,
    on_output: Callable[[], None] | None,
) -> Watch:
    """Start watching ``process`` and draining ``pipes`` into ``writer`` (``on_output``
    after each chunk is in the logs); :meth:`Watch.close` when done."""
    watch: Watch
    if _on_asyncio():
        watch = _LoopWatch(process, pipes, writer, on_output)
    else:
        watch = Watch(process, pipes, writer, on_output)
    watch.start(task_group)
    return watch


def _on_asyncio() -> bool:
    """Is this task running on an asyncio event loop (not trio)?"""
    if "asyncio" not in sys.modules:
        return False
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
