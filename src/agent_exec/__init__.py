"""agent-exec: a job runner for AI-agent harnesses.

The CLI (``agent-exec``) and this library share one job store and one supervisor:
jobs started by :class:`JobRunner` are visible to ``agent-exec status``, and the runner
reads jobs the CLI started.

Public names are imported on first use: the CLI imports this package on every call (it
is the parent of ``agent_exec._cli``), so importing it must cost nothing.
"""

from __future__ import annotations

_TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs milliseconds here
if _TYPE_CHECKING:
    from typing import Any as _Any

    from ._backends.ray import RayJobs as RayJobs
    from ._errors import AgentExecError as AgentExecError
    from ._errors import AmbiguousJobId as AmbiguousJobId
    from ._errors import BackendUnavailable as BackendUnavailable
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
    from ._gc import GcEntry as GcEntry
    from ._gc import GcResult as GcResult
    from ._job import Job as Job
    from ._models import JobStatus as JobStatus
    from ._results import JobResult as JobResult
    from ._results import JobSummary as JobSummary
    from ._results import OutputChunk as OutputChunk
    from ._results import OutputExcerpt as OutputExcerpt
    from ._results import OutputLine as OutputLine
    from ._results import TailResult as TailResult
    from ._runner import JobRunner as JobRunner
    from ._runner import RunOptions as RunOptions

#: The package version. (The CLI's ``agent-exec --version`` prints ``0.2.3``: the version of
#: the upstream JSON contract it implements byte for byte.)
__version__ = "0.3.0"

__all__ = [
    "AgentExecError",
    "AmbiguousJobId",
    "BackendUnavailable",
    "ConfigError",
    "GcEntry",
    "GcResult",
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
    "OutputChunk",
    "OutputExcerpt",
    "OutputLine",
    "RayJobs",
    "RunOptions",
    "RunnerClosed",
    "StateCorrupt",
    "StdinRequired",
    "StdinTooLarge",
    "TailResult",
    "__version__",
]

#: Where each public name lives.
_HOMES = {
    "Job": "_job",
    **dict.fromkeys(("JobRunner", "RunOptions"), "_runner"),
    **dict.fromkeys(("GcEntry", "GcResult"), "_gc"),
    **dict.fromkeys(
        ("JobResult", "JobSummary", "OutputChunk", "OutputExcerpt", "OutputLine", "TailResult"), "_results"
    ),
    "JobStatus": "_models",
    "RayJobs": "_backends.ray",
    "BackendUnavailable": "_errors",
    **{name: "_errors" for name in __all__ if name.endswith(("Error", "Id", "Argument", "Duration"))},
    **dict.fromkeys(
        (
            "InvalidSignal",
            "InvalidState",
            "InvalidTag",
            "JobIdExhausted",
            "JobNotFound",
            "RunnerClosed",
            "StateCorrupt",
            "StdinRequired",
            "StdinTooLarge",
        ),
        "_errors",
    ),
}


def __getattr__(name: str) -> _Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'agent_exec' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    if isinstance(value, type):
        value.__module__ = "agent_exec"  # show agent_exec.Name in reprs, docs and pickles
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
