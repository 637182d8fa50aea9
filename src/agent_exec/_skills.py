"""``agent-exec install-skills``: install the bundled ``agent-exec`` skill for AI agents.

The skill documents ship as package data under ``skills/agent-exec/`` and are written to
``<base>/skills/agent-exec/`` (``<base>`` = ``.agents`` or ``.claude``, in the current
directory or, with ``--global``, in the home directory). The install is recorded in
``<base>/.skill-lock.json``; re-installing replaces the one ``agent-exec`` entry, so repeated
installs are idempotent apart from ``installed_at``. Other tools' entries are kept.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson

from ._errors import AgentExecError
from ._store import atomic_write_bytes
from ._timeutil import now_ts

SKILL_NAME = "agent-exec"
SOURCE_TYPE = "embedded"
LOCK_FILE = ".skill-lock.json"
#: The files installed, relative to the skill directory (upstream's hermes extras are not).
SKILL_FILES = (
    "SKILL.md",
    "references/cli-contract.md",
    "references/completion-events.md",
    "references/openclaw.md",
    "references/mcp.md",
)
_ENTRY_FIELDS = ("name", "source_type", "installed_at", "path")


def _home() -> Path:
    home = os.environ.get("HOME")
    if home:
        return Path(home)
    try:
        import pwd

        return Path(pwd.getpwuid(os.getuid()).pw_dir)
    except (KeyError, ImportError):
        raise AgentExecError("install-skills --global: cannot determine the home directory") from None


def _write_file(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically, with ordinary umask-governed permissions (these are
    documentation files, not job data)."""
    atomic_write_bytes(path, data, mode=0o666)


def _is_entry(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(value.get(key), str) for key in _ENTRY_FIELDS)


def read_lock(path: Path) -> list[dict[str, Any]]:
    """The lock file's entries; both formats, malformed entries dropped, unreadable = empty.

    Formats: ``{"skills": [entry, ...]}`` and the legacy ``{"skills": {"<name>": entry}}``
    (the key then replaces the entry's ``name``).
    """
    try:
        document = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return []
    skills = document.get("skills") if isinstance(document, dict) else None
    if isinstance(skills, list):
        return [dict(entry) for entry in skills if _is_entry(entry)]
    if isinstance(skills, dict):
        return [{**entry, "name": key} for key, entry in skills.items() if _is_entry(entry)]
    return []


def upsert(entries: list[dict[str, Any]], entry: dict[str, Any]) -> list[dict[str, Any]]:
    """Replace the entry of the same name in place (and drop duplicates of it), else append."""
    result: list[dict[str, Any]] = []
    placed = False
    for existing in entries:
        if existing.get("name") != entry["name"]:
            result.append(existing)
        elif not placed:
            result.append(entry)
            placed = True
    if not placed:
        result.append(entry)
    return result


def _skill_bytes(relative: str) -> bytes:
    from importlib import resources

    return resources.files(__package__).joinpath("skills", SKILL_NAME, *relative.split("/")).read_bytes()


def install_skills(*, global_: bool, claude: bool) -> dict[str, Any]:
    """Write the skill files and the lock entry; return the ``install_skills`` response data."""
    try:
        base_dir = _home() if global_ else Path(os.getcwd())
        base = base_dir / (".claude" if claude else ".agents")
        skill_dir = base / "skills" / SKILL_NAME
        lock_path = base / LOCK_FILE
        for relative in SKILL_FILES:
            target = skill_dir / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            _write_file(target, _skill_bytes(relative))
        entry = {
            "name": SKILL_NAME,
            "source_type": SOURCE_TYPE,
            "installed_at": now_ts(),
            "path": str(skill_dir),
        }
        entries = upsert(read_lock(lock_path), entry)
        _write_file(lock_path, orjson.dumps({"skills": entries}, option=orjson.OPT_INDENT_2) + b"\n")
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        raise AgentExecError(f"install-skills failed: {exc.strerror or exc}{where}") from None
    return {
        "skills": [{"name": SKILL_NAME, "source_type": SOURCE_TYPE, "path": str(skill_dir)}],
        "global": global_,
        "lock_file_path": str(lock_path),
    }
