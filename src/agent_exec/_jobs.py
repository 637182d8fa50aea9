"""Job operations on the store: define, launch and update jobs (the read side is in
``_observe``, re-exported here). The CLI, ``serve`` and :class:`~agent_exec.JobRunner`
all go through these functions, so every way in creates and reports jobs identically.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from pathlib import Path

from ._errors import InvalidState, InvalidTag, StateCorrupt, StdinTooLarge
from ._models import JobMeta, JobState, JobStatus, NotificationConfig
from ._observe import DEFAULT_MAX_BYTES as DEFAULT_MAX_BYTES
from ._observe import OUTPUT_SETTLE as OUTPUT_SETTLE
from ._observe import SupervisorWatch as SupervisorWatch
from ._observe import kill_job as kill_job
from ._observe import list_data as list_data
from ._observe import observe as observe
from ._observe import outcome_fields as outcome_fields
from ._observe import output_fields as output_fields
from ._observe import run_data as run_data
from ._observe import status_data as status_data
from ._observe import tags_match as tags_match
from ._observe import tail_data as tail_data
from ._observe import wait_data as wait_data
from ._observe import wait_for as wait_for
from ._paths import (
    DIR_MODE,
    FILE_MODE,
    FULL_LOG,
    STDERR_LOG,
    STDIN_FILE,
    STDOUT_LOG,
    canonical_cwd,
    new_job_id,
    resolve_job,
)
from ._process import DEFAULT_WRAPPER, split_env_pair
from ._spec import LaunchSpec
from ._store import (
    read_meta,
    read_state_raw,
    supervision_claim,
    write_meta,
    write_state,
)
from ._timeutil import now_ts

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: `run` imports this module on every call
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from typing import IO, Any

    StdinSource = bytes | Path | IO[bytes] | None

DEFAULT_STDIN_MAX_BYTES = 64 * 1024 * 1024
_TAG = re.compile(r"^[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*$")


# -- tags -----------------------------------------------------------------------------


def validate_tag(tag: str) -> str:
    """A stored tag: dot-separated segments of ASCII letters, digits and ``-``."""
    if not _TAG.match(tag):
        raise InvalidTag(
            f"invalid tag {tag!r}: use dot-separated segments of letters, digits and '-' (e.g. ci.build)"
        )
    return tag


def validate_tag_pattern(pattern: str) -> str:
    """A tag filter: a stored tag (exact) or ``<tag>.*`` (namespace)."""
    base = pattern[:-2] if pattern.endswith(".*") else pattern
    if not _TAG.match(base):
        raise InvalidTag(f"invalid tag pattern {pattern!r}: expected a tag or '<tag>.*'")
    return pattern


def dedupe(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


# -- defining a job -------------------------------------------------------------------


class JobDefinition:
    """What to run and how: the definition-time options of ``run``/``create``.

    (A plain class, not a dataclass: ``run`` builds one on every call.)
    """

    __slots__ = (
        "command",
        "cwd",
        "env",
        "env_files",
        "inherit_env",
        "kill_after_s",
        "mask",
        "notification",
        "progress_every_s",
        "tags",
        "timeout_s",
        "wrapper",
    )

    def __init__(
        self,
        command: list[str],
        cwd: str | None = None,
        env: list[str] | None = None,
        env_files: list[str] | None = None,
        inherit_env: bool = True,
        mask: list[str] | None = None,
        tags: list[str] | None = None,
        timeout_s: int = 0,
        kill_after_s: int = 0,
        progress_every_s: int = 0,
        notification: NotificationConfig | None = None,
        wrapper: list[str] | None = None,
    ) -> None:
        self.command = command
        self.cwd = cwd
        self.env: list[str] = [] if env is None else env
        self.env_files: list[str] = [] if env_files is None else env_files
        self.inherit_env = inherit_env
        self.mask: list[str] = [] if mask is None else mask
        self.tags: list[str] = [] if tags is None else tags
        self.timeout_s = timeout_s
        self.kill_after_s = kill_after_s
        self.progress_every_s = progress_every_s
        self.notification = notification
        self.wrapper: list[str] = list(DEFAULT_WRAPPER) if wrapper is None else wrapper

    def masked_env(self) -> list[str]:
        masked = set(self.mask)
        shown = []
        for pair in self.env:
            key, _ = split_env_pair(pair)
            shown.append(f"{key}=***" if key in masked else pair)
        return shown


def _materialise_stdin(job_dir: Path, source: bytes | Path | IO[bytes], limit: int) -> None:
    path = job_dir / STDIN_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
    try:
        with open(fd, "wb", closefd=True) as out:
            if isinstance(source, bytes):
                if len(source) > limit:
                    raise StdinTooLarge(limit)
                out.write(source)
                return
            stream: IO[bytes]
            with contextlib.ExitStack() as stack:
                if isinstance(source, Path):
                    try:
                        stream = stack.enter_context(open(source, "rb"))
                    except OSError as exc:
                        raise StateCorrupt(f"failed to open --stdin-file {source}: {exc.strerror}") from None
                else:
                    stream = source
                written = 0
                while chunk := stream.read(1 << 20):
                    written += len(chunk)
                    if written > limit:
                        raise StdinTooLarge(limit)
                    out.write(chunk)
    except BaseException:
        with contextlib.suppress(OSError):
            path.unlink()
        raise


def create_job(
    root: Path,
    definition: JobDefinition,
    *,
    stdin: StdinSource = None,
    stdin_max_bytes: int = DEFAULT_STDIN_MAX_BYTES,
    persist_runtime_env: bool = False,
    mask_env: bool = True,
    precreate_logs: bool = True,
) -> tuple[str, Path, JobMeta]:
    """Create the job directory with ``meta.json``, ``stdin.bin`` and empty logs.

    If stdin cannot be materialised the whole directory is removed again: a failed
    ``run``/``create`` leaves nothing half-made behind.
    """
    try:
        root.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    except OSError as exc:
        raise StateCorrupt(f"failed to create jobs root {root}: {exc.strerror or exc}") from None
    job_id = new_job_id(root)
    job_dir = root / job_id
    meta = JobMeta(
        job_id=job_id,
        command=list(definition.command),
        created_at=now_ts(),
        root=str(root),
        env_keys=[split_env_pair(pair)[0] for pair in definition.env],
        env_vars=definition.masked_env() if mask_env else list(definition.env),
        env_vars_runtime=list(definition.env) if persist_runtime_env else [],
        mask=list(definition.mask),
        cwd=canonical_cwd(definition.cwd),
        notification=definition.notification,
        tags=dedupe(definition.tags),
        inherit_env=definition.inherit_env,
        env_files=list(definition.env_files),
        timeout_ms=definition.timeout_s * 1000,
        kill_after_ms=definition.kill_after_s * 1000,
        progress_every_ms=definition.progress_every_s * 1000,
        shell_wrapper=list(definition.wrapper),
    )
    try:
        job_dir.mkdir(mode=DIR_MODE)
    except OSError as exc:
        raise StateCorrupt(f"failed to create job directory {job_dir}: {exc.strerror or exc}") from None
    try:
        if stdin is not None:
            _materialise_stdin(job_dir, stdin, stdin_max_bytes)
            meta.stdin_file = STDIN_FILE
        write_meta(job_dir, meta)
        # The CLI pre-creates the logs (readers may look before the supervisor starts);
        # an in-process runner's supervisor creates them an instant later.
        for name in (STDOUT_LOG, STDERR_LOG, FULL_LOG) if precreate_logs else ():
            os.close(os.open(job_dir / name, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, FILE_MODE))
    except BaseException:
        import shutil

        shutil.rmtree(job_dir, ignore_errors=True)
        raise
    return job_id, job_dir, meta


def write_created_state(job_dir: Path, job_id: str) -> JobState:
    state = JobState(job_id=job_id, status=JobStatus.CREATED, updated_at=now_ts())
    write_state(job_dir, state)
    return state


def launch_spec(
    job_dir: Path,
    meta: JobMeta,
    *,
    env_pairs: Sequence[str],
    cwd: str | None,
    full_log: Path | None = None,
) -> LaunchSpec:
    return LaunchSpec(
        job_id=meta.job_id,
        job_dir=job_dir,
        command=meta.command,
        wrapper=meta.shell_wrapper or list(DEFAULT_WRAPPER),
        cwd=cwd,
        env_pairs=list(env_pairs),
        env_files=meta.env_files,
        inherit_env=meta.inherit_env,
        stdin_file=meta.stdin_file,
        timeout_s=meta.timeout_ms / 1000,
        kill_after_s=meta.kill_after_ms / 1000,
        progress_every_s=meta.progress_every_ms / 1000,
        full_log=full_log,
    )


def running_state(job_id: str, pid: int | None) -> JobState:
    now = now_ts()
    return JobState(job_id=job_id, status=JobStatus.RUNNING, updated_at=now, started_at=now, pid=pid)


def launch_detached_locked(spec: LaunchSpec, lock_fd: int) -> int:
    """Hand the job to a detached supervisor; the job is ``running`` when this returns."""
    from ._launch import take_supervisor

    return take_supervisor().hand_over(
        spec, lock_fd, lambda pid: write_state(spec.job_dir, running_state(spec.job_id, pid))
    )


def masked_env_view(meta: JobMeta) -> list[str]:
    """``KEY=VALUE`` of a created job's runtime env with masked keys shown as ``KEY=***``."""
    masked = set(meta.mask)
    return [
        f"{split_env_pair(pair)[0]}=***" if split_env_pair(pair)[0] in masked else pair
        for pair in meta.env_vars_runtime
    ]


