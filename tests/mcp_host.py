"""A stand-in agent host for tests/test_mcp.py: it starts ``agent-exec mcp`` through the
SDK's stdio client, runs N jobs through it, starts a long ``wait`` call, then reports what it
measured on the server as one JSON line, and stays in that call until the test kills it.

Usage: python tests/mcp_host.py ROOT JOBS COMMAND
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import anyio
from mcp import ClientSession, StdioServerParameters, stdio_client


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry))
    return found


def zombies(pid: int) -> int:
    count = 0
    for child in children(pid):
        try:
            if Path(f"/proc/{child}/stat").read_text().rpartition(")")[2].split()[0] == "Z":
                count += 1
        except OSError:
            pass
    return count


def is_mcp_server(pid: int) -> bool:
    return b"mcp" in Path(f"/proc/{pid}/cmdline").read_bytes()


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def main(root: str, jobs: int, command: str) -> None:
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "agent_exec", "--root", root, "mcp"], env=dict(os.environ)
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        (server,) = [pid for pid in children(os.getpid()) if is_mcp_server(pid)]
        ids: list[str] = []

        async def run_one() -> None:
            result = await session.call_tool("run", {"command": command, "until": 0})
            assert not result.is_error, result.structured_content
            assert result.structured_content is not None
            ids.append(result.structured_content["job_id"])

        async def run_many(count: int) -> None:
            async with anyio.create_task_group() as group:
                for _ in range(count):
                    group.start_soon(run_one)

        await run_many(10)
        fds_after_10 = fd_count(server)
        await run_many(jobs - 10)
        for job_id in ids:  # every job observed once more (status, tail) from the server
            assert not (await session.call_tool("status", {"job_id": job_id})).is_error
        report: dict[str, object] = {
            "server": server,
            "ids": ids,
            "fds_after_10": fds_after_10,
            "fds_after_all": fd_count(server),
            "zombies": zombies(server),
        }
        long = await session.call_tool("run", {"command": "sleep 5; echo waited", "until": 0})
        assert long.structured_content is not None
        report["waited_on"] = long.structured_content["job_id"]
        async with anyio.create_task_group() as group:

            async def wait_long() -> None:
                await session.call_tool("wait", {"job_id": report["waited_on"], "until": 1000})
                print("wait returned", flush=True)

            group.start_soon(wait_long)
            await anyio.sleep(1)  # the wait request is out: the test kills us mid-call
            print(json.dumps(report), flush=True)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], int(sys.argv[2]), sys.argv[3])
