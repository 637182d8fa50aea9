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
    "JobIdExhausted",
    "JobNotFound",
    "RunnerClosed",
    "StateCorrupt",
    "StdinRequired",
    "StdinTooLarge",
]


class AgentExecError(Exception):
    """Root of every error agent-exec raises on purpose; ``code`` is the CLI error code."""

    code: str = "internal_error"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        """The ``error`` object of the error document."""
        error: dict[str, Any] = {"code": self.code, "message": self.message, "retryable": False}
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


class BackendUnavailable(AgentExecError):
    """A job backend cannot be used: its package is not installed (``agent-exec[ray]``) or
    its service does not answer within the connect timeout (``retryable`` tells which;
    the error document keeps ``retryable: false`` as the 0.2.3 contract has it)."""

    code = "backend_unavailable"

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable
