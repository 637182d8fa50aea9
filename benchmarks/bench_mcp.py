"""``agent-exec mcp`` over many jobs: does the server stay flat?

Starts the server through the MCP SDK's stdio client, then runs N jobs (``true``, default
N = 1,000) through its ``run`` tool, 50 calls in flight at a time, each followed by a
``wait``. After the first batch and at the end it reads the server's open file
descriptors, threads and RSS from ``/proc`` and counts its zombie children. The floor is
the first batch's reading (same run): a flat server ends within a few descriptors and
threads of it, and within 1.5x of its memory. Throughput (run + wait per job) is
reported beside it.

    .venv/bin/python benchmarks/bench_mcp.py [--jobs N] [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import anyio
from mcp import ClientSession, StdioServerParameters, stdio_client

from _util import Row, bench_env, compile_package, print_table, read_rss_mib, temp_root

IN_FLIGHT = 50


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


def _is_mcp(pid: int) -> bool:
    return b"mcp" in Path(f"/proc/{pid}/cmdline").read_bytes()


def _reading(pid: int) -> dict[str, float]:
    zombies = 0
    for child in _children(pid):
        try:
            if Path(f"/proc/{child}/stat").read_text().rpartition(")")[2].split()[0] == "Z":
                zombies += 1
        except OSError:
            pass
    return {
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": len(os.listdir(f"/proc/{pid}/task")),
        "rss": read_rss_mib(pid) or 0.0,
        "zombies": zombies,
    }


async def _measure(
    root: Path, env: dict[str, str], jobs: int
) -> tuple[dict[str, float], dict[str, float], float]:
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "agent_exec", "--root", str(root), "mcp"], env=env
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        (server,) = [pid for pid in _children(os.getpid()) if _is_mcp(pid)]

        async def one() -> None:
            result = await session.call_tool("run", {"command": "true", "until": 0})
            assert not result.is_error and result.structured_content is not None, result
            job_id = result.structured_content["job_id"]
            waited = await session.call_tool("wait", {"job_id": job_id, "until": 30})
            assert not waited.is_error and waited.structured_content is not None, waited

        async def batch(count: int) -> None:
            limit = anyio.Semaphore(IN_FLIGHT)

            async def guarded() -> None:
                async with limit:
                    await one()

            async with anyio.create_task_group() as group:
                for _ in range(count):
                    group.start_soon(guarded)

        first = min(IN_FLIGHT, jobs)
        await batch(first)
        floor = _reading(server)
        started = time.perf_counter()
        await batch(jobs - first)
        elapsed = time.perf_counter() - started
        return floor, _reading(server), (jobs - first) / elapsed if elapsed > 0 else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=1000, help="jobs run through the server (default 1000)")
    parser.add_argument("--quick", action="store_true", help="100 jobs: a smoke test")
    args = parser.parse_args(argv)
    jobs = 100 if args.quick else max(args.jobs, IN_FLIGHT + 1)

    compile_package()
    with temp_root() as base:
        env = bench_env(base / "cfg")
        floor, end, rate = anyio.run(_measure, base / "jobs", env, jobs)
    rows = [
        Row("open fds (+4 allowed)", floor["fds"], end["fds"], (floor["fds"] + 4) / floor["fds"], "fds"),
        Row(
            "threads (+4 allowed)",
            floor["threads"],
            end["threads"],
            (floor["threads"] + 4) / floor["threads"],
            "",
        ),
        Row("RSS", floor["rss"], end["rss"], 1.5, "MiB"),
        Row("zombie children", None, end["zombies"], 0, "", ok=end["zombies"] == 0),
        Row("run + wait per second (after the first batch)", None, rate, None, "jobs/s"),
    ]
    print_table(
        f"MCP server over {jobs} jobs ({IN_FLIGHT} calls in flight; floor = after {IN_FLIGHT} jobs)", rows
    )
    return 0 if all(row.verdict != "FAIL" for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
