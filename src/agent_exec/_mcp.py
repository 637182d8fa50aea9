"""``agent-exec mcp``: the job store as Model Context Protocol tools, over stdio.

A thin adapter, like ``_serve.py``: every tool (``_mcp_tools.py``) calls the same
``_jobs``/``_restart`` function as the CLI command of the same name and returns the CLI's
response document as the tool's structured result (and as JSON text, for hosts that read
only text). What the server adds is what a long-lived server owes an agent host:

- **Bounded calls.** Observing tools (``run``, ``wait``, ``restart``) stop at ``until``
  seconds, default ``AGENT_EXEC_MCP_DEFAULT_UNTIL_SECONDS`` (30); a larger request is
  clamped to ``AGENT_EXEC_MCP_MAX_UNTIL_SECONDS`` (50), never refused, and there is no
  "forever", so every call answers inside a host's request timeout (often 60 s).
- **A free event loop.** Store work runs in worker threads and observation probes the
  supervisor lock (:class:`~agent_exec._jobs.PollingWatch`) rather than parking a thread
  on it, so a call that gives up at its deadline leaves nothing behind.
- **The protocol owns stdin/stdout.** The SDK's stdio transport points fd 0 at
  ``/dev/null`` and fd 1 at stderr while serving; jobs never see the server's stdin (they
  get their ``stdin`` argument or nothing); logs go to stderr.
- **Jobs outlive the session.** Each job runs under its own detached supervisor in its
  own session, started by exec'ing the launcher (never forking this threaded process),
  which is waited for at once: the server leaves no zombie however many jobs it starts.
- **Errors are tool errors** (``isError``) whose structured content is the CLI's error
  document, ``error.code`` included; arguments that fail the input schema are
  ``invalid_argument``; nothing a caller sends can crash the server.

The MCP SDK is an optional dependency (``agent-exec[mcp]``), imported only once the
configuration has been checked.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._errors import AgentExecError, InvalidArgument

DEFAULT_UNTIL_ENV = "AGENT_EXEC_MCP_DEFAULT_UNTIL_SECONDS"
MAX_UNTIL_ENV = "AGENT_EXEC_MCP_MAX_UNTIL_SECONDS"
DEFAULT_UNTIL_S = 30.0
DEFAULT_MAX_UNTIL_S = 50.0

log = logging.getLogger("agent_exec.mcp")


@dataclass(frozen=True)
class Deadlines:
    """How long an observing call may last: ``default`` when none is asked, at most ``maximum``."""

    default: float
    maximum: float

    def clamp(self, requested: float | None) -> float:
        return min(self.default if requested is None else max(0.0, requested), self.maximum)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Deadlines:
        """Read the two variables; a malformed value is an :class:`InvalidArgument`."""

        def seconds(name: str, fallback: float) -> float:
            text = environ.get(name, "").strip()
            if not text:
                return fallback
            try:
                value = float(text)
            except ValueError:
                value = math.nan
            if not math.isfinite(value) or value < 0:
                raise InvalidArgument(f"invalid {name}={text!r}: expected a non-negative number of seconds")
            return value

        maximum = seconds(MAX_UNTIL_ENV, DEFAULT_MAX_UNTIL_S)
        return cls(default=min(seconds(DEFAULT_UNTIL_ENV, DEFAULT_UNTIL_S), maximum), maximum=maximum)


def mcp_command(params: dict[str, Any], globals: dict[str, Any]) -> int:
    """Serve MCP on stdin/stdout until the host closes stdin; diagnostics on stderr."""
    from ._paths import resolve_root

    verbose = int(globals.get("verbose") or 0)
    try:
        deadlines = Deadlines.from_env(os.environ)
    except AgentExecError as exc:
        sys.stderr.write(f"agent-exec mcp: {exc.message}\n")
        return 1
    try:
        import anyio

        from ._mcp_tools import build_server
    except ImportError as exc:
        sys.stderr.write(
            f"agent-exec mcp: the MCP SDK is not installed ({exc}); "
            "install it with: pip install 'agent-exec[mcp]'\n"
        )
        return 1
    server = build_server(
        resolve_root(globals.get("root")),
        deadlines,
        log_level="WARNING" if verbose <= 0 else "INFO" if verbose == 1 else "DEBUG",
    )
    log.info("mcp server on stdio: until default %gs, maximum %gs", deadlines.default, deadlines.maximum)
    try:
        anyio.run(server.run_stdio_async)
    except KeyboardInterrupt:
        return 130
    return 0
