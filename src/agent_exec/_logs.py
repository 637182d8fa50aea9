"""Log files: the writer the supervisor streams output into, and the bounded readers
(head for inline output, tail for ``tail``) that every observer uses.
"""

from __future__ import annotations

import contextlib
import io
import os
import time

from ._timeutil import format_ts

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: every read command imports this module
if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    LineCallback = Callable[[str, bytes], None]
    #: A log file: a path, or ``(dir_fd, name)`` of a job directory held by descriptor.
    LogSource = Path | tuple[int, str]

ENCODING = "utf-8-lossy"

#: A partial line longer than this is written to the combined log as a line of its own,
#: so a workload that never prints a newline cannot grow the supervisor's memory.
MAX_PENDING_LINE = 1 << 20


def lossy(data: bytes) -> str:
    """UTF-8 with invalid sequences replaced by U+FFFD (``encoding: utf-8-lossy``)."""
    return data.decode("utf-8", "replace")


def _lossy_bytes(data: bytes) -> bytes:
    if data.isascii():
        return data
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("utf-8", "replace").encode("utf-8")
    return data


def _utf8_safe_cut(data: bytes, limit: int) -> int:
    """An index <= ``limit`` that does not split a UTF-8 character."""
    cut = limit
    while cut > limit - 4 and cut > 0 and (data[cut] & 0xC0) == 0x80:
        cut -= 1
    return cut if cut > 0 else limit


class OutputDrops:
    """What could not be written to the logs (full disk, I/O error): counted, never raised.

    The supervisor keeps draining the workload's pipes whatever happens to the files, so
    the workload is neither blocked nor killed by SIGPIPE; every later write is tried
    again, so writing resumes by itself once space is freed.
    """

    def __init__(self) -> None:
        #: Bytes of the workload's output missing from ``stdout.log``/``stderr.log``.
        self.raw_bytes = 0
        #: Bytes missing from the combined log (prefixes included).
        self.full_bytes = 0
        #: ``strerror`` of the first failure, e.g. "No space left on device".
        self.error: str | None = None

    def note(self, exc: OSError) -> None:
        if self.error is None:
            self.error = exc.strerror or str(exc)

    @property
    def any(self) -> bool:
        return self.error is not None

    def reason(self) -> str | None:
        """``output_dropped: <error>`` (with the logs concerned), or ``None``."""
        if self.error is None:
            return None
        if self.raw_bytes == 0 and self.full_bytes:
            return f"output_dropped: {self.error} (combined log only)"
        return f"output_dropped: {self.error}"


def _write_counting(fd: int, data: bytes | memoryview, drops: OutputDrops) -> int:
    """Write ``data``; return how many bytes could not be written."""
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view) :]
    except OSError as exc:
        drops.note(exc)
        return len(view)
    return 0


def _writev_counting(fd: int, parts: list[bytes | memoryview], drops: OutputDrops) -> int:
    total = sum(len(part) for part in parts)
    try:
        written = os.writev(fd, parts)
    except OSError as exc:
        drops.note(exc)
        return total
    if written < total:
        return _write_counting(fd, b"".join(parts)[written:], drops)
    return 0


