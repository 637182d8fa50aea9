"""Notifications as a user configures them: ``job.finished`` completion sinks,
``job.output.matched`` events, ``notify set`` on live and finished jobs, and the bounds
that keep a failing, hanging or flooding sink from hurting the job."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from agent_exec._logs import LogWriter
from agent_exec._notify import Notifier
from agent_exec._spec import LaunchSpec
from agent_exec._store import atomic_write_json
from conftest import Cli, poll_until, py

CLI = [sys.executable, "-m", "agent_exec"]
FINISHED_KEYS = [
    "schema_version",
    "event_type",
    "job_id",
    "state",
    "command",
    "cwd",
    "started_at",
    "finished_at",
    "duration_ms",
    "exit_code",
    "stdout_log_path",
    "stderr_log_path",
]
MATCHED_KEYS = [
    "schema_version",
    "event_type",
    "job_id",
    "pattern",
    "match_type",
    "stream",
    "line",
    "stdout_log_path",
    "stderr_log_path",
]


# -- helpers ----------------------------------------------------------------------------


def launch(cli: Cli, *args: str, env: dict[str, str] | None = None) -> str:
    """``run --no-wait ARGS``; the job id."""
    result = cli("run", "--no-wait", *args, env=env)
    assert result.returncode == 0, result.stderr
    return str(result.doc["job_id"])


def terminal_state(root: Path, job_id: str, timeout: float = 15.0) -> dict[str, Any]:
    """``state.json`` once it records a terminal state (the match records are complete then)."""

    def read() -> dict[str, Any] | None:
        try:
            state = orjson.loads((root / job_id / "state.json").read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return None
        return state if state["job"]["status"] in ("exited", "killed", "failed") else None

    return poll_until(read, timeout)  # type: ignore[no-any-return]


def completion_event(root: Path, job_id: str, sinks: int, timeout: float = 15.0) -> dict[str, Any]:
    """``completion_event.json`` once ``sinks`` delivery results are in it."""
    path = root / job_id / "completion_event.json"

    def read() -> dict[str, Any] | None:
        try:
            event = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return None
        return event if len(event["delivery_results"]) == sinks else None

    return poll_until(read, timeout)  # type: ignore[no-any-return]


def ndjson(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def supervisors(root: Path) -> list[int]:
    """Live processes that belong to this test's jobs root (CLI or detached supervisor)."""
    needle = str(root).encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            status = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if needle in cmdline and ") Z " not in status:
            pids.append(int(entry))
    return pids


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return ") Z " in Path(f"/proc/{pid}/stat").read_text()


# -- completion (job.finished) ----------------------------------------------------------


def test_completion_command_and_file_sinks(cli: Cli, root: Path, tmp_path: Path) -> None:
    sink = (
        "cat > cmd.json; "
        'printf \'%s\\n\' "$AGENT_EXEC_EVENT_TYPE" "$AGENT_EXEC_JOB_ID" "$AGENT_EXEC_EVENT_PATH" > env.txt'
    )
    job_id = launch(
        cli,
        "--notify-command",
        sink,
        "--notify-file",
        "deep/er/events.ndjson",  # relative to the launcher's cwd; parents created
        "--",
        *py("import sys; print('hi'); sys.exit(3)"),
    )
    event = completion_event(root, job_id, sinks=2)
    assert list(event) == [*FINISHED_KEYS, "delivery_results"]
    assert event["schema_version"] == "0.1"
    assert event["event_type"] == "job.finished"
    assert event["job_id"] == job_id
    assert event["state"] == "exited"
    assert event["exit_code"] == 3
    assert event["command"] == py("import sys; print('hi'); sys.exit(3)")
    assert event["cwd"] == str(tmp_path.resolve())
    assert event["stdout_log_path"] == str(root / job_id / "stdout.log")
    assert event["stderr_log_path"] == str(root / job_id / "stderr.log")
    command_result, file_result = event["delivery_results"]
    assert list(command_result) == ["sink_type", "target", "success", "attempted_at"]
    assert command_result["sink_type"] == "command"
    assert command_result["target"] == sink
    assert command_result["success"] is True
    assert file_result == {
        "sink_type": "file",
        "target": "deep/er/events.ndjson",
        "success": True,
        "attempted_at": file_result["attempted_at"],
    }
    bare = {key: value for key, value in event.items() if key != "delivery_results"}
    # stdin of the command: the compact event, no trailing newline
    assert (tmp_path / "cmd.json").read_bytes() == orjson.dumps(bare)
    assert (tmp_path / "env.txt").read_text().splitlines() == [
        "job.finished",
        job_id,
        str(root / job_id / "completion_event.json"),
    ]
    assert (tmp_path / "deep/er/events.ndjson").read_bytes() == orjson.dumps(bare) + b"\n"


