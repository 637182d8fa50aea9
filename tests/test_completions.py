"""``agent-exec completions`` and the dynamic ``COMPLETE=<shell>`` protocol."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Cli, CliResult, poll_until

SHELLS = ("bash", "zsh", "fish", "powershell")


@pytest.mark.parametrize("shell", SHELLS)
def test_completion_script_calls_back_into_the_same_program(cli: Cli, shell: str) -> None:
    result = cli("completions", shell, use_root=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert "COMPLETE" in result.stdout and "agent-exec" in result.stdout
    # The test runs `python -m agent_exec`: the script must call exactly that back.
    assert sys.executable in result.stdout and "agent_exec" in result.stdout
    if shell == "zsh":
        assert "_clap_dynamic_completer_" in result.stdout


def test_unknown_shell_is_a_usage_error(cli: Cli) -> None:
    result = cli("completions", "tcsh", use_root=False)
    assert result.returncode == 2
    assert result.stdout == ""


def _complete(
    cli: Cli, cli_env: dict[str, str], shell: str, *words: str, index: int | None = None, **env: str
) -> CliResult:
    environment = {**cli_env, "COMPLETE": shell, **env}
    if index is not None:
        environment["_CLAP_COMPLETE_INDEX"] = str(index)
    result = cli("--", "agent-exec", *words, use_root=False, env=environment)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result


@pytest.fixture
def jobs(cli: Cli, tmp_path: Path) -> Iterator[dict[str, str]]:
    """One job per state, all started from ``tmp_path`` (the cli fixture's cwd)."""
    ids = {
        "exited": cli("run", "--", "true").doc["job_id"],
        "created": cli("create", "--", "true").doc["job_id"],
        "running": cli("run", "--no-wait", "--", "sleep", "60").doc["job_id"],
        "failed": cli("run", "--env-file", str(tmp_path / "missing.env"), "--", "true").doc["job_id"],
        "killed": cli("run", "--no-wait", "--", "sleep", "60").doc["job_id"],
    }
    cli("kill", ids["killed"])
    poll_until(lambda: cli("status", ids["killed"]).doc["state"] == "killed")
    assert cli("status", ids["failed"]).doc["state"] == "failed"
    yield ids
    cli("kill", "--signal", "KILL", ids["running"])


EXPECTED = {
    ("status",): {"exited", "created", "running", "failed", "killed"},
    ("tail",): {"exited", "created", "running", "failed", "killed"},
    ("tag", "set"): {"exited", "created", "running", "failed", "killed"},
    ("notify", "set"): {"exited", "created", "running", "failed", "killed"},
    ("start",): {"created"},
    ("wait",): {"created", "running"},
    ("kill",): {"running"},
    ("delete",): {"exited", "killed", "failed"},
    ("rm",): {"exited", "killed", "failed"},
}


def test_job_ids_per_command(cli: Cli, cli_env: dict[str, str], root: Path, jobs: dict[str, str]) -> None:
    for command, states in EXPECTED.items():
        words = ["--root", str(root), *command, ""]
        result = _complete(cli, cli_env, "bash", *words, index=len(words))
        assert set(result.stdout.split()) == {jobs[state] for state in states}, command


def test_descriptions_per_shell(cli: Cli, cli_env: dict[str, str], root: Path, jobs: dict[str, str]) -> None:
    zsh = _complete(cli, cli_env, "zsh", "--root", str(root), "kill", "", index=4)
    assert zsh.stdout == f"{jobs['running']}:running\n"
    fish = _complete(cli, cli_env, "fish", "--root", str(root), "start", "")
    assert fish.stdout == f"{jobs['created']}\tcreated\n"
    pwsh = _complete(cli, cli_env, "powershell", "--root", str(root), "start", "")
    assert pwsh.stdout == f"{jobs['created']}\tcreated\n"
    bash = _complete(cli, cli_env, "bash", "--root", str(root), "start", "", index=4, _CLAP_IFS="\v")
    assert bash.stdout == f"{jobs['created']}\n"


def test_prefix_cwd_and_comp_line_root(
    cli: Cli, cli_env: dict[str, str], root: Path, jobs: dict[str, str], tmp_path: Path
) -> None:
    job_id = jobs["exited"]
    partial = _complete(cli, cli_env, "bash", "--root", str(root), "status", job_id[:10], index=4)
    assert partial.stdout.split() == [job_id]
    # The root may come from COMP_LINE instead of the words.
    from_line = _complete(
        cli, cli_env, "bash", "status", "", index=2, COMP_LINE=f"agent-exec --root={root} status "
    )
    assert job_id in from_line.stdout.split()
    # Only jobs started from the current directory are offered.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    environment = {**cli_env, "COMPLETE": "bash", "_CLAP_COMPLETE_INDEX": "4"}
    words = ("--", "agent-exec", "--root", str(root), "status", "")
    other = cli(*words, use_root=False, env=environment, cwd=elsewhere)
    assert other.returncode == 0 and other.stdout == ""
    # A missing root yields nothing, quietly.
    missing = _complete(cli, cli_env, "bash", "--root", str(tmp_path / "nope"), "status", "", index=4)
    assert missing.stdout == ""


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (("",), {"run", "status", "kill", "tag", "notify", "serve", "completions", "rm"}),
        (("st",), {"start", "status"}),
        (("kill", "--signal", ""), {"TERM", "INT", "KILL", "HUP", "USR1", "USR2"}),
        (("list", "--state", ""), {"created", "running", "exited", "killed", "failed", "unknown"}),
        (("completions", ""), {"bash", "zsh", "fish", "powershell"}),
        (("--version", "sta"), {"start", "status"}),
        (("tag", ""), {"set"}),
    ],
)
def test_static_candidates(
    cli: Cli, cli_env: dict[str, str], words: tuple[str, ...], expected: set[str]
) -> None:
    result = _complete(cli, cli_env, "fish", *words)
    values = {line.split("\t")[0] for line in result.stdout.splitlines()}
    assert expected <= values, expected - values
    assert all(value.startswith(words[-1]) for value in values)


