"""A detached supervisor spawns its workload with ``os.posix_spawn`` (``_spawn``), not
``subprocess.Popen``: the workload must start exactly as ``Popen`` would have started it.

Each case runs the CLI as a user does and looks at what the workload itself saw.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from agent_exec import _spawn
from conftest import Cli, poll_until


def _script(path: Path, body: str, mode: int = 0o755) -> Path:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(mode)
    return path


def test_the_workload_inherits_only_its_standard_streams(cli: Cli) -> None:
    code = "import os; print(sorted(int(fd) for fd in os.listdir('/proc/self/fd')))"
    doc = cli("run", "--shell-wrapper", f"{sys.executable} -c", "--", code).doc
    assert doc["state"] == "exited", doc
    # 3 is the listing's own descriptor; the supervisor's lock, socket, logs and pipes
    # must not leak into the job (a leaked lock would outlive the supervisor).
    assert doc["stdout"] == "[0, 1, 2, 3]\n", doc


def _mask(status: str, field: str) -> int:
    line = next(line for line in status.splitlines() if line.startswith(f"{field}:"))
    return int(line.split()[1], 16)


def test_signals_the_supervisor_ignores_are_at_their_defaults_in_the_workload(cli: Cli) -> None:
    doc = cli("run", "--", "cat", "/proc/self/status").doc
    assert doc["state"] == "exited", doc
    ignored = _mask(doc["stdout"], "SigIgn")
    # SIGPIPE (13) and SIGXFSZ (25) are bits 12 and 24. (glibc's posix_spawn leaves its two
    # internal signals, 32 and 33, ignored: as for any posix_spawn'd program, Rust's too.)
    assert ignored & ((1 << 12) | (1 << 24)) == 0, hex(ignored)
    assert ignored & ~((1 << 31) | (1 << 32)) == 0, hex(ignored)
    assert _mask(doc["stdout"], "SigBlk") == 0
    doc = cli("run", "--", "yes | head -n 1").doc  # SIGPIPE ends `yes` quietly, as in a terminal
    assert (doc["state"], doc["stdout"], doc["stderr"]) == ("exited", "y\n", ""), doc


def test_the_workload_leads_its_own_process_group(cli: Cli) -> None:
    code = "import os; print(os.getpgid(0) == os.getpid(), os.getsid(0) != os.getpid())"
    doc = cli("run", "--shell-wrapper", f"{sys.executable} -c", "--", code).doc
    assert (doc["state"], doc["stdout"]) == ("exited", "True True\n"), doc


def test_a_relative_wrapper_is_found_from_the_job_directory(cli: Cli, tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    _script(workdir / "wrap", 'echo "wrapped in $PWD"; exec /bin/sh "$@"')
    doc = cli("run", "--cwd", str(workdir), "--shell-wrapper", "./wrap -c", "--", "echo inner").doc
    assert doc["state"] == "exited", doc
    assert doc["stdout"] == f"wrapped in {workdir}\ninner\n", doc


def test_the_program_is_looked_up_in_the_jobs_path(cli: Cli, tmp_path: Path) -> None:
    tools = tmp_path / "tools"
    tools.mkdir()
    _script(tools / "only-here", 'echo found; exec /bin/sh "$@"')
    path = f"{tools}:{os.environ.get('PATH', os.defpath)}"
    doc = cli("run", "--env", f"PATH={path}", "--shell-wrapper", "only-here -c", "--", "true").doc
    assert (doc["state"], doc["stdout"]) == ("exited", "found\n"), doc
    doc = cli("run", "--shell-wrapper", "only-here -c", "--", "true").doc  # not on the caller's PATH
    assert doc["state"] == "failed", doc
    assert doc["reason"] == "spawn_failed: No such file or directory: only-here", doc


def test_a_program_that_cannot_be_run_is_refused_as_popen_refuses_it(cli: Cli, tmp_path: Path) -> None:
    # (root too: execve needs at least one execute bit, even for root)
    _script(tmp_path / "not-executable", "true", mode=0o644)
    doc = cli("run", "--cwd", str(tmp_path), "--shell-wrapper", "./not-executable -c", "--", "true").doc
    assert doc["state"] == "failed", doc
    assert doc["reason"] == "spawn_failed: Permission denied: ./not-executable", doc


def test_find_program_reports_what_popen_reports(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_text("data")
    plain.chmod(0o644)
    directory = tmp_path / "adir"
    directory.mkdir()
    runnable = _script(tmp_path / "runnable", "true")
    env = {"PATH": f"{tmp_path}/missing:{tmp_path}"}
    assert _spawn.find_program("runnable", env) == str(runnable)
    assert _spawn.find_program("./anything", env) == "./anything"  # a path is taken as given
    with pytest.raises(FileNotFoundError) as missing:
        _spawn.find_program("absent", env)
    assert missing.value.filename == "absent"
    with pytest.raises(PermissionError) as refused:
        _spawn.find_program("adir", env)  # a directory on PATH: execve says EACCES
    assert refused.value.filename == "adir"
    with pytest.raises(PermissionError):
        _spawn.find_program("plain", env)  # no execute bit: refused, even to root


def test_the_supervisor_comes_back_from_the_job_directory(cli: Cli, tmp_path: Path) -> None:
    """A relative root: the supervisor moved into ``--cwd`` for the spawn, and must find its
    job again (auto-GC, notifications) from where it was."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    events = tmp_path / "events.jsonl"
    doc = cli(
        "--root",
        "rel-jobs",
        "run",
        "--cwd",
        str(elsewhere),
        "--notify-file",
        str(events),
        "--",
        "pwd",
        use_root=False,
        cwd=tmp_path,
    ).doc
    assert (doc["state"], doc["stdout"]) == ("exited", f"{elsewhere}\n"), doc
    assert (tmp_path / "rel-jobs" / doc["job_id"] / "state.json").is_file()
    assert not (elsewhere / "rel-jobs").exists()
    delivered = poll_until(lambda: events.is_file() and events.read_text())
    assert doc["job_id"] in delivered