def test_completion_of_a_killed_job_has_signal_and_no_exit_code(cli: Cli, root: Path, tmp_path: Path) -> None:
    job_id = launch(
        cli,
        "--notify-file",
        "events.ndjson",
        "--",
        *py("import os, signal; os.kill(os.getpid(), signal.SIGKILL)"),
    )
    event = completion_event(root, job_id, sinks=1)
    assert event["state"] == "killed"
    assert event["signal"] == "9"
    assert "exit_code" not in event
    assert ndjson(tmp_path / "events.ndjson")[0]["signal"] == "9"


def test_completion_of_a_spawn_failure_says_failed_with_reason(cli: Cli, root: Path, tmp_path: Path) -> None:
    job_id = launch(
        cli, "--shell-wrapper", "/nonexistent/sh -c", "--notify-file", "events.ndjson", "--", "true"
    )
    event = completion_event(root, job_id, sinks=1)
    assert event["state"] == "failed"
    assert event["duration_ms"] == 0
    assert list(event)[-2] == "reason"  # extension key, after the spec's keys
    assert event["reason"].startswith("spawn_failed")


@pytest.mark.parametrize(
    ("command", "error"),
    [
        ("exit 4", "exited with status exit status: 4"),
        ("kill -9 $$", "exited with status signal: 9 (SIGKILL)"),
        ("   ", "empty shell command"),
    ],
)
def test_failing_command_sink_is_recorded_and_the_job_is_unaffected(
    cli: Cli, root: Path, tmp_path: Path, command: str, error: str
) -> None:
    job_id = launch(cli, "--notify-command", command, "--notify-file", "events.ndjson", "--", "true")
    event = completion_event(root, job_id, sinks=2)
    command_result, file_result = event["delivery_results"]
    assert list(command_result) == ["sink_type", "target", "success", "error", "attempted_at"]
    assert command_result["success"] is False
    assert command_result["error"] == error
    assert file_result["success"] is True  # the file sink still runs after a failed command
    assert event["state"] == "exited"
    assert event["exit_code"] == 0


