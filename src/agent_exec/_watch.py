"""Watching a running workload: its output pipes drained into the logs, its exit noticed.

This is done the way asyncio's own subprocess transports do it: plain reader callbacks
(``add_reader``), no task and no future per descriptor. A runner supervising thousands of
short jobs spends most of its time in that bookkeeping, and three tasks per job (two pipes
and the exit) cost more than spawning the job itself. On asyncio the callbacks are the
event loop's own; trio has no reader callbacks, so one ``epoll`` per trio run, watched by a
single system task, dispatches them (:class:`_TrioReactor`). Without a pidfd (old kernels)
the portable version stays: one task per pipe, and the exit polled.
"""

from __future__ import annotations

import select
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol

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


class _Readers(Protocol):
    """What :class:`_LoopWatch` needs of an event loop (asyncio's loops have it)."""

    def add_reader(self, fd: int, callback: Callable[..., object], *args: Any) -> None: ...

    def remove_reader(self, fd: int) -> object: ...


#: How long the trio reactor runs callbacks before it lets other tasks run (asyncio runs
#: each callback as a step of its own).
STEP_BUDGET = 0.002


class _TrioReactor:
    """``add_reader``/``remove_reader`` for trio: one level-triggered ``epoll`` holding every
    watched descriptor of the run, and one system task that waits for it and calls the
    callbacks of the ready descriptors, once per loop iteration, as asyncio does."""

    def __init__(self) -> None:
        import trio

        self._epoll = select.epoll()
        self._callbacks: dict[int, tuple[Callable[..., object], tuple[Any, ...]]] = {}
        trio.lowlevel.spawn_system_task(self._dispatch, name="agent-exec readers")

    def add_reader(self, fd: int, callback: Callable[..., object], *args: Any) -> None:
        try:
            self._epoll.register(fd, select.EPOLLIN)
        except FileExistsError:  # replacing the callback of a watched descriptor
            self._epoll.modify(fd, select.EPOLLIN)
        self._callbacks[fd] = (callback, args)

    def remove_reader(self, fd: int) -> bool:
        if self._callbacks.pop(fd, None) is None:
            return False
        try:
            self._epoll.unregister(fd)
        except OSError:  # already closed: the kernel dropped it from the set
            pass
        return True

    async def _dispatch(self) -> None:
        import trio

        try:
            while True:
                await trio.lowlevel.wait_readable(self._epoll.fileno())
                deadline = time.perf_counter() + STEP_BUDGET
                for fd, _ in self._epoll.poll(0):
                    entry = self._callbacks.get(fd)
                    if entry is not None:  # (removed by an earlier callback of this round)
                        entry[0](*entry[1])  # never raises: the watch's callbacks catch all
                    if time.perf_counter() > deadline:
                        # Let other tasks run; what is still ready is reported again (level-
                        # triggered, and epoll reports the ready in turn).
                        await trio.lowlevel.checkpoint()
                        break
        finally:
            self._epoll.close()


_REACTOR: Any = None  # a trio.lowlevel.RunVar, made on first use (trio imported then)


def _trio_reactor() -> _TrioReactor:
    """The reactor of the current trio run, started on first use."""
    global _REACTOR
    import trio

    if _REACTOR is None:
        _REACTOR = trio.lowlevel.RunVar("agent_exec_readers")
    try:
        reactor: _TrioReactor = _REACTOR.get()
    except LookupError:
        reactor = _TrioReactor()
        _REACTOR.set(reactor)
    return reactor


class _LoopWatch(Watch):
    """Reader callbacks instead of tasks (see the module docstring)."""

    has_tasks = False

    def __init__(
        self,
        process: Workload,
        pipes: list[OutputPipe],
        writer: LogWriter,
        on_output: Callable[[], None] | None,
        readers: _Readers,
    ) -> None:
        super().__init__(process, pipes, writer, on_output)
        self._loop = readers
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
    if process.pidfd < 0:  # no pidfd (old kernel): tasks, and the exit polled
        watch = Watch(process, pipes, writer, on_output)
    elif _on_asyncio():
        import asyncio

        watch = _LoopWatch(process, pipes, writer, on_output, asyncio.get_running_loop())
    else:
        watch = _LoopWatch(process, pipes, writer, on_output, _trio_reactor())
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
