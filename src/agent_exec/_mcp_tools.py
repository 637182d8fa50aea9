"""The MCP tools of ``agent-exec mcp`` (see ``_mcp.py``): the SDK's server with one tool per
job operation, each a thin call of the function the CLI command of the same name uses."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
import orjson
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import Field

from ._errors import AgentExecError, InvalidArgument
from ._mcp import Deadlines
from ._output import envelope, error_envelope

log = logging.getLogger("agent_exec.mcp")

#: A tool's result: the CLI document as structured content (any JSON object).
ToolResult = Annotated[CallToolResult, dict[str, Any]]
JobId = Annotated[str, Field(min_length=1, description="Job id or unique prefix.")]
Until = Annotated[
    float | None,
    Field(
        ge=0,
        allow_inf_nan=False,
        description="Seconds to observe the job (default from the server's configuration; "
        "larger values are clamped to the server's maximum).",
    ),
]
#: Inline output is bounded: a reply is held in memory and sent as one protocol message.
MaxBytes = Annotated[
    int, Field(ge=0, le=16 << 20, description="Bytes of each stream's output included inline (max 16 MiB).")
]
Signal = Annotated[
    str, Field(min_length=1, description="Signal name or number (TERM, INT, KILL, HUP, 9...).")
]
State = Literal["created", "running", "exited", "killed", "failed", "unknown"]


def _result(document: dict[str, Any], *, error: bool = False) -> CallToolResult:
    text = orjson.dumps(document).decode()
    return CallToolResult(
        content=[TextContent(type="text", text=text)], structured_content=document, is_error=error
    )


def error_result(exc: AgentExecError) -> CallToolResult:
    return _result(error_envelope(exc), error=True)


class _Server(MCPServer[Any]):
    """The SDK's server, with argument-validation failures reported like every other error."""

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
        try:
            return await super().call_tool(name, arguments, context)
        except UnexpectedToolError:
            raise
        except ToolError as exc:  # unknown tool, or arguments that fail the input schema
            return error_result(InvalidArgument(str(exc)))


