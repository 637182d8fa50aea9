"""agent-exec: a job runner for AI-agent harnesses.

The CLI (``agent-exec``) and this library share one job store and one supervisor:
jobs started by :class:`JobRunner` are visible to ``agent-exec status``, and the runner
reads jobs the CLI started.
"""

from __future__ import annotations

from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

from ._errors import AgentExecError as AgentExecError
from ._errors import AmbiguousJobId as AmbiguousJobId
from ._errors import ConfigError as ConfigError
from ._errors import InvalidArgument as InvalidArgument
from ._errors import InvalidDuration as InvalidDuration
from ._errors import InvalidSignal as InvalidSignal
from ._errors import InvalidState as InvalidState
from ._errors import InvalidTag as InvalidTag
from ._errors import JobIdExhausted as JobIdExhausted
from ._errors import JobNotFound as JobNotFound
from ._errors import RunnerClosed as RunnerClosed
from ._errors import StateCorrupt as StateCorrupt
from ._errors import StdinRequired as StdinRequired
from ._errors import StdinTooLarge as StdinTooLarge
from ._models import JobStatus as JobStatus

if _TYPE_CHECKING:
    from ._api import Job as Job
    from ._api import JobResult as JobResult
    from ._api import JobRunner as JobRunner
    from ._api import JobSummary as JobSummary

__version__ = "0.2.3"

#: Names imported on first use: the CLI imports this package on every call, and the
#: runner's module pulls in anyio, which would double the CLI's start-up time.
_LAZY = frozenset({"Job", "JobResult", "JobRunner", "JobSummary"})

__all__ = [
    "AgentExecError",
    "AmbiguousJobId",
    "ConfigError",
    "InvalidArgument",
    "InvalidDuration",
    "InvalidSignal",
    "InvalidState",
    "InvalidTag",
    "Job",
    "JobIdExhausted",
    "JobNotFound",
    "JobResult",
    "JobRunner",
    "JobStatus",
    "JobSummary",
    "RunnerClosed",
    "StateCorrupt",
    "StdinRequired",
    "StdinTooLarge",
    "__version__",
]



def _present_as_public(obj: _Any) -> _Any:
    """Show ``agent_exec.Name`` rather than the private module in reprs and docs."""
    if isinstance(obj, type):
        obj.__module__ = "agent_exec"
    return obj


def __getattr__(name: str) -> _Any:
    if name in _LAZY:
        from . import _api

        value = _present_as_public(getattr(_api, name))
        globals()[name] = value
        return value
    raise AttributeError(f"module 'agent_exec' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _LAZY)


for _name in __all__:
    if _name not in _LAZY and _name != "__version__":
        _present_as_public(globals()[_name])
del _name
