"""Agent-loop scenarios (``agent_loop.py``) under trio, with anyio's pytest plugin."""

from __future__ import annotations

from pathlib import Path

import pytest

import agent_loop
from conftest import Cli

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "trio"


async def test_concurrent_commands_feed_their_output_onward(root: Path) -> None:
    await agent_loop.concurrent_commands_feed_onward(root)


async def test_streaming_until_a_marker_line(root: Path) -> None:
    await agent_loop.stream_until_marker(root)


async def test_stream_yields_every_byte_of_runner_and_cli_jobs(root: Path, cli: Cli) -> None:
    started = cli("run", "--no-wait", "--", "sh", "-c", "seq 1 50000; seq 1 3000 >&2")
    await agent_loop.stream_yields_every_byte(root, started.doc["job_id"])


async def test_a_deadline_kills_the_job(root: Path) -> None:
    await agent_loop.deadline_kills_the_job(root)


async def test_a_queued_job_can_be_cancelled(root: Path, tmp_path: Path) -> None:
    await agent_loop.queued_job_cancel(root, tmp_path)


async def test_path_is_preserved_and_a_missing_program_fails_cleanly(root: Path, tmp_path: Path) -> None:
    await agent_loop.path_is_preserved(root, tmp_path)


async def test_timed_out_jobs_are_never_ok_and_wait_does_not_wait_for_kill_after(root: Path) -> None:
    await agent_loop.timeouts_and_results(root)


async def test_queuing_400_jobs_yields_to_the_event_loop(root: Path) -> None:
    await agent_loop.queuing_yields_to_the_loop(root)


async def test_waiting_on_finished_jobs_yields_to_the_event_loop(root: Path) -> None:
    await agent_loop.waiting_on_finished_jobs_yields(root)


async def test_a_queued_job_whose_directory_vanished_fails_cleanly(root: Path) -> None:
    await agent_loop.vanished_queued_job_fails_cleanly(root)


async def test_state_records_are_exchanged_not_replaced(root: Path) -> None:
    await agent_loop.records_are_exchanged_not_replaced(root)