def build_server(root: Path, deadlines: Deadlines, *, log_level: str = "WARNING") -> MCPServer[Any]:
    """The MCP server: one tool per job operation, all over the store at ``root``."""
    from ._config import load_config, resolve_wrapper
    from ._jobs import (
        DEFAULT_MAX_BYTES,
        JobDefinition,
        dedupe,
        launch_detached_exec,
        launch_new,
        list_data,
        observe,
        run_data,
        status_data,
        tail_data,
        validate_tag,
        validate_tag_pattern,
        wait_data,
    )
    from ._kill import kill_job
    from ._paths import canonical_cwd
    from ._restart import restart_data, restart_job

    server = _Server(
        name="agent-exec",
        instructions=(
            "Run shell commands as detached jobs that outlive this session; observe them with "
            "status/tail/wait (each call returns within the server's deadline), stop them with "
            "kill, relaunch them with restart. Results are agent-exec's JSON documents."
        ),
        log_level=log_level,  # type: ignore[arg-type]
    )
    # Two thread pools: calls that observe (up to the deadline) must not starve the quick
    # reads (status, tail, list) queued behind them.
    observing, reading = anyio.CapacityLimiter(64), anyio.CapacityLimiter(16)

    async def call(
        kind: str, func: Callable[..., dict[str, Any]], *args: Any, **kwargs: Any
    ) -> CallToolResult:
        limiter = reading if kind in ("status", "tail", "list") else observing
        try:
            data = await anyio.to_thread.run_sync(
                functools.partial(func, *args, **kwargs), limiter=limiter, abandon_on_cancel=True
            )
        except AgentExecError as exc:
            return error_result(exc)
        except Exception as exc:  # a bug of ours: report it, keep serving
            log.exception("internal error in tool %s", kind)
            return error_result(AgentExecError(f"{type(exc).__name__}: {exc}"))
        return _result(envelope(kind, data))

    def auto_gc() -> dict[str, Any] | None:
        settings = load_config(None).gc
        return settings.to_dict() if settings.auto else None

    read_only = ToolAnnotations(read_only_hint=True, open_world_hint=False)

    @server.tool(annotations=ToolAnnotations(destructive_hint=False, open_world_hint=True))
    async def run(
        command: Annotated[
            list[str] | str,
            Field(description="argv words (exec'd verbatim), or one string run by the shell (sh -lc)."),
        ],
        cwd: Annotated[str | None, Field(description="Working directory of the job.")] = None,
        env: Annotated[dict[str, str] | None, Field(description="Extra environment variables.")] = None,
        timeout: Annotated[
            int, Field(ge=0, le=1_000_000_000, description="Runtime limit in s (0: none).")
        ] = 0,
        until: Until = None,
        stdin: Annotated[str | None, Field(description="Content given to the job on its stdin.")] = None,
        stdin_file: Annotated[str | None, Field(description="File copied as the job's stdin.")] = None,
        tags: Annotated[list[str] | None, Field(description="Tags (dot-separated segments).")] = None,
        max_bytes: MaxBytes = DEFAULT_MAX_BYTES,
    ) -> ToolResult:
        """Start a command as a detached job (it outlives this session) and observe it until it
        finishes, prints its first output, or `until` seconds pass, like `agent-exec run`."""
        clock = time.monotonic()
        window = deadlines.clamp(until)

        def start() -> dict[str, Any]:
            words = [command] if isinstance(command, str) else list(command)
            if not words or (len(words) == 1 and not words[0].strip()):
                raise InvalidArgument("command must not be empty")
            if any("\0" in word for word in words) or (cwd is not None and "\0" in cwd):
                raise InvalidArgument("command words and cwd must not contain NUL characters")
            pairs = []
            for key, value in (env or {}).items():
                if not key or "=" in key or "\0" in key or "\0" in value:
                    raise InvalidArgument(f"invalid env key {key!r}: expected a non-empty name without '='")
                pairs.append(f"{key}={value}")
            if stdin is not None and stdin_file is not None:
                raise InvalidArgument("give stdin or stdin_file, not both")
            source: bytes | Path | None = None
            if stdin is not None:
                source = stdin.encode("utf-8", "surrogateescape")
            elif stdin_file is not None:
                source = Path(stdin_file)
            config = load_config(None)
            definition = JobDefinition(
                command=words,
                cwd=cwd,
                env=pairs,
                tags=dedupe(validate_tag(tag) for tag in tags or ()),
                timeout_s=timeout,
                wrapper=resolve_wrapper(None, config),
            )
            job_id, job_dir, meta = launch_new(
                root, definition, launch=launch_detached_exec, stdin=source, auto_gc=auto_gc()
            )
            state, waited_ms = observe(job_dir, wait=True, until=window, forever=False, polling=True)
            return run_data(
                job_id,
                job_dir,
                state,
                tags=meta.tags,
                env_vars=meta.env_vars,
                elapsed_ms=int((time.monotonic() - clock) * 1000),
                waited_ms=waited_ms,
                max_bytes=max_bytes,
            )

        return await call("run", start)

    @server.tool(annotations=read_only)
    async def status(job_id: JobId) -> ToolResult:
        """A job's state, exit code and timestamps (and `reason` for failures)."""
        return await call("status", status_data, root, job_id)

    @server.tool(annotations=read_only)
    async def tail(
        job_id: JobId,
        lines: Annotated[int, Field(ge=0, description="Trailing lines per stream (0: no limit).")] = 50,
        max_bytes: MaxBytes = DEFAULT_MAX_BYTES,
    ) -> ToolResult:
        """The last lines of a job's stdout and stderr."""
        return await call("tail", tail_data, root, job_id, tail_lines=lines, max_bytes=max_bytes)

    @server.tool(annotations=read_only)
    async def wait(job_id: JobId, until: Until = None, max_bytes: MaxBytes = DEFAULT_MAX_BYTES) -> ToolResult:
        """Wait until a job finishes or `until` seconds pass (clamped to the server's maximum);
        returns its state and output. Call again to keep waiting."""
        window = deadlines.clamp(until)
        return await call("wait", wait_data, root, job_id, until=window, max_bytes=max_bytes, polling=True)

    @server.tool(annotations=ToolAnnotations(destructive_hint=True, open_world_hint=False))
    async def kill(job_id: JobId, signal: Signal = "TERM") -> ToolResult:
        """Send a signal to a running job's process group and report the observed outcome."""
        return await call("kill", kill_job, root, job_id, signal_name=signal, wait=True, polling=True)

    @server.tool(name="list", annotations=read_only)
    async def list_(
        state: Annotated[State | None, Field(description="Only jobs in this state.")] = None,
        tags: Annotated[
            list[str] | None, Field(description="Tag patterns: 'ci' or 'ci.*' (all must match).")
        ] = None,
        all: Annotated[
            bool, Field(description="Jobs of every directory, not just the server's cwd.")
        ] = False,
        limit: Annotated[int, Field(ge=0, description="Maximum number of jobs (0: unlimited).")] = 50,
    ) -> ToolResult:
        """Jobs, newest first, each with its command, state and timestamps."""

        def rows() -> dict[str, Any]:
            patterns = [validate_tag_pattern(pattern) for pattern in tags or ()]
            cwd_filter = None if all else canonical_cwd(None)
            return list_data(
                root, state_filter=state, limit=limit, cwd_filter=cwd_filter, tag_patterns=patterns
            )

        return await call("list", rows)

    @server.tool(annotations=ToolAnnotations(destructive_hint=True, open_world_hint=True))
    async def restart(job_id: JobId, signal: Signal = "TERM", until: Until = None) -> ToolResult:
        """Relaunch a job in place (same id): stop it if running (`signal`, then KILL after 5 s),
        clear its logs and run its recorded command again; observe it like `run`."""
        clock = time.monotonic()
        window = deadlines.clamp(until)

        def relaunch() -> dict[str, Any]:
            done = restart_job(
                root, job_id, launch=launch_detached_exec, signal_name=signal, auto_gc=auto_gc()
            )
            remaining = max(0.0, window - (time.monotonic() - clock))
            state, waited_ms = observe(done.job_dir, wait=True, until=remaining, forever=False, polling=True)
            return restart_data(
                done,
                state,
                elapsed_ms=int((time.monotonic() - clock) * 1000),
                waited_ms=waited_ms,
                max_bytes=DEFAULT_MAX_BYTES,
            )

        return await call("restart", relaunch)

    _ = (run, status, tail, wait, kill, list_, restart)
    return server
