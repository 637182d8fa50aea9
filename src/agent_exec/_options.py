"""The options of :meth:`JobRunner.run`, and how they become a job definition: the
library's command policy (:func:`~agent_exec._process.library_command`), fractional
timeouts, and every kind of ``stdin`` it accepts.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterable, Mapping, Sequence
from pathlib import Path
from typing import TypedDict

from ._jobs import JobDefinition
from ._models import NotificationConfig
from ._process import library_command

__all__ = ["RunOptions", "StdinSource", "job_definition", "stdin_payload"]

#: What ``stdin=`` accepts: text (UTF-8), bytes, a file path, or an async iterable of bytes.
StdinSource = str | bytes | os.PathLike[str] | AsyncIterable[bytes]


class RunOptions(TypedDict, total=False):
    """The keyword options of :meth:`JobRunner.run` (shared by :meth:`JobRunner.execute`)."""

    cwd: str | os.PathLike[str] | None
    env: Mapping[str, str] | None
    env_files: Sequence[str]
    inherit_env: bool
    mask: Sequence[str]
    tags: Sequence[str]
    timeout: float | None
    kill_after: float | None
    progress_every: float | None
    stdin: StdinSource | None
    shell_wrapper: Sequence[str] | str | None
    notify_command: str | None
    notify_file: str | None
    detached: bool | None


def job_definition(command: Sequence[str] | str, options: RunOptions) -> tuple[JobDefinition, list[str]]:
    from ._jobs import validate_tag

    words, wrapper = library_command(command, options.get("shell_wrapper"))
    env_pairs = [f"{key}={value}" for key, value in (options.get("env") or {}).items()]
    notification = NotificationConfig(
        notify_command=options.get("notify_command"), notify_file=options.get("notify_file")
    )
    cwd = options.get("cwd")
    return (
        JobDefinition(
            command=words,
            cwd=os.fspath(cwd) if cwd is not None else None,
            env=env_pairs,
            env_files=list(options.get("env_files", ())),
            inherit_env=options.get("inherit_env", True),
            mask=list(options.get("mask", ())),
            tags=[validate_tag(tag) for tag in options.get("tags", ())],
            timeout_s=seconds_option(options.get("timeout"), "timeout"),
            kill_after_s=seconds_option(options.get("kill_after"), "kill_after"),
            progress_every_s=seconds_option(options.get("progress_every"), "progress_every"),
            notification=None if notification.is_empty else notification,
            wrapper=wrapper,
            record_argv=True,
        ),
        env_pairs,
    )


def seconds_option(value: float | None, name: str) -> float:
    if value is None:
        return 0.0
    if value < 0:
        raise ValueError(f"{name} must not be negative")
    return float(value)


async def stdin_payload(source: StdinSource | None) -> bytes | Path | None:
    """``stdin=`` as what the store materialises: bytes, or a path to copy."""
    if source is None or isinstance(source, bytes):
        return source
    if isinstance(source, str):
        return source.encode()
    if isinstance(source, os.PathLike):
        return Path(source)
    chunks = [bytes(chunk) async for chunk in source]
    return b"".join(chunks)
