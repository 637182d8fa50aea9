"""``LaunchSpec``: everything a supervisor needs to start a job's workload.

Kept free of anyio so the CLI can build one without importing an event loop, and free of
``dataclasses``/orjson because ``run`` builds one on every call (see ``_codec``).
"""

from __future__ import annotations

from ._codec import dumps_compact, loads

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: `run` imports this module on every call
if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path
    from typing import Any

    from ._jobdir import JobDir


class LaunchSpec:
    """What to execute, where, with which environment, limits and log destination.

    ``meta`` is ``meta.json`` as the launcher wrote it: the supervisor takes the job's
    definition (command, cwd, notification) from here, never from a file someone could
    replace. ``dir`` is the job directory held by descriptor; in a detached supervisor it
    arrives over the hand-over socket (``SCM_RIGHTS``) next to the lock. Never serialised.
    """

    __slots__ = (
        "auto_gc",
        "base_env",
        "command",
        "cwd",
        "dir",
        "env_files",
        "env_pairs",
        "full_log",
        "inherit_env",
        "job_dir",
        "job_id",
        "kill_after_s",
        "meta",
        "meta_key",
        "progress_every_s",
        "stdin_file",
        "timeout_s",
        "wrapper",
    )

    def __init__(
        self,
        job_id: str,
        job_dir: Path,
        command: list[str],
        wrapper: list[str],
        cwd: str | None = None,
        env_pairs: list[str] | None = None,
        env_files: list[str] | None = None,
        inherit_env: bool = True,
        base_env: Mapping[str, str] | None = None,
        stdin_file: str | None = None,
        timeout_s: float = 0,
        kill_after_s: float = 0,
        progress_every_s: float = 0,
        full_log: Path | None = None,
        auto_gc: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
        dir: JobDir | None = None,
        meta_key: tuple[int, int, int] | None = None,
    ) -> None:
        self.job_id = job_id
        self.job_dir = job_dir
        self.command = command
        self.wrapper = wrapper
        self.cwd = cwd
        self.env_pairs: list[str] = [] if env_pairs is None else env_pairs
        self.env_files: list[str] = [] if env_files is None else env_files
        self.inherit_env = inherit_env
        self.base_env = base_env
        self.stdin_file = stdin_file
        self.timeout_s = timeout_s
        self.kill_after_s = kill_after_s
        self.progress_every_s = progress_every_s
        self.full_log = full_log
        #: Automatic-GC settings to apply after the job (detached supervisors only).
        self.auto_gc = auto_gc
        self.meta = meta
        #: ``(inode, size, mtime_ns)`` of the ``meta.json`` the launcher wrote (``meta``):
        #: while the file still matches, nobody has to read it again.
        self.meta_key = meta_key
        self.dir = dir

    def __repr__(self) -> str:
        return f"LaunchSpec(job_id={self.job_id!r}, command={self.command!r})"

    def handle(self) -> JobDir:
        """The job directory by descriptor (opened from ``job_dir`` on first use if the
        launcher did not pass one)."""
        if self.dir is None:
            from ._jobdir import JobDir

            self.dir = JobDir.open_path(self.job_dir)
        return self.dir

    def to_json(self) -> bytes:
        data = {name: getattr(self, name) for name in self.__slots__ if name != "dir"}
        data["job_dir"] = str(self.job_dir)
        data["full_log"] = str(self.full_log) if self.full_log else None
        data["base_env"] = dict(self.base_env) if self.base_env is not None else None
        return dumps_compact(data)

    @classmethod
    def from_json(cls, raw: bytes) -> LaunchSpec:
        """The spec as :meth:`to_json` wrote it. ``job_dir`` comes back as a
        :class:`~agent_exec._paths.RootPath`: a supervisor gets its job before it has loaded
        ``pathlib`` (see ``_detached``), and turns it into a ``Path`` once it has."""
        from ._paths import RootPath

        data = loads(raw)
        data["job_dir"] = RootPath(data["job_dir"])
        if data.get("full_log"):
            from pathlib import Path  # ``run --log PATH``: the user's own file

            data["full_log"] = Path(data["full_log"])
        else:
            data["full_log"] = None
        data["meta_key"] = tuple(data["meta_key"]) if data.get("meta_key") else None
        return cls(**data)
