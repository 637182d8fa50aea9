"""The records agent-exec persists: job definitions (``meta.json``) and lifecycle states
(``state.json``), with parsing that tolerates unknown fields and rejects malformed ones.

Plain classes with ``__slots__`` rather than dataclasses: every CLI call reads these
records, and importing ``dataclasses`` (which imports ``inspect``) and generating the
methods cost about as much as the interpreter's own start-up.
"""

from __future__ import annotations

import enum

from ._errors import StateCorrupt

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs milliseconds here
if TYPE_CHECKING:
    from typing import Any

SCHEMA_VERSION = "0.1"

__all__ = ["JobMeta", "JobState", "JobStatus", "NotificationConfig", "OutputMatch"]


class _Record:
    """Value semantics for the record classes: equality and repr over ``__slots__``."""

    __slots__ = ()

    def _values(self) -> tuple[Any, ...]:
        names: tuple[str, ...] = self.__slots__  # type: ignore[assignment]
        return tuple(getattr(self, name) for name in names)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]  # mutable, like a dataclass

    def __repr__(self) -> str:
        names: tuple[str, ...] = self.__slots__  # type: ignore[assignment]
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in names)
        return f"{type(self).__name__}({fields})"


class JobStatus(enum.StrEnum):
    """Lifecycle of a job: ``created`` → ``running`` → one of the terminal states."""

    CREATED = "created"
    RUNNING = "running"
    EXITED = "exited"
    KILLED = "killed"
    FAILED = "failed"

    @property
    def is_terminal(self) -> bool:
        return self in (JobStatus.EXITED, JobStatus.KILLED, JobStatus.FAILED)

    @property
    def is_active(self) -> bool:
        return self in (JobStatus.CREATED, JobStatus.RUNNING)


def _str_list(value: Any, name: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise StateCorrupt(f"field {name!r} must be a list of strings")
    return list(value)


def _opt_str(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) else None


def _opt_int(data: dict[str, Any], key: str, default: int = 0) -> int:
    value = data.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _opt_nonneg(data: dict[str, Any], key: str) -> int | None:
    value = _opt_int(data, key, -1)
    return value if value >= 0 else None


class OutputMatch(_Record):
    """When a line of output matches ``pattern``, emit a ``job.output.matched`` event."""

    __slots__ = ("command", "file", "match_type", "pattern", "stream")

    def __init__(
        self,
        pattern: str,
        match_type: str = "contains",
        stream: str = "either",
        command: str | None = None,
        file: str | None = None,
    ) -> None:
        self.pattern = pattern
        self.match_type = match_type
        self.stream = stream
        self.command = command
        self.file = file

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"pattern": self.pattern, "match_type": self.match_type, "stream": self.stream}
        if self.command is not None:
            data["command"] = self.command
        if self.file is not None:
            data["file"] = self.file
        return data

    @classmethod
    def from_dict(cls, data: Any) -> OutputMatch | None:
        if not isinstance(data, dict) or not isinstance(data.get("pattern"), str):
            return None
        match_type = data.get("match_type", "contains")
        stream = data.get("stream", "either")
        return cls(
            pattern=data["pattern"],
            match_type=match_type if match_type in ("contains", "regex") else "contains",
            stream=stream if stream in ("stdout", "stderr", "either") else "either",
            command=_opt_str(data, "command"),
            file=_opt_str(data, "file"),
        )


