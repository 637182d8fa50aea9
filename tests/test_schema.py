"""``agent-exec schema``: the bundled JSON Schema, validated against real CLI output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from conftest import Cli, poll_until, py


@pytest.fixture(scope="module")
def schema_doc() -> dict[str, Any]:
    from agent_exec._schema import schema_data

    return schema_data()


@pytest.fixture(scope="module")
def validator(schema_doc: dict[str, Any]) -> jsonschema.Draft7Validator:
    schema = schema_doc["schema"]
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def _check(validator: jsonschema.Draft7Validator, doc: dict[str, Any]) -> None:
    errors = sorted(validator.iter_errors(doc), key=lambda error: list(error.path))
    assert not errors, f"{doc.get('type')}: " + "; ".join(
        f"{list(error.path)}: {error.message}" for error in errors[:5]
    )


def test_schema_command_output(cli: Cli, validator: jsonschema.Draft7Validator) -> None:
    result = cli("schema")
    assert result.returncode == 0
    doc = result.doc
    assert doc["type"] == "schema" and doc["schema_format"] == "json-schema-draft-07"
    assert doc["generated_at"] == doc["schema"]["$comment"]
    assert doc["schema"]["$schema"] == "http://json-schema.org/draft-07/schema#"
    _check(validator, doc)


def test_schema_is_package_data() -> None:
    from importlib import resources

    data = resources.files("agent_exec").joinpath("schema", "agent-exec.schema.json").read_bytes()
    assert json.loads(data)["title"] == "agent-exec CLI response schema"


def test_every_response_type_validates(
    cli: Cli, validator: jsonschema.Draft7Validator, tmp_path: Path, root: Path
) -> None:
    seen: dict[str, int] = {}

    def check(result: Any, code: int = 0) -> dict[str, Any]:
        assert result.returncode == code, result.stderr
        doc = result.doc
        _check(validator, doc)
        seen[doc["type"]] = seen.get(doc["type"], 0) + 1
        return doc  # type: ignore[no-any-return]

    run = check(cli("run", "--env", "A=1", "--mask", "A", "--tag", "ci.x", "--", "echo", "hi"))
    assert run["env_vars"] == ["A=***"]
    assert check(cli("wait", run["job_id"]))["state"] == "exited"
    check(cli("status", run["job_id"]))
    check(cli("tail", run["job_id"]))
    check(cli("kill", run["job_id"]))  # already terminal: observed at once
    check(cli("tag", "set", run["job_id"], "--tag", "a", "--tag", "a"))
    check(cli("notify", "set", run["job_id"]))
    job_id = run["job_id"]
    options = ("--command", "c", "--output-pattern", "x", "--output-file", "o")
    notify = check(cli("notify", "set", job_id, *options))
    assert notify["notification"]["on_output_match"]["pattern"] == "x"

    created = check(cli("create", "--", "sh", "-c", "echo out; echo err >&2; sleep 30"))
    check(cli("status", created["job_id"]))  # no started_at
    check(cli("wait", "--until", "0", created["job_id"]))
    check(cli("list"))
    started = check(cli("start", created["job_id"]))
    assert started["state"] == "running"
    check(cli("wait", "--until", "0", created["job_id"]))  # deadline return while running
    check(cli("kill", "--no-wait", "--signal", "USR2", created["job_id"]))
    poll_until(lambda: cli("status", created["job_id"]).doc["state"] == "killed")
    check(cli("kill", created["job_id"]))
    restarted = check(cli("restart", "--until", "0", created["job_id"]))
    assert restarted["state"] == "running" and restarted["joined"] is False
    check(cli("kill", "--signal", "KILL", created["job_id"]))
    check(cli("restart", run["job_id"]), code=1)  # masked env values were not persisted

    timed_out = check(cli("run", "--timeout", "1", "--forever", "--", "sleep", "30"))
    assert timed_out["state"] == "killed" and timed_out["reason"] == "timeout"
    failed = check(cli("run", "--cwd", str(tmp_path / "missing"), "--", "true"))
    assert failed["state"] == "failed" and failed["reason"].startswith("spawn_failed")
    check(cli("status", failed["job_id"]))
    check(cli("wait", failed["job_id"]))
    check(cli("run", "--no-wait", "--", *py("print(1)")))
    listed = check(cli("list", "--all"))
    assert any("reason" in job for job in listed["jobs"])
    check(cli("ps"))

    (root / "not-a-job").mkdir()  # unreadable directories count as skipped / unknown
    check(cli("list"))
    check(cli("gc", "--dry-run"))
    check(cli("delete", "--dry-run", failed["job_id"]))
    check(cli("delete", failed["job_id"]))
    check(cli("delete", "--all", "--dry-run"))
    check(cli("delete", "--all"))
    check(cli("gc", "--older-than", "0s"))
    check(cli("rm", run["job_id"]), code=1)  # already gone: an error document

    home = tmp_path / "home"
    check(cli("install-skills", cwd=home))
    check(cli("install-skills", "--global", "--claude"))

    check(cli("status", "nope"), code=1)
    check(cli("kill", "--signal", "NOPE", "nope"), code=1)
    check(cli("start", timed_out["job_id"]), code=1)
    (root / "abc1").mkdir()
    (root / "abc2").mkdir()
    ambiguous = check(cli("status", "abc"), code=1)
    assert ambiguous["error"]["details"]["candidates"] == ["abc1", "abc2"]

    expected = {
        "run",
        "start",
        "restart",
        "create",
        "status",
        "tail",
        "wait",
        "kill",
        "list",
        "gc",
        "delete",
        "tag_set",
        "notify.set",
        "install_skills",
        "error",
    }
    assert expected <= set(seen), expected - set(seen)


def test_serve_documents_validate(validator: jsonschema.Draft7Validator) -> None:
    _check(validator, {"ok": True, "schema_version": "0.1", "type": "health"})
    _check(
        validator,
        {
            "error": {"code": "unauthorized", "message": "missing or invalid token", "retryable": False},
            "ok": False,
            "schema_version": "0.1",
            "type": "error",
        },
    )


ENVELOPE = {"schema_version": "0.1", "ok": True}


@pytest.mark.parametrize(
    "doc",
    [
        {**ENVELOPE, "type": "nope"},
        {**ENVELOPE, "schema_version": "0.2", "type": "health"},
        {**ENVELOPE, "type": "health", "extra": 1},
        {**ENVELOPE, "type": "status", "job_id": "x", "state": "bogus", "created_at": "2026-01-01T00:00:00Z"},
        {**ENVELOPE, "type": "tag_set", "job_id": "x", "tags": ["bad tag"]},
        {**ENVELOPE, "ok": False, "type": "error", "error": {"code": "x", "message": "", "retryable": False}},
        {**ENVELOPE, "type": "kill", "job_id": "x", "signal": "TERM", "state": "killed"},
    ],
)
def test_schema_rejects_what_is_never_printed(
    validator: jsonschema.Draft7Validator, doc: dict[str, Any]
) -> None:
    assert not validator.is_valid(doc)


def test_schema_rejects_legacy_snapshot_fields(cli: Cli, validator: jsonschema.Draft7Validator) -> None:
    run = cli("run", "--", "true").doc
    assert validator.is_valid(run)
    for legacy in ("snapshot", "stdout_tail", "stdout_observed_bytes"):
        assert not validator.is_valid({**run, legacy: 0})
