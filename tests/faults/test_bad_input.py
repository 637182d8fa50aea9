"""Item 3: hostile job ids, corrupt job files and malformed arguments get a clear answer
(a JSON error naming the problem, or a usage error) — never a traceback, never a path
outside the jobs root."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .conftest import Cli, assert_no_traceback

pytestmark = pytest.mark.faults

HOSTILE_IDS = [
    "../x",
    "/etc",
    ".",
    "..",
    "",
    "a" * 5000,
    "*",
    "?",
    "[a-f]*",
    "x\ny",
    "./x",
]


def _plant_decoys(root: Path, template: Path) -> list[Path]:
    """Copy a real, finished job's files to every place a hostile id could resolve to if it
    escaped the root: the parent of the root, the root itself and a sibling named ``x``."""
    decoys = [root.parent / "x", root.parent, root]
    for target in decoys:
        target.mkdir(exist_ok=True)
        for name in ("meta.json", "state.json", "stdout.log", "stderr.log"):
            shutil.copyfile(template / name, target / name)
    return decoys


@pytest.fixture
def finished_job(cli: Cli, root: Path) -> str:
    doc = cli("run", "--", "echo", "decoy").doc
    assert doc["state"] == "exited"
    return str(doc["job_id"])


@pytest.mark.parametrize("given", HOSTILE_IDS, ids=repr)
def test_hostile_job_ids_never_resolve_outside_the_root(
    cli: Cli, root: Path, finished_job: str, given: str
) -> None:
    decoys = _plant_decoys(root, root / finished_job)
    absolute = str(root.parent / "x")
    for job_id in (given, absolute) if given == "../x" else (given,):
        for argv in (
            ("status", job_id),
            ("wait", "--until", "0", job_id),
            ("kill", job_id),
            ("start", job_id),
            ("tail", job_id),
            ("tag", "set", job_id, "--tag", "t"),
            ("notify", "set", job_id, "--command", "true"),
            ("delete", job_id),
        ):
            result = cli(*argv)
            assert_no_traceback(result)
            if result.returncode == 2:  # a usage error (e.g. the empty id)
                assert result.stdout == ""
                continue
            assert result.returncode == 1, (argv, result)
            assert result.doc["error"]["code"] == "job_not_found", (argv, result.doc)
    for decoy in decoys:
        assert (decoy / "meta.json").exists() and (decoy / "state.json").exists()
    assert (root / finished_job / "meta.json").exists()


def test_glob_characters_are_literal_prefixes(cli: Cli, root: Path, finished_job: str) -> None:
    # A real job exists whose id matches every one of these patterns as a glob.
    for pattern in ("*", "?" * 32, f"[{finished_job[0]}]*", finished_job[:3] + "*"):
        result = cli("status", pattern)
        assert result.returncode == 1 and result.doc["error"]["code"] == "job_not_found", result.stdout
    assert cli("status", finished_job[:6]).doc["job_id"] == finished_job


CORRUPT = {
    "truncated": None,  # the first half of the real file
    "garbage": b"\x00\xff\xfe garbage \x80",
    "empty": b"",
    "null": b"null",
    "array": b"[1, 2]",
    "string": b'"state"',
    "wrong-types": b'{"job": {"id": 5, "status": []}, "result": 7}',
}


def _corrupt(path: Path, kind: str) -> None:
    data = CORRUPT[kind]
    if data is None:
        raw = path.read_bytes()
        data = raw[: len(raw) // 2]
    path.write_bytes(data)


@pytest.mark.parametrize("kind", list(CORRUPT))
def test_a_corrupt_state_file_is_a_clear_error_and_listed_as_unknown(
    cli: Cli, root: Path, finished_job: str, kind: str
) -> None:
    state_path = root / finished_job / "state.json"
    _corrupt(state_path, kind)
    for argv in (
        ("status", finished_job),
        ("wait", "--until", "0", finished_job),
        ("kill", finished_job),
        ("start", finished_job),
    ):
        result = cli(*argv)
        assert_no_traceback(result)
        assert result.returncode == 1, (argv, result)
        error = result.doc["error"]
        assert error["code"] == "internal_error", (argv, error)
        assert str(state_path) in error["message"], (argv, error)
    # tail needs no state.json (cli.md §5.5): it still serves the logs.
    tail = cli("tail", finished_job)
    assert_no_traceback(tail)
    assert tail.doc["stdout"] == "decoy\n"
    listed = cli("list", "--all")
    assert_no_traceback(listed)
    (row,) = listed.doc["jobs"]
    assert row["job_id"] == finished_job and row["state"] == "unknown"
    gc = cli("gc", "--older-than", "0s")
    assert_no_traceback(gc)
    (entry,) = gc.doc["jobs"]
    assert entry["action"] == "skipped" and entry["reason"] == "state_unreadable", gc.doc
    assert state_path.exists()


@pytest.mark.parametrize("kind", list(CORRUPT))
def test_a_corrupt_meta_file_is_a_clear_error_and_skipped_by_list(
    cli: Cli, root: Path, finished_job: str, kind: str
) -> None:
    meta_path = root / finished_job / "meta.json"
    _corrupt(meta_path, kind)
    for argv in (
        ("status", finished_job),
        ("start", finished_job),
        ("tag", "set", finished_job, "--tag", "t"),
        ("notify", "set", finished_job, "--command", "true"),
    ):
        result = cli(*argv)
        assert_no_traceback(result)
        assert result.returncode == 1, (argv, result)
        error = result.doc["error"]
        assert error["code"] == "internal_error", (argv, error)
        assert str(meta_path) in error["message"], (argv, error)
    # wait, kill and tail read only state.json / the logs (supervisor.md §8): still served.
    for reader in (("wait", "--until", "0", finished_job), ("kill", finished_job), ("tail", finished_job)):
        result = cli(*reader)
        assert_no_traceback(result)
        assert result.returncode == 0 and result.doc["ok"] is True, (reader, result)
    listed = cli("list", "--all")
    assert_no_traceback(listed)
    assert listed.doc["jobs"] == [] and listed.doc["skipped"] == 1
    gc = cli("gc", "--older-than", "0s", "--dry-run")
    assert_no_traceback(gc)
    assert gc.doc["ok"] is True
    assert meta_path.exists()


@pytest.mark.parametrize(
    "argv",
    [
        ("run", "--bogus", "--", "true"),
        ("status", "--bogus", "abc"),
        ("bogus-command",),
        ("status",),
        ("run",),
        ("run", "--timeout", "-1", "--", "true"),
        ("run", "--timeout", "1.5", "--", "true"),
        ("run", "--timeout", "", "--", "true"),
        ("run", "--kill-after", "x", "--", "true"),
        ("run", "--max-bytes", "abc", "--", "true"),
        ("run", "--until", "-5", "--", "true"),
        ("run", "--wait=maybe", "--", "true"),
        ("run", "--tag", "bad..tag", "--", "true"),
        ("run", "--until", "1", "--forever", "--", "true"),
        ("tail", "--tail-lines", "-3", "abc"),
        ("tail", "--max-bytes", "1e3", "abc"),
        ("wait", "--until", "", "abc"),
        ("wait", "--poll", "0.5", "abc"),
        ("list", "--limit", "-1"),
        ("list", "--state", "bogus"),
        ("gc", "--max-jobs", "-2"),
        ("gc", "--max-bytes", "1.5"),
        ("serve", "--port", "70000"),
    ],
    ids=lambda argv: " ".join(argv),
)
def test_malformed_arguments_are_usage_errors(cli: Cli, root: Path, argv: tuple[str, ...]) -> None:
    result = cli(*argv)
    assert_no_traceback(result)
    assert result.returncode == 2, result
    assert result.stdout == ""
    assert result.stderr.strip()
    assert not root.exists() or not any(root.iterdir()), "a usage error must not create a job"


def test_bad_duration_is_a_json_error_naming_the_formats(cli: Cli, finished_job: str) -> None:
    result = cli("gc", "--older-than", "5x")
    assert_no_traceback(result)
    assert result.returncode == 1
    error = result.doc["error"]
    assert error["code"] == "internal_error"
    assert "invalid duration: 5x" in error["message"]


@pytest.mark.parametrize("name", ["NOPE", "999", "-9", "SIG", ""])
def test_bad_signal_is_invalid_signal(cli: Cli, finished_job: str, name: str) -> None:
    result = cli("kill", "--signal", name, finished_job)
    assert_no_traceback(result)
    assert result.returncode == 1, result
    assert result.doc["error"]["code"] == "invalid_signal"


@pytest.mark.parametrize("pair", ["=x", "="])
def test_env_without_a_key_is_invalid_argument(cli: Cli, root: Path, pair: str) -> None:
    result = cli("run", "--env", pair, "--", "true")
    assert_no_traceback(result)
    assert result.returncode == 1
    assert result.doc["error"]["code"] == "invalid_argument"
    assert not root.exists() or not any(root.iterdir())


def test_env_without_equals_sets_an_empty_value(cli: Cli) -> None:
    doc = cli("run", "--env", "FOO", "--", "sh", "-c", 'echo "[${FOO-unset}]"').doc
    assert doc["state"] == "exited", doc
    assert doc["stdout"] == "[]\n"


def test_missing_cwd_is_a_failed_job_with_a_spawn_reason(cli: Cli, tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir"
    doc = cli("run", "--cwd", str(missing), "--", "true").doc
    assert doc["state"] == "failed", doc
    assert doc["reason"].startswith("spawn_failed: ")
    assert str(missing) in doc["reason"]
    assert cli("status", doc["job_id"]).doc["state"] == "failed"


def test_missing_wrapper_is_a_failed_job_with_a_spawn_reason(cli: Cli, tmp_path: Path) -> None:
    wrapper = tmp_path / "no-such-shell"
    doc = cli("run", "--shell-wrapper", f"{wrapper} -c", "--", "true").doc
    assert doc["state"] == "failed", doc
    assert doc["reason"].startswith("spawn_failed: ")
    assert str(wrapper) in doc["reason"]


@pytest.mark.parametrize("command", ["/nonexistent/cmd", "agent-exec-no-such-command"])
def test_missing_command_in_argv_mode_exits_127(cli: Cli, command: str) -> None:
    doc = cli("run", "--", command, "arg").doc
    waited = cli("wait", "--until", "10", doc["job_id"]).doc
    assert waited["state"] == "exited", waited
    assert waited["exit_code"] == 127
    assert waited["stderr"]


def test_symlinked_job_directories_are_never_followed(cli: Cli, root: Path, finished_job: str) -> None:
    outside = root.parent / "outside-job"
    shutil.copytree(root / finished_job, outside)
    fake_id = "f" * 32
    (root / fake_id).symlink_to(outside, target_is_directory=True)
    for argv in (("status", fake_id), ("tail", fake_id), ("delete", fake_id), ("kill", fake_id)):
        result = cli(*argv)
        assert_no_traceback(result)
        assert result.doc["error"]["code"] == "job_not_found", (argv, result.doc)
    assert [job["job_id"] for job in cli("list", "--all").doc["jobs"]] == [finished_job]
    assert cli("gc", "--older-than", "0s").doc["ok"] is True
    assert cli("delete", "--all").doc["ok"] is True
    assert (outside / "meta.json").exists() and (outside / "stdout.log").read_bytes() == b"decoy\n"


def test_a_fifo_in_place_of_state_json_is_an_error_not_a_hang(
    cli: Cli, root: Path, finished_job: str
) -> None:
    import os
    import subprocess

    state_path = root / finished_job / "state.json"
    state_path.unlink()
    os.mkfifo(state_path)
    try:
        result = cli("status", finished_job, timeout=3)
    except subprocess.TimeoutExpired:
        pytest.fail("status blocked on a FIFO state.json")
    assert result.doc["error"]["code"] == "internal_error"
    assert str(state_path) in result.doc["error"]["message"]
    listed = cli("list", "--all", timeout=3).doc
    assert listed["jobs"][0]["state"] == "unknown"