class NotificationConfig(_Record):
    """Completion sinks and the output-match rule of a job (``meta.json.notification``)."""

    __slots__ = ("notify_command", "notify_file", "on_output_match")

    def __init__(
        self,
        notify_command: str | None = None,
        notify_file: str | None = None,
        on_output_match: OutputMatch | None = None,
    ) -> None:
        self.notify_command = notify_command
        self.notify_file = notify_file
        self.on_output_match = on_output_match

    @property
    def is_empty(self) -> bool:
        return self.notify_command is None and self.notify_file is None and self.on_output_match is None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.notify_command is not None:
            data["notify_command"] = self.notify_command
        if self.notify_file is not None:
            data["notify_file"] = self.notify_file
        if self.on_output_match is not None:
            data["on_output_match"] = self.on_output_match.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Any) -> NotificationConfig | None:
        if not isinstance(data, dict):
            return None
        config = cls(
            notify_command=_opt_str(data, "notify_command"),
            notify_file=_opt_str(data, "notify_file"),
            on_output_match=OutputMatch.from_dict(data.get("on_output_match")),
        )
        return None if config.is_empty else config


class JobMeta(_Record):
    """A job's definition: what to run, where, and how (``meta.json``)."""

    __slots__ = (
        "command",
        "created_at",
        "cwd",
        "env_files",
        "env_keys",
        "env_vars",
        "env_vars_runtime",
        "extra",
        "inherit_env",
        "job_id",
        "kill_after_ms",
        "mask",
        "notification",
        "progress_every_ms",
        "root",
        "shell_wrapper",
        "stdin_file",
        "tags",
        "timeout_ms",
    )

    def __init__(
        self,
        job_id: str,
        command: list[str],
        created_at: str,
        root: str,
        env_keys: list[str] | None = None,
        env_vars: list[str] | None = None,
        env_vars_runtime: list[str] | None = None,
        mask: list[str] | None = None,
        cwd: str | None = None,
        notification: NotificationConfig | None = None,
        tags: list[str] | None = None,
        inherit_env: bool = True,
        env_files: list[str] | None = None,
        timeout_ms: int = 0,
        kill_after_ms: int = 0,
        progress_every_ms: int = 0,
        shell_wrapper: list[str] | None = None,
        stdin_file: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.job_id = job_id
        self.command = command
        self.created_at = created_at
        self.root = root
        self.env_keys: list[str] = [] if env_keys is None else env_keys
        self.env_vars: list[str] = [] if env_vars is None else env_vars
        self.env_vars_runtime: list[str] = [] if env_vars_runtime is None else env_vars_runtime
        self.mask: list[str] = [] if mask is None else mask
        self.cwd = cwd
        self.notification = notification
        self.tags: list[str] = [] if tags is None else tags
        self.inherit_env = inherit_env
        self.env_files: list[str] = [] if env_files is None else env_files
        self.timeout_ms = timeout_ms
        self.kill_after_ms = kill_after_ms
        self.progress_every_ms = progress_every_ms
        self.shell_wrapper = shell_wrapper
        self.stdin_file = stdin_file
        self.extra: dict[str, Any] = {} if extra is None else extra

    _KNOWN = frozenset(
        [
            "job",
            "schema_version",
            "command",
            "created_at",
            "root",
            "env_keys",
            "env_vars",
            "env_vars_runtime",
            "mask",
            "cwd",
            "notification",
            "tags",
            "inherit_env",
            "env_files",
            "timeout_ms",
            "kill_after_ms",
            "progress_every_ms",
            "shell_wrapper",
            "stdin_file",
        ]
    )

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "job": {"id": self.job_id},
            "schema_version": SCHEMA_VERSION,
            "command": self.command,
            "created_at": self.created_at,
            "root": self.root,
            "env_keys": self.env_keys,
        }
        if self.env_vars:
            data["env_vars"] = self.env_vars
        if self.env_vars_runtime:
            data["env_vars_runtime"] = self.env_vars_runtime
        if self.mask:
            data["mask"] = self.mask
        if self.cwd is not None:
            data["cwd"] = self.cwd
        if self.notification is not None and not self.notification.is_empty:
            data["notification"] = self.notification.to_dict()
        data["tags"] = self.tags
        data["inherit_env"] = self.inherit_env
        if self.env_files:
            data["env_files"] = self.env_files
        data["timeout_ms"] = self.timeout_ms
        data["kill_after_ms"] = self.kill_after_ms
        data["progress_every_ms"] = self.progress_every_ms
        if self.shell_wrapper is not None:
            data["shell_wrapper"] = self.shell_wrapper
        if self.stdin_file is not None:
            data["stdin_file"] = self.stdin_file
        for key, value in self.extra.items():
            data.setdefault(key, value)
        return data

    @classmethod
    def from_dict(cls, data: Any) -> JobMeta:
        """Parse ``meta.json``; raise :class:`StateCorrupt` if a required key is wrong."""
        if not isinstance(data, dict):
            raise StateCorrupt("meta.json is not a JSON object")
        job = data.get("job")
        if not isinstance(job, dict) or not isinstance(job.get("id"), str):
            raise StateCorrupt("meta.json: missing job.id")
        for key in ("schema_version", "created_at", "root"):
            if not isinstance(data.get(key), str):
                raise StateCorrupt(f"meta.json: missing {key}")
        wrapper = data.get("shell_wrapper")
        inherit = data.get("inherit_env", True)
        return cls(
            job_id=job["id"],
            command=_str_list(data.get("command"), "command"),
            created_at=data["created_at"],
            root=data["root"],
            env_keys=_str_list(data.get("env_keys"), "env_keys"),
            env_vars=_str_list(data.get("env_vars", []), "env_vars"),
            env_vars_runtime=_str_list(data.get("env_vars_runtime", []), "env_vars_runtime"),
            mask=_str_list(data.get("mask", []), "mask"),
            cwd=_opt_str(data, "cwd"),
            notification=NotificationConfig.from_dict(data.get("notification")),
            tags=_str_list(data.get("tags", []), "tags"),
            inherit_env=inherit if isinstance(inherit, bool) else True,
            env_files=_str_list(data.get("env_files", []), "env_files"),
            timeout_ms=_opt_int(data, "timeout_ms"),
            kill_after_ms=_opt_int(data, "kill_after_ms"),
            progress_every_ms=_opt_int(data, "progress_every_ms"),
            shell_wrapper=_str_list(wrapper, "shell_wrapper") if wrapper is not None else None,
            stdin_file=_opt_str(data, "stdin_file"),
            extra={key: value for key, value in data.items() if key not in cls._KNOWN},
        )


