"""The exception hierarchy of agent-exec.

Every exception carries the machine-readable ``code`` that the CLI prints in its error
document (``error.code``) and that ``serve`` maps to an HTTP status, so the library and
the CLI report failures the same way::

    AgentExecError                  (code: internal_error)
    ├── JobNotFound                 job_not_found
    ├── AmbiguousJobId              ambiguous_job_id   (details: candidates, truncated)
    ├── InvalidState                invalid_state
    ├── StdinRequired               stdin_required
    ├── StdinTooLarge               stdin_too_large
    ├── JobIdExhausted              io_error
    ├── IoError                     io_error           (an OS call failed; path named; retryable
    │                                                   for ENOSPC, EMFILE, EAGAIN and the like)
    ├── UnsafeRoot                  unsafe_root        (extension: a jobs root another user could
    │                                                   change, or no usable directory)
    ├── InvalidTag                  invalid_tag
    ├── InvalidSignal               invalid_signal     (extension: unknown --signal)
    ├── InvalidArgument             invalid_argument   (extension: unusable value, e.g. --env =x)
    ├── InvalidDuration             internal_error     (bad GC duration, as upstream)
    ├── ConfigError                 internal_error
    ├── StateCorrupt                internal_error     (unreadable meta.json/state.json)
    ├── RunnerClosed                internal_error     (JobRunner used outside its context)
    └── BackendUnavailable          backend_unavailable (extension: Ray not installed / head unreachable)
"""

from __future__ import annotations

import errno

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: every CLI call imports this module
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "AgentExecError",
    "AmbiguousJobId",
    "BackendUnavailable",
    "ConfigError",
    "InvalidArgument",
    "InvalidDuration",
    "InvalidSignal",
    "InvalidState",
    "InvalidTag",
    "IoError",
    "JobIdExhausted",
    "JobNotFound",
    "RunnerClosed",
    "StateCorrupt",
    "StdinRequired",
    "StdinTooLarge",
    "UnsafeRoot",
]


class AgentExecError(Exception):
    """Root of every error agent-exec raises on purpose; ``code`` is the CLI error code."""

    code: str = "internal_error"
    #: Whether the same call may succeed later unchanged (``error.retryable``).
    retryable: bool = False

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        """The ``error`` object of the error document."""
        error: dict[str, Any] = {"code": self.code, "message": self.message, "retryable": self.retryable}
        if self.details is not None:
            error["details"] = self.details
        return error


class JobNotFound(AgentExecError):
    """No job directory matches the given id or prefix."""

    code = "job_not_found"

    def __init__(self, given: str) -> None:
        super().__init__(f"job not found: {given}")
        self.given = given


class AmbiguousJobId(AgentExecError):
    """A job id prefix matches two or more job directories."""

    code = "ambiguous_job_id"

    def __init__(self, prefix: str, candidates: list[str]) -> None:
        shown = sorted(candidates)[:20]
        more = len(candidates) - len(shown)
        message = f"ambiguous job ID prefix '{prefix}': matches {', '.join(shown)}"
        if more > 0:
            message += f", ... and {more} more"
        super().__init__(message, details={"candidates": shown, "truncated": more > 0})


class InvalidState(AgentExecError):
    """The job is in a state that does not allow the requested operation."""

    code = "invalid_state"

    def __init__(self, reason: str) -> None:
        super().__init__(f"invalid job state: {reason}")


class StdinRequired(AgentExecError):
    """``--stdin -`` was given while the caller's stdin is a terminal."""

    code = "stdin_required"

    def __init__(self) -> None:
        super().__init__("stdin_required: --stdin - requires non-interactive stdin (pipe/heredoc/redirect)")


class StdinTooLarge(AgentExecError):
    """The materialised stdin would exceed ``--stdin-max-bytes``."""

    code = "stdin_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(f"stdin_too_large: input exceeds {limit} byte limit")


class JobIdExhausted(AgentExecError):
    """Sixteen generated job ids in a row already existed."""

    code = "io_error"

    def __init__(self) -> None:
        super().__init__("job ID generation failed: 16 consecutive collisions")


