"""What the per-call savings of issue #14 must not change.

The read commands take the jobs root as a :class:`~agent_exec._paths.RootPath` (a plain
string, so that they never import ``pathlib``): every path they report must be spelled
exactly as ``pathlib`` spells it, whatever spelling of the root was given. The detached
supervisor lowers its priority for the housekeeping after a job's terminal record.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest

from agent_exec._paths import resolve_root
from conftest import Cli

SPELLINGS = [
    "/tmp/x",
    "/tmp/x/",
    "tmp//x",
    "./jobs",
    "jobs/.",
    "a/./b/",
    "//srv/x",
    "///a",
    "/",
    "//",
    ".",
    "./",
    "..",
    "a/../b",
    "a",
]


@pytest.mark.parametrize("text", SPELLINGS)
def test_a_light_root_is_spelled_as_pathlib_spells_it(text: str) -> None:
    light, real = resolve_root(text, light=True), PurePosixPath(text)
    assert type(str(light)) is str
    assert str(light) == str(real)
    assert light.name == real.name
    assert str(light.parent) == str(real.parent)
    for name in ("0123abcd", "stdout.log", "sub/dir", "/abs"):
        assert str(light / name) == str(real / name)
        assert str((light / name).parent) == str((real / name).parent)
        assert (light / name).name == (real / name).name


def test_the_default_roots_match_pathlib(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("AGENT_EXEC_ROOT", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path) + "//data/")
    assert str(resolve_root(None, light=True)) == str(resolve_root(None))
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", "/home/someone/")
    assert str(resolve_root("", light=True)) == str(resolve_root(""))
    monkeypatch.setenv("AGENT_EXEC_ROOT", "rel//jobs/")
    assert str(resolve_root(None, light=True)) == str(resolve_root(None)) == "rel/jobs"


def test_read_commands_report_paths_as_run_does(cli: Cli, tmp_path: Path) -> None:
    """``run`` (a real ``Path``) and ``tail``/``list`` (a ``RootPath``) agree byte for byte,
    for an odd spelling of a relative root."""
    (tmp_path / "jobs").mkdir(mode=0o700)
    odd = ["--root", ".//jobs/./"]
    run = cli(*odd, "run", "--", "echo", "hi", use_root=False).doc
    assert run["stdout_log_path"] == f"jobs/{run['job_id']}/stdout.log"
    tail = cli(*odd, "tail", run["job_id"][:8], use_root=False).doc
    assert (tail["stdout_log_path"], tail["stderr_log_path"]) == (
        run["stdout_log_path"],
        run["stderr_log_path"],
    )
    assert tail["stdout"] == "hi\n"
    listed = cli(*odd, "list", use_root=False).doc
    assert listed["root"] == "jobs"
    assert [job["job_id"] for job in listed["jobs"]] == [run["job_id"]]
    for command in ("status", "wait", "kill"):
        doc = cli(*odd, command, run["job_id"], use_root=False).doc
        assert doc["ok"] is True and doc["job_id"] == run["job_id"], doc
    missing = cli(*odd, "status", "f" * 32, use_root=False)
    assert missing.returncode != 0 and missing.doc["error"]["code"] == "job_not_found"


def test_housekeeping_runs_at_a_lower_priority() -> None:
    """``_yield_cpu`` lowers the calling thread and the given running one to nice 10 at
    least, and never raises a priority that is lower already."""
    code = """
import os, threading
from agent_exec._detached import _yield_cpu
release = threading.Event()
worker = threading.Thread(target=release.wait)
worker.start()
os.setpriority(os.PRIO_PROCESS, worker.native_id, 15)
_yield_cpu(worker, None)
me, other = threading.get_native_id(), worker.native_id
print(os.getpriority(os.PRIO_PROCESS, me), os.getpriority(os.PRIO_PROCESS, other))
release.set()
worker.join()
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, timeout=60)
    assert proc.stdout.split() == [b"10", b"15"], proc.stderr


def test_the_supervisor_spawns_without_heavy_imports() -> None:
    """What a pre-forked supervisor imports between the fork and the workload's spawn is
    on the critical path of ``run`` (it runs beside the CLI on the other core)."""
    code = """
import sys
from agent_exec import _jobs, _launch
before = set(sys.modules)
from agent_exec import _detached
from agent_exec._spec import LaunchSpec
from agent_exec._workload import note_resumed, start_workload, drive_until_ready
from agent_exec import _spawn
print(repr(sorted(set(sys.modules) - before)))
"""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONSTARTUP"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, timeout=60, env=env)
    imported = set(ast.literal_eval(proc.stdout.decode().splitlines()[-1]))
    heavy = {"dataclasses", "inspect", "typing", "logging", "setproctitle", "anyio", "asyncio", "orjson"}
    heavy.add("pathlib")  # the job directory arrives as a RootPath (LaunchSpec.from_json)
    heavy |= {"subprocess", "selectors", "locale", "re", "json"}  # posix_spawn, select.poll, _json
    assert not imported & heavy, sorted(imported & heavy)


def test_run_creates_a_missing_root_private_and_reads_config_paths_as_before(
    cli: Cli, tmp_path: Path
) -> None:
    """``run`` takes a light root too: a missing root is still made (mode 0700), and a
    config file given with an odd spelling is named in errors as pathlib spells it."""
    root = tmp_path / "new" / "jobs"
    doc = cli("--root", str(root) + "//", "run", "--", "echo", "hi", use_root=False).doc
    assert doc["stdout"] == "hi\n" and doc["stdout_log_path"] == f"{root}/{doc['job_id']}/stdout.log"
    assert root.stat().st_mode & 0o777 == 0o700
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "config.toml").write_text("[gc]\nauto = 3\n")
    bad = cli("run", "--config", ".//cfg//config.toml", "--", "true")
    assert bad.returncode != 0
    assert bad.doc["error"]["message"] == "invalid config file cfg/config.toml: [gc].auto must be a boolean"
    default_root = tmp_path / "jobs"
    assert not default_root.exists() or not any(default_root.iterdir())  # refused: nothing made
