"""``agent-exec install-skills``: bundled skill files and the ``.skill-lock.json`` upsert."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import Cli

FILES = (
    "SKILL.md",
    "references/cli-contract.md",
    "references/completion-events.md",
    "references/openclaw.md",
    "references/mcp.md",
)
TS = "2026-01-01T00:00:00Z"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    path = tmp_path / "project"
    path.mkdir()
    return path


def _lock(path: Path) -> list[dict[str, str]]:
    return json.loads(path.read_text())["skills"]  # type: ignore[no-any-return]


def test_install_into_the_current_directory(cli: Cli, project: Path) -> None:
    result = cli("install-skills", cwd=project)
    assert result.returncode == 0, result.stderr
    doc = result.doc
    skill_dir = project / ".agents" / "skills" / "agent-exec"
    assert doc == {
        "schema_version": "0.1",
        "ok": True,
        "type": "install_skills",
        "skills": [{"name": "agent-exec", "source_type": "embedded", "path": str(skill_dir)}],
        "global": False,
        "lock_file_path": str(project / ".agents" / ".skill-lock.json"),
    }
    for name in FILES:
        text = (skill_dir / name).read_text()
        assert "agent-exec" in text
    assert sorted(str(p.relative_to(skill_dir)) for p in skill_dir.rglob("*") if p.is_file()) == sorted(FILES)
    assert (skill_dir / "SKILL.md").read_text().startswith("---\nname: agent-exec\ndescription: ")
    [entry] = _lock(project / ".agents" / ".skill-lock.json")
    assert list(entry) == ["name", "source_type", "installed_at", "path"]
    assert entry["name"] == "agent-exec" and entry["source_type"] == "embedded"
    assert entry["path"] == str(skill_dir)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", entry["installed_at"])


def test_claude_and_global(cli: Cli, project: Path, cli_env: dict[str, str]) -> None:
    claude = cli("install-skills", "--claude", cwd=project).doc
    assert claude["lock_file_path"] == str(project / ".claude" / ".skill-lock.json")
    assert (project / ".claude" / "skills" / "agent-exec" / "SKILL.md").is_file()
    home = Path(cli_env["HOME"])
    glob = cli("install-skills", "--global", cwd=project).doc
    assert glob["global"] is True
    assert glob["skills"][0]["path"] == str(home / ".agents" / "skills" / "agent-exec")
    assert (home / ".agents" / "skills" / "agent-exec" / "references" / "openclaw.md").is_file()
    both = cli("install-skills", "--global", "--claude", cwd=project).doc
    assert both["lock_file_path"] == str(home / ".claude" / ".skill-lock.json")
    assert not (project / ".agents").exists()


def test_reinstall_is_idempotent_and_keeps_other_entries(cli: Cli, project: Path) -> None:
    base = project / ".agents"
    base.mkdir()
    other = {"name": "other", "source_type": "git", "installed_at": TS, "path": "/x"}
    stale = {"name": "agent-exec", "source_type": "embedded", "installed_at": TS, "path": "/old"}
    (base / ".skill-lock.json").write_text(json.dumps({"skills": [stale, other]}))
    skill = base / "skills" / "agent-exec" / "SKILL.md"
    skill.parent.mkdir(parents=True)
    skill.write_text("tampered")
    for _ in range(3):
        assert cli("install-skills", cwd=project).returncode == 0
    entries = _lock(base / ".skill-lock.json")
    assert [entry["name"] for entry in entries] == ["agent-exec", "other"], "replaced in place"
    assert entries[1] == other
    assert entries[0]["path"] == str(base / "skills" / "agent-exec")
    assert skill.read_text() != "tampered"


def test_legacy_map_format_is_converted(cli: Cli, project: Path) -> None:
    base = project / ".agents"
    base.mkdir()
    legacy = {
        "skills": {
            "kept": {"name": "ignored", "source_type": "git", "installed_at": TS, "path": "/k"},
            "dropped": {"name": "x"},
        }
    }
    (base / ".skill-lock.json").write_text(json.dumps(legacy))
    assert cli("install-skills", cwd=project).returncode == 0
    entries = _lock(base / ".skill-lock.json")
    assert [entry["name"] for entry in entries] == ["kept", "agent-exec"]
    assert entries[0]["path"] == "/k"


@pytest.mark.parametrize("content", ["not json", "[]", '{"skills": 5}', '{"skills": [1, {"name": "x"}]}'])
def test_unparsable_lock_is_treated_as_empty(cli: Cli, project: Path, content: str) -> None:
    base = project / ".agents"
    base.mkdir()
    (base / ".skill-lock.json").write_text(content)
    assert cli("install-skills", cwd=project).returncode == 0
    assert [entry["name"] for entry in _lock(base / ".skill-lock.json")] == ["agent-exec"]


def test_write_failure_is_an_internal_error(cli: Cli, project: Path) -> None:
    (project / ".agents").write_text("a file where the directory should be")
    result = cli("install-skills", cwd=project)
    assert result.returncode == 1
    assert result.doc["error"]["code"] == "internal_error"


def test_skill_files_are_package_data() -> None:
    from importlib import resources

    base = resources.files("agent_exec").joinpath("skills", "agent-exec")
    for name in FILES:
        assert base.joinpath(*name.split("/")).read_text(encoding="utf-8").strip()
