"""``LaunchSpec``: everything a supervisor needs to start a job's workload.

Kept free of anyio so the CLI can build one without importing an event loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from ._jobdir import JobDir


@dataclass
class LaunchSpec:
    """What to execute, where, with which environment, limits and log destination."""

    job_id: str
    job_dir: Path
    command: list[str]
    wrapper: list[str]
    cwd: str | None = None
    env_pairs: list[str] = field(default_factory=list)
    env_files: list[str] = field(default_factory=list)
    inherit_env: bool = True
    base_env: Mapping[str, str] | None = None
    stdin_file: str | None = None
    timeout_s: float = 0
    kill_after_s: float = 0
    progress_every_s: float = 0
    full_log: Path | None = None
    #: Automatic-GC settings to apply after the job (detached supervisors only).
    auto_gc: dict[str, Any] | None = None
    #: ``meta.json`` as the launcher wrote it: the supervisor takes the job's definition
    #: (command, cwd, notification) from here, never from a file someone could replace.
    meta: dict[str, Any] | None = None
    #: The job directory held by descriptor; in a detached supervisor it arrives over the
    #: hand-over socket (``SCM_RIGHTS``) next to the lock. Never serialised.
    dir: JobDir | None = field(default=None, repr=False, compare=False)

    def handle(self) -> JobDir:
        """The job directory by descriptor (opened from ``job_dir`` on first use if the
        launcher did not pass one)."""
        if self.dir is None:
            from ._jobdir import JobDir

            self.dir = JobDir.open_path(self.job_dir)
        return self.dir

    def to_json(self) -> bytes:
        data = {name: getattr(self, name) for name in self.__dataclass_fields__ if name != "dir"}
        data["job_dir"] = str(self.job_dir)
        data["full_log"] = str(self.full_log) if self.full_log else None
        data["base_env"] = dict(self.base_env) if self.base_env is not None else None
        return orjson.dumps(data)

    @classmethod
    def from_json(cls, raw: bytes) -> LaunchSpec:
        data = orjson.loads(raw)
        data["job_dir"] = Path(data["job_dir"])
        data["full_log"] = Path(data["full_log"]) if data.get("full_log") else None
        return cls(**data)
