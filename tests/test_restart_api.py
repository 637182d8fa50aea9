"""``JobRunner.restart`` / ``Job.restart`` (thin wrappers over the store's restart) and
``JobSummary.command``, under asyncio and trio (anyio's pytest plugin only)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent_exec import InvalidSignal, InvalidState, JobNotFound, JobRunner, JobStatus
from conftest import Cli, py

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_restart_a_runner_job_and_a_cli_job(root: Path, cli: Cli, tmp_path: Path) -> None:
    counter = tmp_path / "count"
    code = (
        f"import pathlib; p = pathlib.Path({str(counter)!r})\n"
        "p.write_text(p.read_text() + 'x' if p.exists() else 'x')\n"
        "print(len(p.read_text()))\n"
    )
    async with JobRunner(root) as runner:
        job = await runner.run(py(code), tags=["lib"])
        first = await job.wait()
        assert first.ok
        same = await job.restart()
        assert same is job
        second = await job.wait(timeout=30)
        assert second.ok and second.state is JobStatus.EXITED
        assert job.stdout_log_path.read_text() == "2\n"  # the first run's output was cleared

        rows = await runner.list(tags=["lib"])
        assert [row.command for row in rows] == [tuple(py(code))]

        started = cli("run", "--no-wait", "--", "sleep", "60").doc
        other = await runner.restart(started["job_id"][:8], signal="KILL")
        assert other.job_id == started["job_id"]
        assert (await other.status()).state is JobStatus.RUNNING
        await other.kill("KILL", wait=True, timeout=10)

        with pytest.raises(InvalidSignal):
            await runner.restart(started["job_id"], signal="NOPE")
        with pytest.raises(JobNotFound):
            await runner.restart("nope")
        masked = await runner.run(["true"], env={"K": "v"}, mask=["K"])
        await masked.wait()
        with pytest.raises(InvalidState):
            await masked.restart()
