"""agent-exec: a job runner for AI-agent harnesses.

The CLI (``agent-exec``) and this library share one job store and one supervisor:
jobs started by :class:`JobRunner` are visible to ``agent-exec status``, and the runner
reads jobs the CLI started.
"""

from __future__ import annotations

from ._api import Job as Job
from ._api import JobResult as JobResult
from ._api import JobRunner as JobRunner
from ._api import JobSummary as JobSummary
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

__version__ = "0.2.3"

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

for _name in __all__:
    _obj = globals()[_name]
    if hasattr(_obj, "__module__") and not isinstance(_obj, str):
        try:
            _obj.__module__ = "agent_exec"
        except (AttributeError, TypeError):
            pass
del _name, _obj