def test_notify_file_in_a_directory_that_cannot_be_created(cli: Cli, root: Path, tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("a file, not a directory")
    job_id = launch(cli, "--notify-file", "plain/sub/events.ndjson", "--", "true")
    event = completion_event(root, job_id, sinks=1)
    [result] = event["delivery_results"]
    assert result["success"] is False
    assert result["error"].startswith("create parent dir: ")
    assert terminal_state(root, job_id)["result"]["exit_code"] == 0


def test_jobs_notifying_one_file_at_once_never_interleave(
    cli_env: dict[str, str], root: Path, tmp_path: Path
) -> None:
    jobs = 6
    target = tmp_path / "shared.ndjson"
    marker = tmp_path / "go"
    # ~100 KB events (far beyond PIPE_BUF: only one write per line keeps them whole), from
    # jobs that all finish at the same moment.
    command = f"while [ ! -e {marker} ]; do sleep 0.01; done # {'x' * 100_000}"
    procs = [
        subprocess.Popen(
            [
                *CLI,
                "--root",
                str(root),
                "run",
                "--no-wait",
                "--notify-file",
                str(target),
                "--",
                f"{command} {n}",
            ],
            stdout=subprocess.PIPE,
            env=cli_env,
            cwd=tmp_path,
        )
        for n in range(jobs)
    ]
    job_ids = {orjson.loads(proc.communicate(timeout=60)[0])["job_id"] for proc in procs}
    marker.touch()
    poll_until(lambda: target.exists() and target.read_bytes().count(b"\n") >= jobs, 30)
    events = ndjson(target)  # every line parses
    assert {event["job_id"] for event in events} == job_ids
    assert len(events) == jobs


# -- output match (job.output.matched) --------------------------------------------------

MIXED_OUTPUT = py(
    "import sys\n"
    "print('alpha 1', flush=True)\n"
    "print('alpha 3', file=sys.stderr, flush=True)\n"
    "print('beta 22', flush=True)\n"
    "print('gamma 4', file=sys.stderr, flush=True)\n"
    "sys.stdout.write('alpha tail')\n"  # final line without newline
)


@pytest.mark.parametrize(
    ("match_type", "pattern", "stream", "expected"),
    [
        (
            "contains",
            "alpha",
            "either",
            {("stdout", "alpha 1"), ("stderr", "alpha 3"), ("stdout", "alpha tail")},
        ),
        ("contains", "alpha", "stdout", {("stdout", "alpha 1"), ("stdout", "alpha tail")}),
        ("contains", "a", "stderr", {("stderr", "alpha 3"), ("stderr", "gamma 4")}),
        ("contains", "a.1", "either", set()),  # a substring test, not a regex
        ("regex", r"^\w+ \d$", "stderr", {("stderr", "alpha 3"), ("stderr", "gamma 4")}),
        ("regex", r"a\s2+", "either", {("stdout", "beta 22")}),
        ("regex", r"a.1", "either", {("stdout", "alpha 1")}),
    ],
)
def test_output_match_types_and_streams(
    cli: Cli, root: Path, match_type: str, pattern: str, stream: str, expected: set[tuple[str, str]]
) -> None:
    job_id = launch(
        cli,
        "--output-pattern",
        pattern,
        "--output-match-type",
        match_type,
        "--output-stream",
        stream,
        "--",
        *MIXED_OUTPUT,
    )
    terminal_state(root, job_id)
    records = ndjson(root / job_id / "notification_events.ndjson")
    assert {(record["stream"], record["line"]) for record in records} == expected
    assert len(records) == len(expected)
    for record in records:
        assert list(record) == [*MATCHED_KEYS, "delivery_results"]
        assert record["event_type"] == "job.output.matched"
        assert record["job_id"] == job_id
        assert (record["pattern"], record["match_type"]) == (pattern, match_type)
        assert record["delivery_results"] == []
    assert not (root / job_id / "completion_event.json").exists()  # a match rule alone


def test_output_match_command_and_file_sinks(cli: Cli, root: Path, tmp_path: Path) -> None:
    sink = (
        "cat >> via-command.ndjson; echo >> via-command.ndjson; "
        'echo "$AGENT_EXEC_EVENT_TYPE $AGENT_EXEC_EVENT_PATH" >> env.txt'
    )
    job_id = launch(
        cli,
        "--output-pattern",
        "ERROR",
        "--output-command",
        sink,
        "--output-file",
        "matches/out.ndjson",
        "--",
        *py("print('ok'); print('ERROR one'); print('fine'); print('ERROR two')"),
    )
    terminal_state(root, job_id)
    records = ndjson(root / job_id / "notification_events.ndjson")
    assert [record["line"] for record in records] == ["ERROR one", "ERROR two"]
    for record in records:
        command_result, file_result = record["delivery_results"]
        assert (command_result["sink_type"], command_result["target"], command_result["success"]) == (
            "command",
            sink,
            True,
        )
        assert (file_result["sink_type"], file_result["target"], file_result["success"]) == (
            "file",
            "matches/out.ndjson",
            True,
        )
    events = [
        {key: value for key, value in record.items() if key != "delivery_results"} for record in records
    ]
    assert ndjson(tmp_path / "matches/out.ndjson") == events
    assert ndjson(tmp_path / "via-command.ndjson") == events
    events_path = root / job_id / "notification_events.ndjson"
    assert (tmp_path / "env.txt").read_text().splitlines() == [f"job.output.matched {events_path}"] * 2


def test_notify_set_reaches_a_running_job(cli: Cli, root: Path, tmp_path: Path) -> None:
    marker = tmp_path / "go"
    code = (
        "import os, time\n"
        "print('early ERROR', flush=True)\n"
        f"while not os.path.exists({str(marker)!r}): time.sleep(0.01)\n"
        "print('late ERROR', flush=True)\n"
    )
    result = cli("run", "--", *py(code))  # returns once the first line is out
    assert result.doc["state"] == "running", result.doc
    job_id = result.doc["job_id"]
    updated = cli(
        "notify", "set", job_id, "--output-pattern", "ERROR", "--command", "cat > finished.json"
    ).doc
    assert updated["notification"] == {
        "notify_command": "cat > finished.json",
        "on_output_match": {"pattern": "ERROR", "match_type": "contains", "stream": "either"},
    }
    marker.touch()
    terminal_state(root, job_id)
    records = ndjson(root / job_id / "notification_events.ndjson")
    assert [record["line"] for record in records] == ["late ERROR"]  # never replayed
    # the completion command given while the job ran is the one that fires
    event = completion_event(root, job_id, sinks=1)
    assert event["delivery_results"][0]["success"] is True
    assert orjson.loads((tmp_path / "finished.json").read_bytes())["job_id"] == job_id


def test_notify_set_is_metadata_only(cli: Cli, root: Path, tmp_path: Path) -> None:
    finished = launch(cli, "--", "true")
    terminal_state(root, finished)
    poll_until(lambda: not supervisors(root))  # nobody is left who could deliver anything
    created = cli("create", "--", "echo", "ERROR").doc["job_id"]
    for job_id in (finished, created):
        result = cli(
            "notify", "set", job_id, "--command", "touch fired", "--output-pattern", "E", "--output-file", "f"
        )
        assert result.doc["type"] == "notify.set"
        assert not supervisors(root)
        assert not (tmp_path / "fired").exists()
        assert not (tmp_path / "f").exists()
        assert not (root / job_id / "completion_event.json").exists()
        assert not (root / job_id / "notification_events.ndjson").exists()


def test_invalid_regex_is_a_json_error(cli: Cli, root: Path) -> None:
    job_id = cli("create", "--", "true").doc["job_id"]
    before = (root / job_id / "meta.json").read_bytes()
    result = cli("notify", "set", job_id, "--output-pattern", "(", "--output-match-type", "regex")
    assert result.returncode == 1
    assert result.doc["ok"] is False
    assert result.doc["error"]["code"] == "internal_error"
    assert "regex" in result.doc["error"]["message"]
    assert (root / job_id / "meta.json").read_bytes() == before
    run = cli("run", "--output-pattern", "[", "--output-match-type", "regex", "--", "true")
    assert (run.returncode, run.doc["ok"]) == (1, False)


# -- bounds: hanging and flooding sinks ---------------------------------------------------


def test_hanging_completion_command_is_killed_at_the_bound(
    cli: Cli, cli_env: dict[str, str], root: Path, tmp_path: Path
) -> None:
    env = {**cli_env, "AGENT_EXEC_NOTIFY_TIMEOUT": "1"}
    job_id = launch(
        cli,
        "--notify-command",
        "echo $$ > sink.pid; exec sleep 300",
        "--notify-file",
        "events.ndjson",
        "--",
        "true",
        env=env,
    )
    assert terminal_state(root, job_id)["job"]["status"] == "exited"
    event = completion_event(root, job_id, sinks=2)
    command_result, file_result = event["delivery_results"]
    assert command_result["success"] is False
    assert command_result["error"] == "timed out after 1s"
    assert file_result["success"] is True
    assert gone(int((tmp_path / "sink.pid").read_text()))  # killed and reaped
    poll_until(lambda: not supervisors(root), 10)


def test_hanging_match_commands_never_block_the_job(
    cli: Cli, cli_env: dict[str, str], root: Path, tmp_path: Path
) -> None:
    env = {**cli_env, "AGENT_EXEC_NOTIFY_TIMEOUT": "0.5"}
    marker = tmp_path / "go"
    code = (
        "import os, time\n"
        "for n in range(3): print(f'hit {n}', flush=True)\n"
        f"while not os.path.exists({str(marker)!r}): time.sleep(0.01)\n"
        "print('done', flush=True)\n"
    )
    job_id = launch(
        cli,
        "--output-pattern",
        "hit",
        "--output-command",
        "echo $$ >> sinks.pid; exec sleep 300",
        "--",
        *py(code),
        env=env,
    )
    events_path = root / job_id / "notification_events.ndjson"
    poll_until(lambda: len(ndjson(events_path)) == 3, 15)  # one bound after another
    marker.touch()
    state = terminal_state(root, job_id)
    assert state["job"]["status"] == "exited"
    assert (root / job_id / "stdout.log").read_text() == "hit 0\nhit 1\nhit 2\ndone\n"
    for record in ndjson(events_path):
        [result] = record["delivery_results"]
        assert (result["success"], result["error"]) == (False, "timed out after 0.5s")
    for pid in (tmp_path / "sinks.pid").read_text().split():
        assert gone(int(pid))
    poll_until(lambda: not supervisors(root), 10)


def test_matches_still_queued_at_exit_are_dropped_within_the_bound(
    cli: Cli, cli_env: dict[str, str], root: Path, tmp_path: Path
) -> None:
    env = {**cli_env, "AGENT_EXEC_NOTIFY_TIMEOUT": "0.5"}
    job_id = launch(
        cli,
        "--output-pattern",
        "hit",
        "--output-command",
        "exec sleep 300",
        "--",
        *py("for n in range(5): print(f'hit {n}')"),
        env=env,
    )
    assert terminal_state(root, job_id)["result"]["exit_code"] == 0
    records = ndjson(root / job_id / "notification_events.ndjson")
    matched = [record for record in records if record["event_type"] == "job.output.matched"]
    dropped = [record for record in records if record["event_type"] == "job.output.dropped"]
    assert dropped and all(record["reason"] == "drain_timeout" for record in dropped)
    assert len(matched) + sum(record["dropped"] for record in dropped) == 5
    poll_until(lambda: not supervisors(root), 10)


@pytest.mark.parametrize("sink", ["record-only", "command"])
def test_100k_matching_lines(cli: Cli, cli_env: dict[str, str], root: Path, sink: str) -> None:
    lines = 100_000
    extra = ["--output-command", "true"] if sink == "command" else []
    env = {**cli_env, "AGENT_EXEC_NOTIFY_TIMEOUT": "1"}
    job_id = launch(
        cli,
        "--output-pattern",
        "match",
        *extra,
        "--",
        *py(f"import sys; sys.stdout.write(''.join(f'match {{n}}\\n' for n in range({lines})))"),
        env=env,
    )
    assert terminal_state(root, job_id, timeout=30)["result"]["exit_code"] == 0
    job_dir = root / job_id
    assert (job_dir / "stdout.log").read_bytes().count(b"\n") == lines  # every line is in the logs
    assert (job_dir / "full.log").read_bytes().count(b"\n") == lines
    records = ndjson(job_dir / "notification_events.ndjson")
    matched = [record["line"] for record in records if record["event_type"] == "job.output.matched"]
    dropped = sum(record["dropped"] for record in records if record["event_type"] == "job.output.dropped")
    assert len(matched) + dropped == lines  # every match is delivered or counted
    numbers = [int(line.split()[1]) for line in matched]
    assert numbers == sorted(numbers)  # in output order
    assert matched


# -- the per-chunk configuration check ----------------------------------------------------


def test_line_hook_is_installed_only_while_a_rule_exists(tmp_path: Path) -> None:
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    meta: dict[str, Any] = {
        "job": {"id": "job"},
        "schema_version": "0.1",
        "command": ["x"],
        "created_at": "2026-01-01T00:00:00Z",
        "root": str(tmp_path),
        "env_keys": [],
    }
    atomic_write_json(job_dir / "meta.json", meta)
    writer = LogWriter(job_dir / "stdout.log", job_dir / "stderr.log", job_dir / "full.log")
    try:
        notifier = Notifier(LaunchSpec(job_id="job", job_dir=job_dir, command=["x"], wrapper=["sh", "-c"]))
        notifier.attach(writer)
        writer.write("stdout", b"ERROR before\n")
        assert writer.on_line is None and not notifier.watches_output
        meta["notification"] = {
            "on_output_match": {"pattern": "ERROR", "match_type": "contains", "stream": "either"}
        }
        atomic_write_json(job_dir / "meta.json", meta)
        writer.write("stdout", b"ERROR after\n")
        assert writer.on_line is not None and notifier.watches_output
        del meta["notification"]
        atomic_write_json(job_dir / "meta.json", meta)
        writer.write("stdout", b"ERROR gone\n")
        assert writer.on_line is None
        (job_dir / "meta.json").write_bytes(b"{torn")  # unreadable: the last good rule stays
        writer.write("stdout", b"x\n")
        assert writer.on_line is None
    finally:
        writer.close()
    assert (job_dir / "stdout.log").read_bytes() == b"ERROR before\nERROR after\nERROR gone\nx\n"


def test_match_events_of_concurrent_jobs_never_interleave(cli: Cli, root: Path, tmp_path: Path) -> None:
    target = tmp_path / "shared-matches.ndjson"
    marker = tmp_path / "go"
    code = (
        "import os, sys, time\n"
        f"while not os.path.exists({str(marker)!r}): time.sleep(0.005)\n"
        "for n in range(1000): sys.stdout.write(f'hit {n} ' + 'x' * 16000 + '\\n')\n"
    )
    job_ids = {
        launch(cli, "--output-pattern", "hit", "--output-file", str(target), "--", *py(code))
        for _ in range(2)
    }
    marker.touch()
    for job_id in job_ids:
        terminal_state(root, job_id, timeout=30)
    events = ndjson(target)  # every line parses
    assert {event["job_id"] for event in events} == job_ids
    for job_id in job_ids:
        records = ndjson(root / job_id / "notification_events.ndjson")
        delivered = [r for r in records if r["event_type"] == "job.output.matched"]
        assert sum(1 for event in events if event["job_id"] == job_id) == len(delivered)
