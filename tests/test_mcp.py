"""``agent-exec mcp`` driven by the MCP SDK's own stdio client against a real server
subprocess: every tool, the CLI's documents as structured results, errors with the CLI's
codes, clamped deadlines, 100 jobs, and a host killed in the middle of a ``wait``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client

from conftest import Cli, poll_until


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    from agent_exec._schema import load_schema

    return jsonschema.Draft7Validator(load_schema())


class Host:
    """A connected client session plus what it saw that was not a response."""

    def __init__(self, session: ClientSession, stray: list[Any]) -> None:
        self.session = session
        self.stray = stray

    async def call(self, tool: str, **arguments: Any) -> tuple[bool, dict[str, Any]]:
        result = await self.session.call_tool(tool, arguments)
        document = result.structured_content
        assert document is not None, result
        # The text content is the same document (for hosts that only read text).
        assert [json.loads(block.text) for block in result.content if block.type == "text"] == [document]
        return bool(result.is_error), document


@asynccontextmanager
async def connect(root: Path, env: dict[str, str], cwd: Path, **extra: str) -> AsyncIterator[Host]:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "agent_exec", "--root", str(root), "mcp"],
        env={**env, **extra},
        cwd=cwd,
    )
    stray: list[Any] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, Exception):  # e.g. a line on stdout that is not JSON-RPC
            stray.append(message)

    async with (
        stdio_client(params) as (read, write),
        ClientSession(read, write, message_handler=on_message) as session,
    ):
        await session.initialize()
        yield Host(session, stray)
    assert not stray, stray


@pytest.mark.asyncio
async def test_every_tool_returns_the_cli_document(
    root: Path, cli_env: dict[str, str], tmp_path: Path, cli: Cli, validator: jsonschema.Draft7Validator
) -> None:
    stdin_file = tmp_path / "in.txt"
    stdin_file.write_text("from a file\n")
    async with connect(root, cli_env, tmp_path) as host:
        tools = {tool.name: tool for tool in (await host.session.list_tools()).tools}
        assert set(tools) == {"run", "status", "tail", "wait", "kill", "list", "restart"}
        run_schema = tools["run"].input_schema
        assert run_schema["required"] == ["command"]
        assert {"type": "string"} in run_schema["properties"]["command"]["anyOf"]
        assert run_schema["properties"]["timeout"]["minimum"] == 0
        assert tools["wait"].input_schema["required"] == ["job_id"]
        assert all(tool.output_schema is not None for tool in tools.values())

        error, run = await host.call(
            "run", command=["sh", "-c", "cat; echo $K"], env={"K": "v"}, stdin="hi\n", tags=["mcp.t"]
        )
        assert not error and run["type"] == "run" and run["state"] == "exited", run
        assert run["stdout"] == "hi\nv\n" and run["tags"] == ["mcp.t"] and run["env_vars"] == ["K=v"]
        job_id = run["job_id"]
        for tool, arguments, command in [
            ("status", {"job_id": job_id}, ["status", job_id]),
            ("tail", {"job_id": job_id, "lines": 1}, ["tail", "--tail-lines", "1", job_id]),
            ("wait", {"job_id": job_id, "until": 5}, ["wait", "--until", "5", job_id]),
            ("list", {"tags": ["mcp.*"]}, ["list", "--tag", "mcp.*"]),
        ]:
            error, document = await host.call(tool, **arguments)
            assert not error and document == cli(*command).doc, tool
            validator.validate(document)
        assert document["jobs"][0]["command"] == ["sh", "-c", "cat; echo $K"]

        error, from_file = await host.call(
            "run", command="cat", stdin_file=str(stdin_file), cwd=str(tmp_path)
        )
        assert not error and from_file["stdout"] == "from a file\n"
        error, killed = await host.call("kill", job_id=job_id)
        assert not error and killed["state"] == "exited"  # already finished: reported as is
        error, long = await host.call("run", command="echo up; sleep 60", timeout=120)
        assert not error and long["state"] == "running" and long["stdout"] == "up\n"
        error, killed = await host.call("kill", job_id=long["job_id"], signal="KILL")
        assert not error and killed["state"] == "killed" and killed["terminated_signal"] == "9"
        error, restarted = await host.call("restart", job_id=job_id)
        assert not error and restarted["type"] == "restart" and restarted["stdout"] == "hi\nv\n"
        assert restarted["job_id"] == job_id and restarted["joined"] is False
        for document in (run, from_file, killed, restarted):
            validator.validate(document)

        (root / "abc1").mkdir()
        (root / "abc2").mkdir()
        for tool, arguments, code in [
            ("status", {"job_id": "nope"}, "job_not_found"),
            ("status", {"job_id": "abc"}, "ambiguous_job_id"),
            ("kill", {"job_id": job_id, "signal": "NOPE"}, "invalid_signal"),
            ("run", {"command": 5}, "invalid_argument"),
            ("run", {"command": []}, "invalid_argument"),
            ("run", {"command": "x", "stdin": "a", "stdin_file": "b"}, "invalid_argument"),
            ("run", {"command": "x", "env": {"A=B": "c"}}, "invalid_argument"),
            ("run", {"command": "x", "tags": ["bad tag"]}, "invalid_tag"),
            ("run", {"command": "x", "timeout": -1}, "invalid_argument"),
            ("wait", {"job_id": job_id, "until": "soon"}, "invalid_argument"),
            ("list", {"state": "bogus"}, "invalid_argument"),
            ("tail", {}, "invalid_argument"),
            ("no_such_tool", {}, "invalid_argument"),
        ]:
            error, document = await host.call(tool, **arguments)
            assert error and document["ok"] is False, (tool, arguments, document)
            assert document["error"]["code"] == code, (tool, arguments, document)
            validator.validate(document)
        error, status = await host.call("status", job_id=job_id)  # still serving
        assert not error and status["state"] == "exited"


@pytest.mark.asyncio
async def test_observing_calls_are_clamped(root: Path, cli_env: dict[str, str], tmp_path: Path) -> None:
    limits = {"AGENT_EXEC_MCP_DEFAULT_UNTIL_SECONDS": "1", "AGENT_EXEC_MCP_MAX_UNTIL_SECONDS": "2"}
    async with connect(root, cli_env, tmp_path, **limits) as host:
        error, run = await host.call("run", command="sleep 60")
        assert not error and run["state"] == "running" and 900 <= run["waited_ms"] < 2000, run
        started = time.monotonic()
        error, waited = await host.call("wait", job_id=run["job_id"], until=1000)
        assert not error and waited["state"] == "running"
        assert time.monotonic() - started < 30  # clamped to 2 s, not 1000 s
        error, restarted = await host.call("restart", job_id=run["job_id"], until=1e9)
        assert not error and restarted["state"] == "running" and restarted["waited_ms"] < 2000
        error, killed = await host.call("kill", job_id=run["job_id"], signal="KILL")
        assert not error and killed["state"] == "killed"


def test_bad_deadline_configuration_is_refused(root: Path, cli_env: dict[str, str]) -> None:
    env = {**cli_env, "AGENT_EXEC_MCP_MAX_UNTIL_SECONDS": "forever"}
    argv = [sys.executable, "-m", "agent_exec", "--root", str(root), "mcp"]
    proc = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    assert proc.returncode == 1 and proc.stdout == b""
    assert b"AGENT_EXEC_MCP_MAX_UNTIL_SECONDS" in proc.stderr


def _gone_or_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True


def test_hundred_jobs_then_host_killed_mid_wait(root: Path, cli_env: dict[str, str], cli: Cli) -> None:
    host_script = Path(__file__).with_name("mcp_host.py")
    env = {**cli_env, "AGENT_EXEC_MCP_MAX_UNTIL_SECONDS": "20"}
    marker = root.parent / "finished"
    command = f"sleep 2; echo done; echo x >> {marker}"
    with subprocess.Popen(
        [sys.executable, str(host_script), str(root), "100", command],
        env=env,
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    ) as host:
        try:
            assert host.stdout is not None
            line = host.stdout.readline()
            assert line, "the host died before reporting"
            report = json.loads(line)
        finally:
            os.killpg(host.pid, signal.SIGKILL)  # the host (and its stdio client) dies mid-wait
    assert len(set(report["ids"])) == 100
    assert report["zombies"] == 0
    assert report["fds_after_all"] - report["fds_after_10"] <= 3, report
    # The server sees its stdin close and exits on its own; the jobs run to completion.
    server = report["server"]
    poll_until(lambda: _gone_or_zombie(server), timeout=60)
    poll_until(lambda: marker.exists() and len(marker.read_text().split()) == 100, timeout=60)

    def all_exited() -> list[dict[str, Any]] | None:
        rows: list[dict[str, Any]] = cli("list", "--all", "--limit", "0").doc["jobs"]
        return rows if rows and all(row["state"] == "exited" for row in rows) else None

    rows = poll_until(all_exited, timeout=30)
    assert {row["job_id"] for row in rows} == {*report["ids"], report["waited_on"]}
    assert all(row["command"] == [command] for row in rows if row["job_id"] != report["waited_on"])
    assert cli("tail", report["waited_on"]).doc["stdout"] == "waited\n"  # the job waited on, too
    assert cli("tail", report["ids"][-1]).doc["stdout"] == "done\n"