def start_created(root: Path, given: str, *, auto_gc: Any = None) -> tuple[str, Path, JobMeta]:
    """Launch a ``created`` job exactly once, even if several callers race to start it."""
    job_id, job_dir = resolve_job(root, given)
    meta = read_meta(job_dir)
    read_state_raw(job_dir)
    with supervision_claim(job_dir) as lock_fd:
        state = read_state_raw(job_dir)
        if lock_fd is None or state.status is not JobStatus.CREATED:
            shown = state.status.value if lock_fd is not None else "running"
            raise InvalidState(f"job {given} is in '{shown}' state; only 'created' jobs can be started")
        spec = launch_spec(job_dir, meta, env_pairs=meta.env_vars_runtime, cwd=meta.cwd)
        spec.auto_gc = auto_gc
        launch_detached_locked(spec, lock_fd)
    return job_id, job_dir, meta


# -- metadata updates -----------------------------------------------------------------


@contextlib.contextmanager
def _meta_lock(job_dir: Path) -> Any:
    """Serialise read-modify-write cycles of ``meta.json`` (``tag set`` vs ``notify set``)."""
    fd = os.open(job_dir / ".meta.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def set_tags(root: Path, given: str, tags: Sequence[str]) -> dict[str, Any]:
    """Replace a job's tags (validated, de-duplicated, first occurrence wins)."""
    clean = dedupe(validate_tag(tag) for tag in tags)
    job_id, job_dir = resolve_job(root, given)
    with _meta_lock(job_dir):
        meta = read_meta(job_dir)
        meta.tags = clean
        write_meta(job_dir, meta)
    return {"job_id": job_id, "tags": clean}


def set_notification(
    root: Path,
    given: str,
    *,
    command: str | None = None,
    output_pattern: str | None = None,
    output_match_type: str | None = None,
    output_stream: str | None = None,
    output_command: str | None = None,
    output_file: str | None = None,
) -> dict[str, Any]:
    """Update ``meta.json.notification`` only (never fires a sink), merging as upstream does."""
    from ._models import OutputMatch
    from ._notify import validate_pattern

    job_id, job_dir = resolve_job(root, given)
    with _meta_lock(job_dir):
        meta = read_meta(job_dir)
        config = meta.notification or NotificationConfig()
        if command is not None:
            config.notify_command = command
        config.on_output_match = merge_output_match(
            config.on_output_match,
            pattern=output_pattern,
            match_type=output_match_type,
            stream=output_stream,
            command=output_command,
            file=output_file,
        )
        if config.on_output_match is not None:
            validate_pattern(config.on_output_match)
        meta.notification = None if config.is_empty else config
        write_meta(job_dir, meta)
    _ = OutputMatch
    return {"job_id": job_id, "notification": config.to_dict()}


def merge_output_match(
    existing: Any,
    *,
    pattern: str | None,
    match_type: str | None,
    stream: str | None,
    command: str | None,
    file: str | None,
) -> Any:
    """Apply the given output-match options over ``existing``; an empty pattern clears it."""
    from ._models import OutputMatch

    if all(value is None for value in (pattern, match_type, stream, command, file)):
        return existing
    base = existing or OutputMatch(pattern="")
    merged = OutputMatch(
        pattern=pattern if pattern is not None else base.pattern,
        match_type=match_type if match_type is not None else base.match_type,
        stream=stream if stream is not None else base.stream,
        command=command if command is not None else base.command,
        file=file if file is not None else base.file,
    )
    return merged if merged.pattern else None
