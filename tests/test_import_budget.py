"""Import budgets: what each command's hot path may import.

Every CLI call pays for every module it imports (``import orjson`` alone used to cost more
than the interpreter's start-up). Each command is run for real, as a user runs it (the
``agent-exec`` console script in a subprocess), under ``python -X importtime``; the
modules it imported are read from that report and checked against the command's budget:

* ``deny``: modules the command must not import (a framework, a heavy stdlib module);
* ``own``: the only ``agent_exec`` modules it may import (a new import on a hot path is a
  decision, so it shows up here).

Every subcommand of the grammar needs a budget (or a reason in ``UNBUDGETED``): a new
command fails ``test_every_command_has_a_budget`` until one is added below.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import orjson
import pytest

from agent_exec._cli._grammar import COMMANDS

#: Never on any command's path but the ones named in UNBUDGETED.
FRAMEWORKS = frozenset({"typer", "click", "rich", "anyio", "asyncio", "trio", "starlette", "uvicorn", "yaml"})
ASYNC = frozenset({"anyio", "asyncio"})
#: Costs more than a read command may spend (orjson pulls in most of the rest).
HEAVY = frozenset(
    {
        "orjson",
        "dataclasses",
        "inspect",
        "typing",
        "uuid",
        "platform",
        "datetime",
        "tomllib",
        "logging",
        "subprocess",
        "shutil",
        "tempfile",
        "socket",
        "threading",
        "ast",
        "dis",
    }
)
#: The read commands build no ``Path`` (see ``_paths.RootPath``): pathlib costs a third of
#: an interpreter start (urllib.parse, ipaddress, fnmatch, ntpath).
NO_PATHLIB = frozenset({"pathlib", "urllib.parse", "ipaddress", "fnmatch"})
#: ``json`` compiles regular expressions at import: ``re`` (with ``enum``'s share) costs a
#: third of an interpreter start. JSON goes through the ``_json`` accelerator (``_codec``),
#: and the ``agent-exec`` script is no ``[project.scripts]`` wrapper (those import ``re``).
NO_REGEX = frozenset({"re", "json", "json.decoder", "json.encoder", "json.scanner"})
#: What a command an agent calls between every step must not import.
LOOP_CALL = FRAMEWORKS | HEAVY | NO_PATHLIB | NO_REGEX
#: What every command parses and prints with.
CORE = frozenset(
    {
        "agent_exec",
        "agent_exec._cli",
        "agent_exec._cli._grammar",
        "agent_exec._cli._commands",
        "agent_exec._codec",
        "agent_exec._errors",
        "agent_exec._output",
        "agent_exec._models",
        "agent_exec._paths",
    }
)
READ = CORE | {
    "agent_exec._jobs",
    "agent_exec._store",
    "agent_exec._logs",
    "agent_exec._timeutil",
    "agent_exec._process",
    "agent_exec._spec",
    "agent_exec._jobdir",
    "agent_exec._root",
    "agent_exec._backends",
}
LAUNCH = READ | {"agent_exec._config", "agent_exec._launch"}
GC = frozenset({"agent_exec._gc", "agent_exec._gcfs", "agent_exec._gcpolicy"})


class Budget(NamedTuple):
    argv: Callable[[str], list[str]]  # the command line, given a finished job's id
    deny: frozenset[str]
    own: frozenset[str]


BUDGETS: dict[str, Budget] = {
    "status": Budget(lambda job: ["status", job], LOOP_CALL, READ),
    "tail": Budget(lambda job: ["tail", job], LOOP_CALL, READ),
    "wait": Budget(lambda job: ["wait", job], LOOP_CALL, READ),
    "kill": Budget(lambda job: ["kill", job], LOOP_CALL, READ | {"agent_exec._kill"}),
    "list": Budget(lambda job: ["list"], LOOP_CALL, READ),
    "ps": Budget(lambda job: ["ps"], LOOP_CALL, READ),
    # run/create/start hand the job to a detached supervisor over a socket pair (through
    # the ``_socket`` C module; the supervisor's own imports happen in its process, after
    # the fork); the thread waits for the job's end. A local ``run`` builds no Path either.
    "run": Budget(
        lambda job: ["run", "--", "true"],
        FRAMEWORKS | HEAVY - {"threading"} | NO_PATHLIB | NO_REGEX,
        LAUNCH,
    ),
    "create": Budget(lambda job: ["create", "--", "true"], FRAMEWORKS | HEAVY, LAUNCH),
    "start": Budget(
        lambda job: ["start", job],  # refused (the job is not 'created'): the path up to the check
        FRAMEWORKS | HEAVY - {"threading"},
        LAUNCH,
    ),
    # _restart still defines a dataclass (and imports typing): restart is not a loop call,
    # but slimming it like the read path would save the same few milliseconds.
    "restart": Budget(
        lambda job: ["restart", "0" * 32],  # an unknown job: the path up to the lookup
        FRAMEWORKS | HEAVY - {"threading", "dataclasses", "inspect", "typing", "ast", "dis"},
        LAUNCH | {"agent_exec._restart"},
    ),
    "tag set": Budget(lambda job: ["tag", "set", job, "--tag", "a.b"], FRAMEWORKS, LAUNCH),
    # validating an output pattern loads the notifier (and anyio with it): a rare call.
    "notify set": Budget(
        lambda job: ["notify", "set", job, "--command", "true"],
        FRAMEWORKS - ASYNC,
        LAUNCH | {"agent_exec._notify"},
    ),
    # the collector is async (bounded concurrency over many job directories).
    "delete": Budget(lambda job: ["delete", "--dry-run", job], FRAMEWORKS - ASYNC, READ | GC),
    "gc": Budget(lambda job: ["gc", "--dry-run"], FRAMEWORKS - ASYNC, READ | GC),
    "schema": Budget(lambda job: ["schema"], FRAMEWORKS, CORE | {"agent_exec._schema"}),
}
#: Commands timed on a refused call (the path up to the refusal), with the expected error.
REFUSED = {"start": "invalid_state", "restart": "job_not_found"}
UNBUDGETED = {
    "serve": "a long-running server: its start-up is paid once",
    "mcp": "a long-running server (MCP over stdio): its start-up is paid once",
    "completions": "prints a script once, at shell set-up",
    "install-skills": "run once per project",
}


def _console_script() -> list[str]:
    script = Path(sys.executable).parent / "agent-exec"
    return [sys.executable, str(script)] if script.is_file() else [sys.executable, "-m", "agent_exec"]


def imported_modules(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[set[str], bytes]:
    """Modules the real CLI imports for ``argv`` (from ``-X importtime``), and its stdout."""
    executable, *rest = _console_script()
    proc = subprocess.run(
        [executable, "-X", "importtime", *rest, *argv],
        capture_output=True,
        env=env,
        cwd=cwd,
        timeout=60,
        check=False,
    )
    modules = set()
    for line in proc.stderr.decode(errors="replace").splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name != "package":
                modules.add(name)
    return modules, proc.stdout


@pytest.fixture(scope="module")
def finished_job(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, dict[str, str]]:
    base = tmp_path_factory.mktemp("budget")
    env = dict(os.environ)
    env.update(HOME=str(base), XDG_CONFIG_HOME=str(base / "cfg"), XDG_DATA_HOME=str(base / "data"))
    env["AGENT_EXEC_ROOT"] = str(base / "jobs")
    for name in ("COMPLETE", "RUST_LOG"):
        env.pop(name, None)
    out = subprocess.run(
        [*_console_script(), "run", "--", "echo", "hi"], capture_output=True, env=env, cwd=base, check=True
    ).stdout
    doc = orjson.loads(out)
    assert doc["state"] == "exited", doc
    return base, doc["job_id"], env


def test_every_command_has_a_budget() -> None:
    missing = sorted(set(COMMANDS) - set(BUDGETS) - set(UNBUDGETED))
    assert not missing, f"add an import budget to tests/test_import_budget.py for: {missing}"


@pytest.mark.parametrize("command", sorted(BUDGETS), ids=lambda name: name.replace(" ", "-"))
def test_command_stays_within_its_import_budget(
    command: str, finished_job: tuple[Path, str, dict[str, str]]
) -> None:
    base, job_id, env = finished_job
    budget = BUDGETS[command]
    modules, stdout = imported_modules(budget.argv(job_id), env, base)
    doc = orjson.loads(stdout)  # it really ran and printed its document
    assert doc["ok"] is True or doc["error"]["code"] == REFUSED.get(command), doc
    assert "agent_exec._cli._commands" in modules, "the command did not run through the fast parser"
    denied = sorted(modules & budget.deny)
    assert not denied, f"`{command}` imports {denied} (its budget denies them)"
    own = sorted(name for name in modules if name.startswith("agent_exec") and name not in budget.own)
    assert not own, f"`{command}` imports {own}, outside its budget: a new cost on every call"
