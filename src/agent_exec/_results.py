"""The library's typed results: what a job ended as (:class:`JobResult`), bounded excerpts
of its output (:class:`OutputExcerpt`, :class:`TailResult`), rows of a listing
(:class:`JobSummary`) and pieces of streamed output (:class:`OutputChunk`,
:class:`OutputLine`).

All are frozen dataclasses built from the store's records; none holds a resource.
"""

from __future__ import annotations

import signal as _signal
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ._logs import lossy
from ._models import JobState, JobStatus
from ._paths import STDERR_LOG, STDOUT_LOG

__all__ = [
    "JobResult",
    "JobSummary",
    "OutputChunk",
    "OutputExcerpt",
    "OutputLine",
    "StreamName",
    "TailResult",
]

#: Which output stream a piece of output came from.
StreamName = Literal["stdout", "stderr"]

#: Which end of a log an excerpt is taken from.
ExcerptSide = Literal["head", "tail"]


def parse_signal(value: str | None) -> _signal.Signals | int | None:
    """``state.json`` keeps the signal number as a string; give it back as a number
    (a :class:`signal.Signals` when this system names it)."""
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        try:
            return _signal.Signals[value if value.startswith("SIG") else f"SIG{value}"]
        except KeyError:
            return None
    try:
        return _signal.Signals(number)
    except ValueError:
        return number


@dataclass(frozen=True, slots=True)
class OutputExcerpt:
    """A bounded piece of one log: the first or last bytes, decoded.

    ``text`` is UTF-8 with invalid sequences replaced (a character cut by the bound is
    dropped, not mangled); ``start``/``end`` are the byte offsets of the excerpt in the
    log and ``total_bytes`` the log's size when it was read.
    """

    text: str
    start: int
    end: int
    total_bytes: int

    @property
    def truncated(self) -> bool:
        """True if the log holds bytes outside the excerpt."""
        return self.start > 0 or self.end < self.total_bytes

    @classmethod
    def empty(cls) -> OutputExcerpt:
        return cls("", 0, 0, 0)


@dataclass(frozen=True, slots=True)
class JobResult:
    """A snapshot of a job's lifecycle record (terminal once :meth:`Job.wait` returns),
    with an excerpt of each output stream when one was asked for.

    ``signal`` is the number of the signal that killed the workload (a
    :class:`signal.Signals`); ``reason`` says why a job ended ``failed``
    (``spawn_failed: ...``, ``supervisor_lost``, ``cancelled_before_start``) or that it was
    ``timeout``-terminated.
    """

    job_id: str
    state: JobStatus
    exit_code: int | None
    signal: _signal.Signals | int | None
    reason: str | None
    started_at: str | None
    finished_at: str | None
    updated_at: str
    duration_ms: int | None
    stdout_log_path: Path
    stderr_log_path: Path
    stdout: OutputExcerpt | None = None
    stderr: OutputExcerpt | None = None

    @property
    def ok(self) -> bool:
        """True for a job that exited with status 0 on its own (a job stopped by its
        timeout is never ``ok``, even if it trapped SIGTERM and exited 0)."""
        return self.state is JobStatus.EXITED and self.exit_code == 0 and not self.timed_out

    @property
    def timed_out(self) -> bool:
        """True if the job's timeout fired (it was sent SIGTERM, then maybe SIGKILL)."""
        return self.reason == "timeout"

    @property
    def is_terminal(self) -> bool:
        return self.state.is_terminal

    @classmethod
    def from_state(
        cls,
        job_dir: Path,
        state: JobState,
        *,
        stdout: OutputExcerpt | None = None,
        stderr: OutputExcerpt | None = None,
    ) -> JobResult:
        return cls(
            job_id=state.job_id,
            state=state.status,
            exit_code=state.exit_code,
            signal=parse_signal(state.signal),
            reason=state.reason,
            started_at=state.started_at,
            finished_at=state.finished_at,
            updated_at=state.updated_at,
            duration_ms=state.duration_ms,
            stdout_log_path=job_dir / STDOUT_LOG,
            stderr_log_path=job_dir / STDERR_LOG,
            stdout=stdout,
            stderr=stderr,
        )


@dataclass(frozen=True, slots=True)
class TailResult:
    """The last lines of a job's two logs (:meth:`Job.tail`)."""

    job_id: str
    stdout: OutputExcerpt
    stderr: OutputExcerpt


@dataclass(frozen=True, slots=True)
class JobSummary:
    """One row of :meth:`JobRunner.list` (the CLI's ``list`` entries).

    ``state`` is ``None`` for a job whose ``state.json`` cannot be read (the CLI's
    ``unknown``). ``command`` is the job's command as recorded (argv words, or one shell
    string), so rows can be told apart without reading each job.
    """

    job_id: str
    state: JobStatus | None
    created_at: str
    tags: tuple[str, ...]
    command: tuple[str, ...] = ()
    exit_code: int | None = None
    started_at: str | None = None
    finished_at: str | None = None
    updated_at: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class OutputChunk:
    """Bytes a job wrote to one stream, in the order it wrote them (:meth:`Job.stream`)."""

    stream: StreamName
    data: bytes

    @property
    def text(self) -> str:
        """The bytes decoded (UTF-8, invalid sequences replaced)."""
        return lossy(self.data)


@dataclass(frozen=True, slots=True)
class OutputLine:
    """One line a job wrote to one stream, without its newline (:meth:`Job.lines`)."""

    stream: StreamName
    text: str
