"""The ``agent-exec`` command line: parse, call the library, print one document."""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: `run` forks its supervisor before heavy imports
if TYPE_CHECKING:
    from typing import Any

    from ._grammar import Invocation


def execute(invocation: Invocation) -> int:
    """Run one parsed invocation, print its response document, return the exit code."""
    from .._errors import AgentExecError, error_from_exception
    from .._output import emit, envelope, error_envelope

    yaml = bool(invocation.globals.get("yaml"))
    logger = _diagnostics(invocation.globals.get("verbose") or 0)
    if invocation.command == "completions":
        from ._completion import print_completion_script

        return print_completion_script(invocation.params["shell"])
    if invocation.command == "serve":
        from .._serve import serve_command

        return serve_command(invocation.params, invocation.globals)
    if invocation.command == "mcp":
        from .._mcp import mcp_command

        return mcp_command(invocation.params, invocation.globals)
    from ._commands import COMMANDS

    try:
        kind, data = COMMANDS[invocation.command](invocation.params, invocation.globals)
    except AgentExecError as exc:
        if logger:
            logger.info("%s failed: %s (%s)", invocation.command, exc.message, exc.code)
        emit(error_envelope(exc), yaml=yaml)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # never a traceback on stdout: report it as a JSON error
        if logger:
            logger.debug("unexpected error in %s", invocation.command, exc_info=True)
        emit(error_envelope(error_from_exception(exc, invocation.command)), yaml=yaml)
        return 1
    if logger:
        logger.info("%s: %s", invocation.command, data.get("job_id") or data.get("root") or "ok")
    emit(envelope(kind, data), yaml=yaml)
    return 0


_LEVELS = {"error": 40, "warn": 30, "warning": 30, "info": 20, "debug": 10, "trace": 5}


def _diagnostics(verbose: int) -> Any:
    """A logger on stderr when ``-v``/``-vv`` (or ``RUST_LOG=info|debug|...``) asks for one.

    Returns ``None`` otherwise, so that a normal call never imports ``logging``.
    """
    level = {0: None, 1: 20, 2: 10}.get(verbose, 5)
    env_level = _LEVELS.get(os.environ.get("RUST_LOG", "").strip().lower())
    if env_level is not None:
        level = env_level
    if level is None or level >= 30:
        return None
    import logging

    logging.basicConfig(stream=sys.stderr, level=level, format="agent-exec: %(levelname)s %(message)s")
    return logging.getLogger("agent_exec")


def _help_pseudo_command(args: list[str]) -> list[str]:
    """``agent-exec help [SUBCOMMAND...]`` means ``agent-exec [SUBCOMMAND...] --help``."""
    index = 0
    while index < len(args) and args[index].startswith("-"):
        index += 2 if args[index] in ("--root", "--backend", "--ray-address") else 1
    if index < len(args) and args[index] == "help":
        return [*args[:index], *args[index + 1 :], "--help"]
    return args


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point of ``agent-exec``."""
    args = sys.argv[1:] if argv is None else list(argv)
    if os.environ.get("COMPLETE"):
        from ._completion import complete_from_env

        sys.exit(complete_from_env(args))
    if "run" in args or "start" in args or "restart" in args:
        # Fork the job's supervisor now, so that its start-up overlaps ours on the other
        # core (see _launch), but after the modules both processes need: the supervisor
        # inherits them instead of importing them a second time.
        from .. import _jobs  # noqa: F401
        from .._launch import prefork

        prefork()  # best effort: a failed fork is retried (and reported) at launch
    from ._grammar import Decline, hoist_globals, parse

    args = _help_pseudo_command(args)

    try:
        invocation = parse(args)
    except Decline:
        from ._app import run_typer

        run_typer(hoist_globals(args))
        return
    code = execute(invocation)
    # The response is out; skip interpreter teardown (milliseconds on every call). Nothing
    # is left to flush but the standard streams, and no thread holds work in progress.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
