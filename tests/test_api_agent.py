"""Agent-loop scenarios (``agent_loop.py``) under asyncio, with pytest-asyncio (strict)."""

from __future__ import annotations

from pathlib import Path

import pytest

import agent_loop
from conftest import Cli


@pytest.mark.asyncio
async def test_concurrent_commands_feed_their_output_onward(root: Path) -> None:
    await agent_loop.concurrent_commands_feed_onward(root)


@pytest.mark.asyncio
async def test_streaming_until_a_marker_line(root: Path) -> None:
    await agent_loop.stream_until_marker(root)


@pytest.mark.asyncio
async def test_stream_yields_every_byte_of_runner_and_cli_jobs(root: Path, cli: Cli) -> None:
    started = cli("run", "--no-wait", "--", "sh", "-c", "seq 1 50000; seq 1 3000 >&2")
    await agent_loop.stream_yields_every_byte(root, started.doc["job_id"])


@pytest.mark.asyncio
async def test_a_deadline_kills_the_job(root: Path) -> None:
    await agent_loop.deadline_kills_the_job(root)


@pytest.mark.asyncio
async def test_a_queued_job_can_be_cancelled(root: Path, tmp_path: Path) -> None:
    await agent_loop.queued_job_cancel(root, tmp_path)


@pytest.mark.asyncio
async def test_path_is_preserved_and_a_missing_program_fails_cleanly(root: Path, tmp_path: Path) -> None:
    await agent_loop.path_is_preserved(root, tmp_path)


@pytest.mark.asyncio
async def test_timed_out_jobs_are_never_ok_and_wait_does_not_wait_for_kill_after(root: Path) -> None:
    await agent_loop.timeouts_and_results(root)


@pytest.mark.asyncio
async def test_stdin_accepts_text_bytes_paths_and_async_iterables(root: Path, tmp_path: Path) -> None:
    await agent_loop.stdin_kinds(root, tmp_path)


@pytest.mark.asyncio
async def test_gc_and_delete_from_the_library(root: Path) -> None:
    await agent_loop.cleanup(root)


@pytest.mark.asyncio
async def test_max_concurrency_bounds_detached_jobs(root: Path, tmp_path: Path) -> None:
    await agent_loop.detached_jobs_respect_max_concurrency(root, tmp_path)


@pytest.mark.asyncio
async def test_queuing_400_jobs_yields_to_the_event_loop(root: Path) -> None:
    await agent_loop.queuing_yields_to_the_loop(root)


@pytest.mark.asyncio
async def test_notification_sinks_of_a_library_job_run_through_a_shell(root: Path, tmp_path: Path) -> None:
    await agent_loop.notification_sinks_run_through_a_shell(root, tmp_path)


@pytest.mark.asyncio
async def test_waiting_on_finished_jobs_yields_to_the_event_loop(root: Path) -> None:
    await agent_loop.waiting_on_finished_jobs_yields(root)


@pytest.mark.asyncio
async def test_a_queued_job_whose_directory_vanished_fails_cleanly(root: Path) -> None:
    await agent_loop.vanished_queued_job_fails_cleanly(root)


@pytest.mark.asyncio
async def test_state_records_are_exchanged_not_replaced(root: Path) -> None:
    await agent_loop.records_are_exchanged_not_replaced(root)