class JobState(_Record):
    """A job's lifecycle record (``state.json``).

    ``reason`` is an extension of this implementation: why a job ended ``failed``
    (``spawn_failed: ...``, ``supervisor_lost``) or was ``killed`` by a timeout
    (``timeout``). It is omitted when there is nothing to say.

    Further extensions, each written only when there is something to say:
    ``output_dropped_bytes`` (output the logs could not take, e.g. on a full disk),
    ``workload`` (``{"pid", "pgid", "start_ticks"}``: the workload's identity, from
    ``/proc/<pid>/stat``, so that its process group can be found again, and told apart
    from a reused pid, after its supervisor is gone) and ``supervisor_stopped_ms`` (the
    workload ended while its supervisor was stopped: ``duration_ms``/``finished_at``
    are the last moment it was seen running, and it ended at most this much later).
    """

    __slots__ = (
        "duration_ms",
        "exit_code",
        "finished_at",
        "job_id",
        "output_dropped_bytes",
        "pid",
        "reason",
        "signal",
        "started_at",
        "status",
        "supervisor_stopped_ms",
        "updated_at",
        "workload",
    )

    def __init__(
        self,
        job_id: str,
        status: JobStatus,
        updated_at: str,
        started_at: str | None = None,
        exit_code: int | None = None,
        signal: str | None = None,
        duration_ms: int | None = None,
        pid: int | None = None,
        finished_at: str | None = None,
        reason: str | None = None,
        output_dropped_bytes: int | None = None,
        workload: WorkloadIdentity | None = None,
        supervisor_stopped_ms: int | None = None,
    ) -> None:
        self.job_id = job_id
        self.status = status
        self.updated_at = updated_at
        self.started_at = started_at
        self.exit_code = exit_code
        self.signal = signal
        self.duration_ms = duration_ms
        self.pid = pid
        self.finished_at = finished_at
        self.reason = reason
        self.output_dropped_bytes = output_dropped_bytes
        self.workload = workload
        self.supervisor_stopped_ms = supervisor_stopped_ms

    @property
    def is_terminal(self) -> bool:
        return self.status.is_terminal

    def to_dict(self) -> dict[str, Any]:
        job: dict[str, Any] = {"id": self.job_id, "status": self.status.value}
        if self.started_at is not None:
            job["started_at"] = self.started_at
        data: dict[str, Any] = {
            "job": job,
            "result": {"exit_code": self.exit_code, "signal": self.signal, "duration_ms": self.duration_ms},
        }
        if self.pid is not None:
            data["pid"] = self.pid
        if self.finished_at is not None:
            data["finished_at"] = self.finished_at
        data["updated_at"] = self.updated_at
        if self.reason is not None:
            data["reason"] = self.reason
        if self.output_dropped_bytes:
            data["output_dropped_bytes"] = self.output_dropped_bytes
        if self.supervisor_stopped_ms is not None:
            data["supervisor_stopped_ms"] = self.supervisor_stopped_ms
        if self.workload is not None:
            data["workload"] = self.workload.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Any) -> JobState:
        """Parse ``state.json``; raise :class:`StateCorrupt` if a required key is wrong."""
        if not isinstance(data, dict):
            raise StateCorrupt("state.json is not a JSON object")
        job = data.get("job")
        result = data.get("result")
        if not isinstance(job, dict) or not isinstance(job.get("id"), str):
            raise StateCorrupt("state.json: missing job.id")
        try:
            status = JobStatus(str(job.get("status")))
        except ValueError:
            raise StateCorrupt(f"state.json: invalid status {job.get('status')!r}") from None
        if not isinstance(result, dict) or not isinstance(data.get("updated_at"), str):
            raise StateCorrupt("state.json: missing result or updated_at")
        exit_code = result.get("exit_code")
        duration = result.get("duration_ms")
        pid = data.get("pid")
        return cls(
            job_id=job["id"],
            status=status,
            updated_at=data["updated_at"],
            started_at=_opt_str(job, "started_at"),
            exit_code=exit_code if isinstance(exit_code, int) and not isinstance(exit_code, bool) else None,
            signal=_opt_str(result, "signal"),
            duration_ms=duration if isinstance(duration, int) and not isinstance(duration, bool) else None,
            pid=pid if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 else None,
            finished_at=_opt_str(data, "finished_at"),
            reason=_opt_str(data, "reason"),
            output_dropped_bytes=_opt_int(data, "output_dropped_bytes") or None,
            workload=WorkloadIdentity.from_dict(data.get("workload")),
            supervisor_stopped_ms=_opt_nonneg(data, "supervisor_stopped_ms"),
        )


class WorkloadIdentity(_Record):
    """Who the workload is: its pid, its process group and the pid's start time (clock
    ticks after boot, ``/proc/<pid>/stat`` field 22), which a reused pid cannot match."""

    __slots__ = ("pgid", "pid", "start_ticks")

    def __init__(self, pid: int, pgid: int, start_ticks: int | None = None) -> None:
        self.pid = pid
        self.pgid = pgid
        self.start_ticks = start_ticks

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"pid": self.pid, "pgid": self.pgid}
        if self.start_ticks is not None:
            data["start_ticks"] = self.start_ticks
        return data

    @classmethod
    def from_dict(cls, data: Any) -> WorkloadIdentity | None:
        if not isinstance(data, dict):
            return None
        pid, pgid = _opt_int(data, "pid"), _opt_int(data, "pgid")
        if pid <= 0 or pgid <= 0:
            return None
        ticks = _opt_int(data, "start_ticks", -1)
        return cls(pid=pid, pgid=pgid, start_ticks=ticks if ticks >= 0 else None)