def _open_append(target: LogSource) -> int:
    """Open a log for appending (no ``O_TRUNC``: see :class:`LogWriter`); a log in a job
    directory (``(dir_fd, name)``) is never reached through a symlink."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
    if isinstance(target, tuple):
        return os.open(target[1], flags | os.O_NOFOLLOW, 0o600, dir_fd=target[0])
    return os.open(target, flags, 0o600)


class LogWriter:
    """Writes a job's output: raw bytes to ``stdout.log``/``stderr.log``, timestamped lines
    to the combined log, in arrival order.

    The files are appended to, never truncated: a job is launched once (its lock sees to
    that), its logs were created empty, and truncating makes ext4 flush them on close.

    Writes go straight to ``O_APPEND`` descriptors of local files: a page-cache write costs
    microseconds, far less than handing each chunk to a worker thread would.
    """

    def __init__(self, stdout_path: LogSource, stderr_path: LogSource, full_path: LogSource) -> None:
        if not isinstance(full_path, tuple):  # ``run --log PATH``: the user's own path
            full_path.parent.mkdir(parents=True, exist_ok=True)
        opened: list[int] = []
        try:
            for target in (stdout_path, stderr_path, full_path):
                opened.append(_open_append(target))  # noqa: PERF401 - keep what opened
        except OSError:
            for fd in opened:
                os.close(fd)
            raise
        self._fds = {"stdout": opened[0], "stderr": opened[1]}
        self._full_fd = opened[2]
        self._pending = {"stdout": b"", "stderr": b""}
        self._prefix_cache: tuple[int, bytes, bytes] = (-1, b"", b"")
        self.on_line: LineCallback | None = None
        self.drops = OutputDrops()

    def _prefixes(self) -> tuple[bytes, bytes]:
        now = int(time.time())
        if self._prefix_cache[0] != now:
            stamp = format_ts(now)
            self._prefix_cache = (now, f"{stamp} [STDOUT] ".encode(), f"{stamp} [STDERR] ".encode())
        return self._prefix_cache[1], self._prefix_cache[2]

    def write(self, stream: str, data: bytes) -> None:
        """Record a chunk read from ``stream`` (``"stdout"`` or ``"stderr"``)."""
        if not data:
            return
        self.drops.raw_bytes += _write_counting(self._fds[stream], data, self.drops)
        pending = self._pending[stream]
        last_newline = data.rfind(b"\n")
        tail = len(data) - last_newline - 1
        if (
            last_newline >= 0
            and self.on_line is None
            and tail <= MAX_PENDING_LINE
            and data.isascii()
            and pending.isascii()
        ):
            # The common case, without copying the chunk: the carried partial line, then
            # every complete line prefixed by one ``replace`` (its result ends with the
            # prefix and the new partial line, which the memoryview leaves out).
            prefix = self._prefixes()[0 if stream == "stdout" else 1]
            replaced = data.replace(b"\n", b"\n" + prefix)
            body = memoryview(replaced)[: len(replaced) - len(prefix) - tail]
            self.drops.full_bytes += _writev_counting(self._full_fd, [prefix, pending, body], self.drops)
            self._pending[stream] = data[last_newline + 1 :]
            return
        buffer = pending + data if pending else data
        last_newline = buffer.rfind(b"\n")
        if last_newline < 0:
            complete, rest = b"", buffer
        else:
            complete, rest = buffer[: last_newline + 1], buffer[last_newline + 1 :]
        while len(rest) > MAX_PENDING_LINE:
            cut = _utf8_safe_cut(rest, MAX_PENDING_LINE)
            complete += rest[:cut] + b"\n"
            rest = rest[cut:]
        self._pending[stream] = rest
        if complete:
            self._emit_lines(stream, complete)

    def _emit_lines(self, stream: str, complete: bytes) -> None:
        """Append newline-terminated ``complete`` lines to the combined log, prefixed."""
        stdout_prefix, stderr_prefix = self._prefixes()
        prefix = stdout_prefix if stream == "stdout" else stderr_prefix
        text = _lossy_bytes(complete)
        # One replace builds the body; writev avoids copying it again to add the edges.
        body = memoryview(text.replace(b"\n", b"\n" + prefix))[: -len(prefix)]
        self.drops.full_bytes += _writev_counting(self._full_fd, [prefix, body], self.drops)
        if self.on_line is not None:
            for line in text[:-1].split(b"\n"):
                self.on_line(stream, line)

    def finish(self, stream: str) -> None:
        """End of ``stream``: a final line without newline still becomes a combined-log line."""
        rest = self._pending[stream]
        self._pending[stream] = b""
        if rest:
            self._emit_lines(stream, rest + b"\n")

    def close(self) -> None:
        """Flush pending partial lines and close the files; later calls do nothing."""
        if not self._fds:
            return
        try:
            for stream in ("stdout", "stderr"):
                self.finish(stream)
        finally:
            for fd in (*self._fds.values(), self._full_fd):
                with contextlib.suppress(OSError):  # a deferred write error: nothing to do
                    os.close(fd)
            self._fds = {}


# -- readers --------------------------------------------------------------------------


def _open_log(source: LogSource) -> io.BufferedReader:
    """Open a log for reading, never through a symlink (``O_NOFOLLOW``) and never blocking
    on a FIFO planted in its place."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    fd = os.open(source[1], flags, dir_fd=source[0]) if isinstance(source, tuple) else os.open(source, flags)
    return open(fd, "rb")


def file_size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def read_head(path: LogSource, max_bytes: int) -> tuple[str, list[int], int]:
    """``(text, [0, n], total)``: the first ``max_bytes`` bytes of a log, lossy-decoded."""
    try:
        with _open_log(path) as file:
            total = os.fstat(file.fileno()).st_size
            data = file.read(min(total, max_bytes)) if max_bytes > 0 else b""
    except OSError:
        return "", [0, 0], 0
    return lossy(data), [0, len(data)], total


def read_tail(path: LogSource, tail_lines: int, max_bytes: int) -> tuple[str, list[int], int]:
    """``(text, [begin, total], total)``: the last ``tail_lines`` lines of the last
    ``max_bytes`` bytes of a log.

    Reads backwards from the end in blocks, so memory is bounded by the excerpt returned,
    never by the size of the log.
    """
    try:
        file = _open_log(path)
    except OSError:
        return "", [0, 0], 0
    with file:
        total = os.fstat(file.fileno()).st_size
        window_start = max(0, total - max_bytes)
        if max_bytes <= 0 or total == 0:
            return "", [total, total], total
        line_start = window_start
        if tail_lines > 0:
            line_start = _find_line_start(file, window_start, total, tail_lines)
        file.seek(line_start)
        data = file.read(total - line_start)
    return lossy(data), [line_start, line_start + len(data)], total


def _find_line_start(file: object, window_start: int, total: int, tail_lines: int) -> int:
    """Offset just after the ``tail_lines``-th newline counted back from the end (a final
    newline does not start a line), or ``window_start`` if there are fewer lines."""
    assert isinstance(file, io.BufferedReader)
    block = 1 << 16
    end = total
    file.seek(total - 1)
    if file.read(1) == b"\n":
        end = total - 1
    newlines = 0
    position = end
    while position > window_start:
        start = max(window_start, position - block)
        file.seek(start)
        chunk = file.read(position - start)
        index = len(chunk)
        while True:
            index = chunk.rfind(b"\n", 0, index)
            if index < 0:
                break
            newlines += 1
            if newlines == tail_lines:
                return start + index + 1
        position = start
    return window_start
