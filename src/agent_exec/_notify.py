"""Notifications: ``job.finished`` completion events and ``job.output.matched`` events.

(Placeholder interface; the full implementation lands with the notifications issue.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._models import JobState
    from ._supervisor import LaunchSpec


class Notifier:
    """Delivers a job's notifications without ever blocking its log streaming."""

    def __init__(self, spec: LaunchSpec) -> None:
        self.spec = spec
        self.watches_output = False

    def on_line(self, stream: str, line: bytes) -> None:
        """Called for every complete output line while output matching is configured."""

    async def run(self) -> None:
        """Background task delivering output-match events."""

    async def drain(self) -> None:
        """Deliver what is queued (bounded in time) before the terminal state is written."""

    async def completion(self, state: JobState) -> None:
        """Deliver ``job.finished`` if the job's current ``meta.json`` asks for it."""


def validate_pattern(match: object) -> None:
    """Raise an :class:`AgentExecError` if a regex output pattern does not compile."""
    import re

    from ._errors import AgentExecError
    from ._models import OutputMatch

    assert isinstance(match, OutputMatch)
    if match.match_type == "regex":
        try:
            re.compile(match.pattern)
        except re.error as exc:
            raise AgentExecError(f"invalid output pattern regex {match.pattern!r}: {exc}") from None