class InvalidTag(AgentExecError):
    """A tag or tag pattern is malformed."""

    code = "invalid_tag"


class InvalidSignal(AgentExecError):
    """A ``--signal`` value names no signal of this system."""

    code = "invalid_signal"

    def __init__(self, given: str) -> None:
        super().__init__(f"invalid signal: {given!r}; expected a name such as TERM, SIGHUP, kill or a number")


class InvalidDuration(AgentExecError):
    """A GC duration does not match ``30d``, ``24h``, ``60m``, ``3600s`` or bare seconds."""

    def __init__(self, given: str) -> None:
        super().__init__(f"invalid duration: {given}; expected formats: 30d, 24h, 60m, 3600s")


class ConfigError(AgentExecError):
    """The config file or a shell wrapper is malformed."""


class StateCorrupt(AgentExecError):
    """A job's ``meta.json`` or ``state.json`` is missing or cannot be parsed."""


class RunnerClosed(AgentExecError):
    """A :class:`JobRunner` was used before ``__aenter__`` or after it closed."""


class InvalidArgument(AgentExecError):
    """A value passed the command-line grammar but is not usable (e.g. ``--env =x``)."""

    code = "invalid_argument"


#: errnos of conditions that go away by themselves (space freed, descriptors or processes
#: released, memory reclaimed): retrying the same call can succeed.
TRANSIENT_ERRNOS = frozenset(
    [
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EMFILE,
        errno.ENFILE,
        errno.EAGAIN,
        errno.ENOMEM,
        errno.EINTR,
        errno.EBUSY,
    ]
)


class UnsafeRoot(AgentExecError):
    """The jobs root (or a directory above it) could be changed by another user, or it is
    not a usable directory (e.g. a dangling symlink); see ``_root.py``."""

    code = "unsafe_root"


class IoError(AgentExecError):
    """An operating-system call failed (full disk, descriptor or process limits, permissions...).

    The message names what was being done and on which path; ``retryable`` is true when
    the condition can clear by itself (:data:`TRANSIENT_ERRNOS`).
    """

    code = "io_error"

    def __init__(self, message: str, *, errno_: int | None = None, path: str | None = None) -> None:
        super().__init__(message)
        self.errno = errno_
        self.path = path
        self.retryable = errno_ in TRANSIENT_ERRNOS

    @classmethod
    def from_os(cls, exc: OSError, action: str, path: object = None) -> IoError:
        """``"<action> <path>: <strerror>"`` from an :class:`OSError`."""
        where = path if path is not None else exc.filename
        text = exc.strerror or str(exc)
        message = f"{action} {where}: {text}" if where is not None else f"{action}: {text}"
        return cls(message, errno_=exc.errno, path=None if where is None else str(where))


def error_from_exception(exc: BaseException, context: str) -> AgentExecError:
    """The error document for an exception nobody turned into an :class:`AgentExecError`.

    Failures of the environment (an ``OSError``, a thread or memory that cannot be had)
    become ``io_error``, undecodable text ``invalid_argument``; only what is left, a real
    bug, stays ``internal_error`` with the Python text.
    """
    if isinstance(exc, AgentExecError):
        return exc
    if isinstance(exc, OSError):
        text = exc.strerror or str(exc)
        message = f"{context}: {text}" + (f": {exc.filename}" if exc.filename is not None else "")
        filename = None if exc.filename is None else str(exc.filename)
        return IoError(message, errno_=exc.errno, path=filename)
    if isinstance(exc, RuntimeError) and "can't start new thread" in str(exc):
        return IoError(
            f"{context}: cannot start a thread (process or memory limit reached)", errno_=errno.EAGAIN
        )
    if isinstance(exc, MemoryError):
        return IoError(f"{context}: out of memory", errno_=errno.ENOMEM)
    if isinstance(exc, UnicodeError):
        return InvalidArgument(f"{context}: a value is not valid text: {exc}")
    return AgentExecError(f"{type(exc).__name__}: {exc}")


class BackendUnavailable(AgentExecError):
    """A job backend cannot be used: its package is not installed (``agent-exec[ray]``) or
    its service does not answer within the connect timeout (then ``retryable``)."""

    code = "backend_unavailable"

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable
