"""``config.toml``: the shell wrapper, automatic-GC settings and the job backend.

``run`` reads it on every call: plain classes (no ``dataclasses``), ``tomllib`` imported
only when a config file exists, and paths as strings (no ``pathlib``), spelled as
``pathlib`` spells them in messages.
"""

from __future__ import annotations

import os

from ._errors import ConfigError
from ._paths import posix_normal
from ._process import DEFAULT_WRAPPER, parse_wrapper

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: `run` imports this module on every call
if TYPE_CHECKING:
    from typing import Any


class GcSettings:
    """The ``[gc]`` table: automatic garbage collection after each job."""

    __slots__ = ("auto", "delete_limit", "max_bytes", "max_jobs", "older_than", "scan_limit")

    def __init__(self) -> None:
        self.auto = True
        self.older_than = "30d"
        self.max_jobs: int | None = None
        self.max_bytes: int | None = None
        self.scan_limit = 200
        self.delete_limit = 20

    def to_dict(self) -> dict[str, Any]:
        """The settings as the supervisor receives them (``LaunchSpec.auto_gc``)."""
        return {
            "auto": self.auto,
            "older_than": self.older_than,
            "max_jobs": self.max_jobs,
            "max_bytes": self.max_bytes,
            "scan_limit": self.scan_limit,
            "delete_limit": self.delete_limit,
        }


class Config:
    """A loaded config file (``path`` is None when there was none).

    ``backend_kind``/``backend_address``: ``[backend] kind`` (``local``/``ray``) and
    ``[backend] address`` (the Ray Jobs API).
    """

    __slots__ = ("backend_address", "backend_kind", "gc", "path", "shell_unix")

    def __init__(
        self,
        path: str | None = None,
        shell_unix: list[str] | None = None,
        backend_kind: str | None = None,
        backend_address: str | None = None,
    ) -> None:
        self.path = path
        self.shell_unix = shell_unix
        self.gc = GcSettings()
        self.backend_kind = backend_kind
        self.backend_address = backend_address


def default_config_path() -> str | None:
    xdg = os.environ.get("XDG_CONFIG_HOME")
    if xdg and os.path.isabs(xdg):
        return posix_normal(os.path.join(xdg, "agent-exec", "config.toml"))
    home = os.environ.get("HOME")
    if not home:
        return None
    return posix_normal(os.path.join(home, ".config", "agent-exec", "config.toml"))


def _bad(path: str, problem: str) -> ConfigError:
    return ConfigError(f"invalid config file {path}: {problem}")


def _uint(table: dict[str, Any], key: str, path: str) -> int | None:
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _bad(path, f"[gc].{key} must be a non-negative integer")
    return value


def load_config(explicit: str | None = None) -> Config:
    """Load ``explicit`` or the default file; a missing file is an empty config."""
    path = posix_normal(explicit) if explicit else default_config_path()
    if path is None:
        return Config()
    try:
        with open(path, "rb") as file:
            raw = file.read()
    except FileNotFoundError:
        return Config(path=None)
    except OSError as exc:
        raise ConfigError(f"failed to read config file {path}: {exc.strerror or exc}") from None
    import tomllib

    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise _bad(path, str(exc)) from None
    config = Config(path=path)
    shell = data.get("shell", {})
    if not isinstance(shell, dict):
        raise _bad(path, "[shell] must be a table")
    if "unix" in shell:
        unix = shell["unix"]
        if not isinstance(unix, list) or not all(isinstance(word, str) for word in unix):
            raise _bad(path, "[shell].unix must be an array of strings")
        config.shell_unix = unix
    gc = data.get("gc", {})
    if not isinstance(gc, dict):
        raise _bad(path, "[gc] must be a table")
    if "auto" in gc:
        if not isinstance(gc["auto"], bool):
            raise _bad(path, "[gc].auto must be a boolean")
        config.gc.auto = gc["auto"]
    if "older_than" in gc:
        if not isinstance(gc["older_than"], str):
            raise _bad(path, "[gc].older_than must be a string")
        config.gc.older_than = gc["older_than"]
    backend = data.get("backend", {})
    if not isinstance(backend, dict):
        raise _bad(path, "[backend] must be a table")
    if "kind" in backend:
        if backend["kind"] not in ("local", "ray"):
            raise _bad(path, '[backend].kind must be "local" or "ray"')
        config.backend_kind = backend["kind"]
    if "address" in backend:
        if not isinstance(backend["address"], str) or not backend["address"]:
            raise _bad(path, "[backend].address must be a non-empty string")
        config.backend_address = backend["address"]
    config.gc.max_jobs = _uint(gc, "max_jobs", path)
    config.gc.max_bytes = _uint(gc, "max_bytes", path)
    scan_limit = _uint(gc, "scan_limit", path)
    delete_limit = _uint(gc, "delete_limit", path)
    if scan_limit is not None:
        config.gc.scan_limit = scan_limit
    if delete_limit is not None:
        config.gc.delete_limit = delete_limit
    return config


def resolve_wrapper(flag: str | None, config: Config) -> list[str]:
    """``--shell-wrapper`` > ``[shell].unix`` > ``sh -lc``."""
    if flag is not None:
        return parse_wrapper(flag)
    if config.shell_unix is not None:
        if not config.shell_unix or not any(word.strip() for word in config.shell_unix):
            raise ConfigError(f"config file shell wrapper must not be empty (from {config.path})")
        return list(config.shell_unix)
    return list(DEFAULT_WRAPPER)


def resolve_backend(kind: str | None, address: str | None, config: Config) -> tuple[str, str]:
    """The backend of new jobs and the Ray address: flag > environment > config > default
    (``--backend``/``$AGENT_EXEC_BACKEND``/``[backend].kind``/``local``;
    ``--ray-address``/``$AGENT_EXEC_RAY_ADDRESS``/``[backend].address``/``http://127.0.0.1:8265``).
    """
    from ._errors import InvalidArgument

    chosen = kind or os.environ.get("AGENT_EXEC_BACKEND") or config.backend_kind or "local"
    if chosen not in ("local", "ray"):
        raise InvalidArgument(f"invalid backend {chosen!r} (from $AGENT_EXEC_BACKEND): expected local or ray")
    where = (
        address
        or os.environ.get("AGENT_EXEC_RAY_ADDRESS")
        or config.backend_address
        or "http://127.0.0.1:8265"
    )
    return chosen, where.rstrip("/")