def test_path_candidates(cli: Cli, cli_env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "subdir").mkdir()
    (tmp_path / "subfile").write_text("")
    dirs = _complete(cli, cli_env, "fish", "run", "--cwd", "sub")
    assert dirs.stdout.split() == ["subdir/"]
    files = _complete(cli, cli_env, "fish", "run", "--env-file", "sub")
    assert files.stdout.split() == ["subdir/", "subfile"]


def test_protocol_without_words_prints_the_registration(cli: Cli, cli_env: dict[str, str]) -> None:
    result = cli(use_root=False, env={**cli_env, "COMPLETE": "zsh"})
    assert result.returncode == 0 and "compdef" in result.stdout
    unknown = cli("--", "agent-exec", "", use_root=False, env={**cli_env, "COMPLETE": "tcsh"})
    assert unknown.returncode == 2 and unknown.stdout == ""
    disabled = cli("schema", use_root=False, env={**cli_env, "COMPLETE": "0"})
    assert disabled.returncode == 0 and disabled.doc["type"] == "schema"


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash not installed")
def test_bash_registration_end_to_end(
    cli: Cli, cli_env: dict[str, str], root: Path, jobs: dict[str, str], tmp_path: Path
) -> None:
    script = tmp_path / "agent-exec.bash"
    script.write_text(cli("completions", "bash", use_root=False).stdout)
    probe = (
        f"source {script}\n"
        f"COMP_WORDS=(agent-exec --root {root} kill ''); COMP_CWORD=4; COMP_TYPE=9\n"
        "_clap_complete_agent_exec\n"
        'printf "<%s>\\n" "${COMPREPLY[@]}"\n'
        "complete -p agent-exec\n"
    )
    result: Any = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", probe],
        capture_output=True,
        text=True,
        env=cli_env,
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"<{jobs['running']}>"
    assert "_clap_complete_agent_exec agent-exec" in lines[-1]
