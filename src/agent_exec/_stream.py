"""Reading a job's output from the library: bounded excerpts, and following the logs as the
supervisor writes them.

Following needs a wake-up source. A job supervised by this process's runner has one: the
supervisor calls back after each chunk it writes (:class:`OutputSignal`). Any other job of
the store (CLI-started, detached, another host's) is followed by re-reading the logs on a
short, backing-off timer; either way the caller just iterates. A terminal state is written
only after every byte is in the logs, so "terminal, then read to the end" yields everything.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import anyio

from ._logs import lossy, read_head, read_tail
from ._paths import STDERR_LOG, STDOUT_LOG
from ._results import ExcerptSide, OutputChunk, OutputExcerpt, OutputLine, StreamName

_LOGS: dict[StreamName, str] = {"stdout": STDOUT_LOG, "stderr": STDERR_LOG}
_READ_CHUNK = 1 << 20
#: :func:`follow_lines` yields a longer line in pieces of this many bytes.
MAX_LINE = 1 << 20
#: Back-off of the timer that follows a job with no wake-up source.
_POLL_FIRST, _POLL_MAX = 0.005, 0.1


def _skip_continuation(text_bytes: bytes) -> int:
    """Bytes to drop at the front of a tail so that it starts on a UTF-8 character."""
    skip = 0
    while skip < min(3, len(text_bytes)) and (text_bytes[skip] & 0xC0) == 0x80:
        skip += 1
    return skip


def read_excerpt(job_dir: Path, stream: StreamName, max_bytes: int, side: ExcerptSide) -> OutputExcerpt:
    """The first or last ``max_bytes`` bytes of one log, decoded (never more in memory)."""
    path = job_dir / _LOGS[stream]
    if side == "head":
        text, (start, end), total = read_head(path, max_bytes)
        return OutputExcerpt(text, start, end, total)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return OutputExcerpt.empty()
    try:
        total = os.fstat(fd).st_size
        start = max(0, total - max(0, max_bytes))
        data = os.pread(fd, total - start, start) if total > start else b""
    finally:
        os.close(fd)
    skip = _skip_continuation(data) if start > 0 else 0
    return OutputExcerpt(lossy(data[skip:]), start + skip, start + len(data), total)


def read_tail_lines(job_dir: Path, stream: StreamName, lines: int, max_bytes: int) -> OutputExcerpt:
    """The last ``lines`` lines within the last ``max_bytes`` bytes of one log."""
    text, (start, end), total = read_tail(job_dir / _LOGS[stream], lines, max_bytes)
    return OutputExcerpt(text, start, end, total)


class OutputSignal:
    """Wakes readers following a job supervised in this process: set after each chunk the
    supervisor writes, and at the terminal state. Costs nothing until somebody listens."""

    def __init__(self) -> None:
        self._event: anyio.Event | None = None

    def notify(self) -> None:
        if self._event is not None:
            self._event.set()
            self._event = None

    async def wait(self, timeout: float) -> None:
        if self._event is None:
            self._event = anyio.Event()
        with anyio.move_on_after(timeout):
            await self._event.wait()


def _read_from(path: Path, offset: int) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return b""
    try:
        return os.pread(fd, _READ_CHUNK, offset)
    finally:
        os.close(fd)


class Follow:
    """Async iterator over a job's output chunks from the start, as they are written,
    until the job is terminal and everything has been yielded.

    A class, not an async generator, on purpose: it holds nothing between reads, so a
    caller may simply ``break`` out of ``async for`` (trio warns about generators that
    are abandoned unfinished).

    :param is_terminal: the job is known terminal (checked *before* a read, so the read
        after it sees every byte).
    :param signal: the wake-up source of an in-process job; ``None`` follows on a timer.
    """

    def __init__(
        self,
        job_dir: Path,
        streams: Sequence[StreamName],
        *,
        is_terminal: Callable[[], bool],
        signal: OutputSignal | None,
    ) -> None:
        self._job_dir = job_dir
        self._offsets = dict.fromkeys(streams, 0)
        self._is_terminal = is_terminal
        self._signal = signal
        self._ready: list[OutputChunk] = []
        self._done = False
        self._delay = _POLL_FIRST

    def __aiter__(self) -> Follow:
        return self

    async def __anext__(self) -> OutputChunk:
        while not self._ready:
            if self._done:
                raise StopAsyncIteration
            await self._fill()
        return self._ready.pop(0)

    async def _fill(self) -> None:
        terminal = self._is_terminal()
        for stream, offset in self._offsets.items():
            data = _read_from(self._job_dir / _LOGS[stream], offset)
            if data:
                self._offsets[stream] = offset + len(data)
                self._ready.append(OutputChunk(stream, data))
        if self._ready:
            self._delay = _POLL_FIRST
            await anyio.lowlevel.checkpoint()
        elif terminal:
            self._done = True
        elif self._signal is not None:
            await self._signal.wait(1.0)  # the timeout only guards against a missed wake-up
        else:
            await anyio.sleep(self._delay)
            self._delay = min(self._delay * 2, _POLL_MAX)

    async def aclose(self) -> None:
        """Stop early (nothing to release; offered for ``contextlib.aclosing``)."""
        self._done = True
        self._ready.clear()


class FollowLines:
    """Async iterator splitting a :class:`Follow` into lines per stream (a last line
    without newline included; a line over ``MAX_LINE`` bytes comes in pieces)."""

    def __init__(self, chunks: Follow) -> None:
        self._chunks = chunks
        self._pending: dict[StreamName, bytes] = {}
        self._ready: list[OutputLine] = []
        self._done = False

    def __aiter__(self) -> FollowLines:
        return self

    async def __anext__(self) -> OutputLine:
        while not self._ready:
            if self._done:
                raise StopAsyncIteration
            try:
                chunk = await self._chunks.__anext__()
            except StopAsyncIteration:
                self._done = True
                for stream, rest in self._pending.items():
                    if rest:
                        self._ready.append(OutputLine(stream, lossy(rest)))
                self._pending.clear()
                continue
            buffer = self._pending.get(chunk.stream, b"") + chunk.data
            *complete, rest = buffer.split(b"\n")
            while len(rest) > MAX_LINE:  # memory stays bounded by a line
                complete.append(rest[:MAX_LINE])
                rest = rest[MAX_LINE:]
            self._pending[chunk.stream] = rest
            self._ready.extend(OutputLine(chunk.stream, lossy(line)) for line in complete)
        return self._ready.pop(0)

    async def aclose(self) -> None:
        await self._chunks.aclose()
        self._done = True
        self._ready.clear()
