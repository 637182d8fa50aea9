"""The 0.2.3 CLI contract, exercised as a user runs it (subprocess, one JSON document)."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

import orjson
import pytest
import yaml

from conftest import Cli, CliResult, poll_until, py


def ok(result: CliResult, kind: str) -> dict:  # type: ignore[type-arg]
    assert result.returncode == 0, (result.stdout, result.stderr)
    doc = result.doc
    assert doc["schema_version"] == "0.1" and doc["ok"] is True and doc["type"] == kind
    return doc


def error(result: CliResult, code: str) -> dict:  # type: ignore[type-arg]
    assert result.returncode == 1, (result.stdout, result.stderr)
    doc = result.doc
    assert doc["ok"] is False and doc["type"] == "error"
    assert doc["error"]["code"] == code, doc
    assert doc["error"]["retryable"] is False
    return doc


def usage_error(result: CliResult) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr


# -- run ------------------------------------------------------------------------------


def test_run_fields_and_order(cli: Cli, root: Path) -> None:
    doc = ok(cli("run", "--", "echo", "hello"), "run")
    assert list(doc)[:9] == [
        "schema_version",
        "ok",
        "type",
        "job_id",
        "state",
        "tags",
        "stdout_log_path",
        "stderr_log_path",
        "elapsed_ms",
    ]
    assert doc["stdout_log_path"] == str(root / doc["job_id"] / "stdout.log")
    assert doc["stdout_range"] == [0, 6] and doc["stdout_total_bytes"] == 6
    assert doc["stderr"] == "" and doc["stderr_range"] == [0, 0]
    assert doc["encoding"] == "utf-8-lossy"
    assert "env_vars" not in doc and "signal" not in doc
    assert isinstance(doc["duration_ms"], int) and doc["finished_at"].endswith("Z")
    for legacy in ("snapshot", "stdout_tail", "stdout_observed_bytes", "stdout_included_bytes"):
        assert legacy not in doc


def test_one_word_is_a_shell_string(cli: Cli) -> None:
    doc = ok(cli("run", "--", "echo a && echo b"), "run")
    assert doc["stdout"] == "a\nb\n"


def test_several_words_are_exec_verbatim(cli: Cli) -> None:
    doc = ok(cli("run", "--", "printf", "%s|", "a b", "$HOME", "*"), "run")
    assert doc["stdout"] == "a b|$HOME|*|"


def test_child_arguments_that_look_like_our_flags_belong_to_the_child(cli: Cli) -> None:
    doc = ok(cli("run", *py("import sys; print(sys.argv[1:])"), "--wait", "--root", "x"), "run")
    assert doc["stdout"] == "['--wait', '--root', 'x']\n"


def test_double_dash_is_optional(cli: Cli) -> None:
    doc = ok(cli("run", "echo", "hi"), "run")
    assert doc["stdout"] == "hi\n"


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["run", "--wait", "echo", "hi"], id="bare-wait-before-command"),
        pytest.param(["run", "--wait", "true", "echo", "hi"], id="wait-true"),
        pytest.param(["run", "--wait=true", "echo", "hi"], id="wait-equals"),
        pytest.param(["run", "--wait", "TRUE", "echo", "hi"], id="wait-any-case"),
        pytest.param(["run", "--timeout", "5", "--wait", "echo", "hi"], id="value-option-before-wait"),
    ],
)
def test_wait_normalisation(cli: Cli, argv: list[str]) -> None:
    doc = ok(cli(*argv), "run")
    assert doc["stdout"] == "hi\n" and doc["state"] == "exited"


def test_wait_false_does_not_wait(cli: Cli) -> None:
    doc = ok(cli("run", "--wait", "false", "--", "sleep", "5"), "run")
    assert doc["state"] == "running" and doc["waited_ms"] == 0
    ok(cli("kill", doc["job_id"]), "kill")


def test_no_wait_returns_running_at_once(cli: Cli) -> None:
    doc = ok(cli("run", "--no-wait", "--", "sleep", "5"), "run")
    assert doc["state"] == "running" and doc["waited_ms"] == 0
    assert "exit_code" not in doc and "finished_at" not in doc
    ok(cli("kill", doc["job_id"]), "kill")


def test_until_zero_checks_once(cli: Cli) -> None:
    doc = ok(cli("run", "--until", "0", "--", "sleep", "5"), "run")
    assert doc["state"] == "running" and doc["waited_ms"] < 2000
    ok(cli("kill", doc["job_id"]), "kill")


def test_early_output_returns_while_running(cli: Cli) -> None:
    doc = ok(cli("run", "--", "echo started; sleep 5"), "run")
    assert doc["state"] == "running" and doc["stdout"] == "started\n"
    ok(cli("kill", doc["job_id"]), "kill")


def test_silent_job_returns_at_the_deadline(cli: Cli) -> None:
    doc = ok(cli("run", "--until", "1", "--", "sleep", "5"), "run")
    assert doc["state"] == "running" and 900 <= doc["waited_ms"] < 4000
    ok(cli("kill", doc["job_id"]), "kill")


def test_forever_waits_for_late_output(cli: Cli) -> None:
    doc = ok(cli("run", "--forever", "--", "sleep 1; echo late"), "run")
    assert doc["stdout"] == "late\n"


def test_nonzero_exit_code(cli: Cli) -> None:
    doc = ok(cli("run", "--", "exit 3"), "run")
    assert doc["state"] == "exited" and doc["exit_code"] == 3


def test_death_by_signal(cli: Cli) -> None:
    doc = ok(cli("run", "--", "kill -9 $$"), "run")
    assert doc["state"] == "killed" and doc["signal"] == "9" and "exit_code" not in doc


def test_max_bytes_cuts_raw_bytes_and_decodes_lossily(cli: Cli) -> None:
    doc = ok(cli("run", "--max-bytes", "4", "--", "printf", "ab\u00e9\u00e9"), "run")
    assert doc["stdout_range"] == [0, 4] and doc["stdout_total_bytes"] == 6
    assert doc["stdout"] == "ab\u00e9"
    doc = ok(cli("run", "--max-bytes", "3", "--", "printf", "ab\u00e9"), "run")
    assert doc["stdout"] == "ab\ufffd" and doc["stdout_range"] == [0, 3]


def test_yaml_output_is_the_same_data(cli: Cli) -> None:
    result = cli("--yaml", "run", "--", "echo", "hi")
    assert result.returncode == 0
    data = yaml.safe_load(result.stdout)
    assert data["schema_version"] == "0.1" and data["type"] == "run" and data["stdout"] == "hi\n"
    err = cli("status", "nope", "--yaml")
    assert err.returncode == 1 and yaml.safe_load(err.stdout)["error"]["code"] == "job_not_found"


def test_global_options_after_the_subcommand(cli: Cli, tmp_path: Path) -> None:
    other = tmp_path / "other-root"
    doc = ok(cli("run", "-v", "--root", str(other), "--", "true", use_root=False), "run")
    assert doc["stdout_log_path"].startswith(str(other))


def test_root_from_environment(cli: Cli, cli_env: dict[str, str], tmp_path: Path) -> None:
    env = dict(cli_env, AGENT_EXEC_ROOT=str(tmp_path / "env-root"))
    doc = ok(cli("run", "--", "true", use_root=False, env=env), "run")
    assert doc["stdout_log_path"].startswith(str(tmp_path / "env-root"))
    env = dict(cli_env)
    doc = ok(cli("run", "--", "true", use_root=False, env=env), "run")
    assert doc["stdout_log_path"].startswith(os.path.join(env["XDG_DATA_HOME"], "agent-exec", "jobs"))


@pytest.mark.parametrize("flag", ["--snapshot-after", "--tail-lines"])
def test_removed_run_flags_are_usage_errors(cli: Cli, flag: str) -> None:
    usage_error(cli("run", flag, "1", "--", "true"))


# -- status / tail / wait -------------------------------------------------------------


def test_status_by_prefix(cli: Cli) -> None:
    run = ok(cli("run", "--", "exit 4"), "run")
    doc = ok(cli("status", run["job_id"][:6]), "status")
    assert doc["job_id"] == run["job_id"] and doc["state"] == "exited" and doc["exit_code"] == 4
    assert list(doc)[3:] == ["job_id", "state", "exit_code", "created_at", "started_at", "finished_at"]


def test_ambiguous_prefix(cli: Cli, root: Path) -> None:
    for name in ("abc1", "abc2"):
        (root / name).mkdir(parents=True)
    doc = error(cli("status", "abc"), "ambiguous_job_id")
    assert doc["error"]["details"] == {"candidates": ["abc1", "abc2"], "truncated": False}
    assert doc["error"]["message"] == "ambiguous job ID prefix 'abc': matches abc1, abc2"


@pytest.mark.parametrize("job_id", ["../x", "/etc", ".", "..", "x" * 4000, "*", "a/b"])
def test_hostile_ids_are_not_found(cli: Cli, root: Path, job_id: str) -> None:
    root.mkdir(parents=True)
    error(cli("status", job_id), "job_not_found")


def test_tail_lines_and_bytes(cli: Cli) -> None:
    run = ok(cli("run", "--", "printf 'a\\nb\\nc\\n'; printf 'x\\ny' >&2"), "run")
    doc = ok(cli("tail", "--tail-lines", "2", run["job_id"]), "tail")
    assert doc["stdout"] == "b\nc\n" and doc["stdout_range"] == [2, 6] and doc["stdout_total_bytes"] == 6
    assert doc["stderr"] == "x\ny"
    doc = ok(cli("tail", "--max-bytes", "3", "--tail-lines", "0", run["job_id"]), "tail")
    assert doc["stdout"] == "\nc\n" and doc["stdout_range"] == [3, 6]
    doc = ok(cli("tail", "--max-bytes", "0", run["job_id"]), "tail")
    assert doc["stdout"] == "" and doc["stdout_range"] == [6, 6]


def test_wait_returns_completion_and_output(cli: Cli) -> None:
    run = ok(cli("run", "--no-wait", "--", "sleep 1; echo done; exit 2"), "run")
    doc = ok(cli("wait", run["job_id"]), "wait")
    assert doc["state"] == "exited" and doc["exit_code"] == 2
    assert doc["stdout"] == "done\n" and doc["stdout_total_bytes"] == 5 and doc["encoding"] == "utf-8-lossy"


def test_wait_deadline_returns_running_without_exit_code(cli: Cli) -> None:
    run = ok(cli("run", "--no-wait", "--", "sleep", "10"), "run")
    doc = ok(cli("wait", "--until", "1", run["job_id"]), "wait")
    assert doc["state"] == "running" and "exit_code" not in doc and "updated_at" in doc
    ok(cli("kill", run["job_id"]), "kill")


def test_wait_until_and_forever_conflict(cli: Cli) -> None:
    usage_error(cli("wait", "--until", "1", "--forever", "abc"))


# -- kill -----------------------------------------------------------------------------


def test_kill_reports_the_real_outcome(cli: Cli) -> None:
    run = ok(cli("run", "--no-wait", "--", "sleep", "30"), "run")
    doc = ok(cli("kill", run["job_id"]), "kill")
    assert doc["signal"] == "TERM" and doc["state"] == "killed" and doc["terminated_signal"] == "15"
    assert doc["observed_within_ms"] >= 0


@pytest.mark.parametrize(("name", "number"), [("HUP", 1), ("usr1", 10), ("SIGINT", 2), ("9", 9)])
def test_kill_sends_the_signal_asked_for(cli: Cli, name: str, number: int) -> None:
    run = ok(cli("run", "--no-wait", "--", "sleep", "30"), "run")
    doc = ok(cli("kill", "--signal", name, run["job_id"]), "kill")
    assert doc["signal"] == name.upper() and doc["terminated_signal"] == str(number)


def test_kill_with_a_trapped_signal_is_truthful(cli: Cli) -> None:
    run = ok(cli("run", "--", "trap 'echo got; exit 3' TERM; echo ready; while :; do sleep 0.1; done"), "run")
    assert run["stdout"] == "ready\n"
    doc = ok(cli("kill", run["job_id"]), "kill")
    assert doc["state"] == "exited" and doc["exit_code"] == 3


def test_kill_unknown_signal_is_a_json_error(cli: Cli) -> None:
    run = ok(cli("run", "--no-wait", "--", "sleep", "30"), "run")
    error(cli("kill", "--signal", "NOPE", run["job_id"]), "invalid_signal")
    ok(cli("kill", run["job_id"]), "kill")


def test_kill_finished_and_created_jobs(cli: Cli) -> None:
    run = ok(cli("run", "--", "true"), "run")
    doc = ok(cli("kill", run["job_id"]), "kill")
    assert doc["state"] == "exited" and doc["observed_within_ms"] == 0
    assert ok(cli("kill", "--no-wait", run["job_id"]), "kill").keys() >= {"job_id", "signal"}
    created = ok(cli("create", "--", "true"), "create")
    error(cli("kill", created["job_id"]), "invalid_state")


# -- list / ps ------------------------------------------------------------------------


def test_list_sorting_limit_and_skipped(cli: Cli, root: Path) -> None:
    ids = [ok(cli("run", "--", "true"), "run")["job_id"] for _ in range(3)]
    (root / "garbage").mkdir()
    (root / "garbage" / "meta.json").write_text("{")
    doc = ok(cli("list", "--limit", "2"), "list")
    assert doc["root"] == str(root) and doc["truncated"] is True and doc["skipped"] == 1
    assert len(doc["jobs"]) == 2 and {job["job_id"] for job in doc["jobs"]} <= set(ids)
    job = doc["jobs"][0]
    assert job["short_job_id"] == job["job_id"][:7] and job["tags"] == []
    assert ok(cli("list", "--limit", "0"), "list")["truncated"] is False


def test_list_cwd_filter(cli: Cli, tmp_path: Path) -> None:
    here = tmp_path / "here"
    here.mkdir()
    ok(cli("run", "--", "true", cwd=here), "run")
    ok(cli("run", "--", "true"), "run")
    assert len(ok(cli("list", cwd=here), "list")["jobs"]) == 1
    assert len(ok(cli("list", "--cwd", str(here)), "list")["jobs"]) == 1
    assert len(ok(cli("list", "--all"), "list")["jobs"]) == 2
    usage_error(cli("list", "--all", "--cwd", str(here)))


def test_list_state_and_tag_filters_and_ps(cli: Cli) -> None:
    ok(cli("run", "--tag", "ci.build", "--tag", "ci.build", "--tag", "team-a", "--", "true"), "run")
    running = ok(cli("run", "--no-wait", "--tag", "ci", "--", "sleep", "30"), "run")
    assert len(ok(cli("list", "--tag", "ci.*"), "list")["jobs"]) == 2
    tagged = ok(cli("list", "--tag", "ci.*", "--tag", "team-a"), "list")["jobs"]
    assert len(tagged) == 1 and tagged[0]["tags"] == ["ci.build", "team-a"]
    assert [job["job_id"] for job in ok(cli("ps"), "list")["jobs"]] == [running["job_id"]]
    assert len(ok(cli("list", "--state", "exited"), "list")["jobs"]) == 1
    usage_error(cli("list", "--state", "bogus"))
    usage_error(cli("ps", "--state", "running"))
    usage_error(cli("list", "--tag", "bad..tag"))
    ok(cli("kill", running["job_id"]), "kill")


# -- create / start / definition ---------------------------------------------------


def test_create_then_start(cli: Cli, root: Path) -> None:
    created = ok(cli("create", "--tag", "later", "--env", "A=1", "--", "echo $A"), "create")
    assert created["state"] == "created"
    assert list(created) == [
        "schema_version",
        "ok",
        "type",
        "job_id",
        "state",
        "stdout_log_path",
        "stderr_log_path",
    ]
    meta = orjson.loads((root / created["job_id"] / "meta.json").read_bytes())
    assert meta["env_vars_runtime"] == ["A=1"]
    listed = ok(cli("list", "--state", "created"), "list")["jobs"]
    assert [job["job_id"] for job in listed] == [created["job_id"]]
    started = ok(cli("start", created["job_id"]), "start")
    assert started["stdout"] == "1\n" and started["tags"] == ["later"] and started["env_vars"] == ["A=1"]
    doc = error(cli("start", created["job_id"]), "invalid_state")
    assert "only 'created' jobs can be started" in doc["error"]["message"]


def test_concurrent_starts_launch_once(cli: Cli) -> None:
    created = ok(cli("create", "--", "echo once"), "create")
    results: list[CliResult] = []
    threads = [
        threading.Thread(target=lambda: results.append(cli("start", created["job_id"]))) for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    codes = sorted(result.returncode for result in results)
    assert codes == [0, 1]
    assert ok(cli("wait", created["job_id"]), "wait")["stdout"] == "once\n"


def test_env_file_is_read_at_start_time(cli: Cli, tmp_path: Path) -> None:
    env_file = tmp_path / "vars.env"
    env_file.write_text("GREETING=old\n")
    created = ok(cli("create", "--env-file", str(env_file), "--", "echo $GREETING"), "create")
    env_file.write_text("# changed\nGREETING=new\n")
    assert ok(cli("start", created["job_id"]), "start")["stdout"] == "new\n"


def test_env_precedence_and_no_inherit(cli: Cli, tmp_path: Path, cli_env: dict[str, str]) -> None:
    env_file = tmp_path / "vars.env"
    env_file.write_text("A=file\nB=file\n")
    doc = ok(cli("run", "--env-file", str(env_file), "--env", "B=flag", "--", "echo $A $B"), "run")
    assert doc["stdout"] == "file flag\n"
    env = dict(cli_env, LEAK="yes")
    doc = ok(cli("run", "--no-inherit-env", "--", "echo [$LEAK]", env=env), "run")
    assert doc["stdout"] == "[]\n"
    usage_error(cli("run", "--no-inherit-env", "--inherit-env", "--", "true"))


def test_masked_values_never_appear_in_output(cli: Cli) -> None:
    secret = "s3cr3t-value"
    run = cli("run", "--env", f"TOKEN={secret}", "--mask", "TOKEN", "--env", "A=1", "--", "echo $A")
    doc = ok(run, "run")
    assert doc["env_vars"] == ["TOKEN=***", "A=1"]
    outputs = [run.stdout]
    outputs += [cli(*args, doc["job_id"]).stdout for args in (("status",), ("wait",), ("tail",), ("kill",))]
    outputs.append(cli("list").stdout)
    assert all(secret not in text for text in outputs)


def test_stdin_sources(cli: Cli, tmp_path: Path, root: Path) -> None:
    assert ok(cli("run", "--stdin", "abc", "--", "cat"), "run")["stdout"] == "abc"
    assert ok(cli("run", "--stdin", "-", "--", "cat", input=b"piped"), "run")["stdout"] == "piped"
    source = tmp_path / "in.txt"
    source.write_bytes(b"from file")
    assert ok(cli("run", "--stdin-file", str(source), "--", "cat"), "run")["stdout"] == "from file"
    assert ok(cli("run", "--", "cat", input=b"not for the job"), "run")["stdout"] == ""
    usage_error(cli("run", "--stdin", "x", "--stdin-file", str(source), "--", "cat"))


def test_stdin_limit(cli: Cli, root: Path) -> None:
    assert ok(cli("run", "--stdin", "1234", "--stdin-max-bytes", "4", "--", "cat"), "run")["stdout"] == "1234"

    def job_dirs() -> set[str]:
        return {name for name in os.listdir(root) if (root / name).is_dir()}

    before = job_dirs()
    error(cli("run", "--stdin", "12345", "--stdin-max-bytes", "4", "--", "cat"), "stdin_too_large")
    assert job_dirs() == before


def test_shell_wrapper_and_config(cli: Cli, tmp_path: Path, cli_env: dict[str, str]) -> None:
    doc = ok(cli("run", "--shell-wrapper", "bash -c", "--", "echo $0"), "run")
    assert doc["stdout"] == "bash\n"
    config = tmp_path / "config.toml"
    config.write_text('[shell]\nunix = ["bash", "-c"]\n')
    assert ok(cli("run", "--config", str(config), "--", "echo $0"), "run")["stdout"] == "bash\n"
    config.write_text('[shell]\nunix = "bash -c"\n')
    doc = error(cli("run", "--config", str(config), "--", "true"), "internal_error")
    assert str(config) in doc["error"]["message"]
    error(cli("run", "--shell-wrapper", "  ", "--", "true"), "internal_error")


def test_timeout_escalates_to_kill(cli: Cli) -> None:
    doc = ok(
        cli("run", "--timeout", "1", "--kill-after", "1", "--forever", "--", "trap '' TERM; sleep 30"), "run"
    )
    assert doc["state"] == "killed" and doc["signal"] == "9"


def test_progress_every_refreshes_updated_at(cli: Cli, root: Path) -> None:
    run = ok(cli("run", "--no-wait", "--progress-every", "1", "--", "sleep", "3"), "run")
    state_path = root / run["job_id"] / "state.json"
    first = orjson.loads(state_path.read_bytes())["updated_at"]
    poll_until(lambda: orjson.loads(state_path.read_bytes())["updated_at"] != first, timeout=5)
    assert ok(cli("wait", run["job_id"]), "wait")["state"] == "exited"


def test_tag_set_replaces_and_clears(cli: Cli) -> None:
    run = ok(cli("run", "--tag", "a", "--", "true"), "run")
    assert ok(cli("tag", "set", run["job_id"], "--tag", "b", "--tag", "b", "--tag", "c"), "tag_set")[
        "tags"
    ] == [
        "b",
        "c",
    ]
    assert ok(cli("tag", "set", run["job_id"]), "tag_set")["tags"] == []
    usage_error(cli("tag", "set", run["job_id"], "--tag", "x.*"))
    usage_error(cli("tag"))


# -- dead supervisors and spawn failures ----------------------------------------------


def _supervisor_pid(job_id: str) -> int | None:
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if f"_supervise --job-id {job_id}".encode() in cmdline:
            return int(entry)
    return None


def test_a_dead_supervisor_is_reported_failed(cli: Cli) -> None:
    run = ok(cli("run", "--", "echo up; sleep 30"), "run")
    pid = poll_until(lambda: _supervisor_pid(run["job_id"]))
    os.kill(pid, signal.SIGKILL)
    doc = poll_until(lambda: (d := cli("status", run["job_id"]).doc)["state"] == "failed" and d)
    assert doc["reason"] == "supervisor_lost"
    assert ok(cli("wait", run["job_id"]), "wait")["state"] == "failed"
    assert ok(cli("tail", run["job_id"]), "tail")["stdout"] == "up\n"


def test_spawn_failures_finish_the_job(cli: Cli, tmp_path: Path) -> None:
    doc = ok(cli("run", "--cwd", str(tmp_path / "missing"), "--", "true"), "run")
    assert doc["state"] == "failed" and doc["reason"].startswith("spawn_failed")
    doc = ok(cli("run", "--shell-wrapper", "no-such-shell -c", "--", "true"), "run")
    assert doc["state"] == "failed" and doc["reason"].startswith("spawn_failed")
    doc = ok(cli("run", "--", "no-such-command-xyz", "arg"), "run")
    assert doc["state"] == "exited" and doc["exit_code"] == 127


# -- usage errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param([], id="no-subcommand"),
        pytest.param(["bogus"], id="unknown-subcommand"),
        pytest.param(["run"], id="run-without-command"),
        pytest.param(["run", "--timeout", "-1", "--", "true"], id="negative"),
        pytest.param(["run", "--timeout", "1.5", "--", "true"], id="fractional"),
        pytest.param(["run", "--until", "1", "--forever", "--", "true"], id="conflict"),
        pytest.param(["status"], id="missing-id"),
        pytest.param(["wait", "--timeout-ms", "1", "x"], id="wait-timeout-ms"),
        pytest.param(["create", "--wait", "--", "true"], id="create-wait"),
        pytest.param(["completions", "tcsh"], id="bad-shell"),
        pytest.param(["delete"], id="delete-without-id"),
    ],
)
def test_usage_errors(cli: Cli, argv: list[str]) -> None:
    usage_error(cli(*argv))


def test_help_and_version(cli: Cli) -> None:
    result = cli("--version", use_root=False)
    assert result.returncode == 0 and result.stdout == "agent-exec 0.2.3\n"
    for argv in (["--help"], ["run", "--help"], ["help", "run"]):
        result = cli(*argv, use_root=False)
        assert result.returncode == 0 and "Usage" in result.stdout


def test_python_dash_m_entry_point(cli: Cli) -> None:
    assert sys.executable  # the fixture already runs `python -m agent_exec`
    ok(cli("run", "--", "true"), "run")
