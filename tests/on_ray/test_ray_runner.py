"""``JobRunner(backend=RayJobs(...))`` against a real Ray head, under asyncio and trio."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import anyio
import pytest

from agent_exec import BackendUnavailable, InvalidArgument, JobRunner, JobStatus, RayJobs

from ._head import LocalRayHead

# The first test also pays for starting the session head (slow on a loaded machine).
pytestmark = [pytest.mark.ray, pytest.mark.anyio, pytest.mark.timeout(900)]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_states_exit_codes_split_logs_cwd_env(
    ray_head: LocalRayHead, tmp_path: Path, anyio_backend: str
) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    async with JobRunner(tmp_path / "jobs", backend=RayJobs(ray_head.address)) as runner:
        ok = await runner.run('echo "out $FOO"; pwd; echo err >&2; exit 4', cwd=workdir, env={"FOO": "bar"})
        dead = await runner.run("echo bye; kill -TERM $$")
        nowhere = await runner.run("true", cwd=tmp_path / "missing")
        first, second, third = await ok.wait(), await dead.wait(), await nowhere.wait()
        assert (first.state, first.exit_code) == (JobStatus.EXITED, 4)
        assert first.stdout_log_path.read_bytes() == f"out bar\n{workdir.resolve()}\n".encode()
        assert first.stderr_log_path.read_bytes() == b"err\n"
        assert (second.state, second.signal) == (JobStatus.KILLED, signal.SIGTERM)
        assert second.stdout_log_path.read_bytes() == b"bye\n"
        assert third.state is JobStatus.FAILED
        assert third.reason is not None and third.reason.startswith("spawn_failed: working directory")
        # The record is the store's: any reader (the CLI too) sees the same.
        assert (await runner.job(ok.job_id).status()).exit_code == 4


async def test_kill_and_timeout(ray_head: LocalRayHead, tmp_path: Path) -> None:
    async with JobRunner(tmp_path / "jobs", backend=RayJobs(ray_head.address)) as runner:
        sleeper = await runner.run("echo ready; exec sleep 120")
        timed = await runner.run("exec sleep 120", timeout=1)
        with anyio.fail_after(90):
            while b"ready" not in sleeper.stdout_log_path.read_bytes():
                await anyio.sleep(0.2)
        await sleeper.kill()
        killed, timed_out = await sleeper.wait(), await timed.wait()
        assert (killed.state, killed.signal) == (JobStatus.KILLED, signal.SIGTERM)
        assert (timed_out.state, timed_out.signal, timed_out.reason) == (
            JobStatus.KILLED,
            signal.SIGTERM,
            "timeout",
        )
        with pytest.raises(InvalidArgument):
            await sleeper.kill(signal.SIGUSR1)  # Ray can only stop a job
        again = await sleeper.kill(wait=True)  # finished: nothing to stop, same record
        assert again.state is JobStatus.KILLED


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # ~1 job/s on 2 cores: once is enough
@pytest.mark.timeout(1800)
async def test_200_jobs_through_the_runner(ray_head: LocalRayHead, tmp_path: Path) -> None:
    limit = 16
    async with JobRunner(
        tmp_path / "jobs", backend=RayJobs(ray_head.address), max_concurrency=limit
    ) as runner:
        began = time.monotonic()
        jobs = [await runner.run(f"echo job-{index}") for index in range(200)]
        submitted = time.monotonic() - began
        peak = 0
        with anyio.fail_after(1700):
            while runner.statistics()["finished"] < len(jobs):
                peak = max(peak, runner.statistics()["running"])
                await anyio.sleep(0.1)
        results = [await job.wait() for job in jobs]
    assert submitted < 10, f"run() took {submitted:.1f}s for 200 jobs: submissions are serialized"
    assert peak <= limit
    assert all(result.ok for result in results), [r for r in results if not r.ok][:3]
    for index, job in enumerate(jobs):
        assert job.stdout_log_path.read_bytes() == f"job-{index}\n".encode()


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_unreachable_address_fails_at_open(tmp_path: Path) -> None:
    began = time.monotonic()
    with pytest.raises(BackendUnavailable, match=r"127\.0\.0\.1:9"):
        async with JobRunner(tmp_path / "jobs", backend=RayJobs("http://127.0.0.1:9")):
            pass
    assert time.monotonic() - began < 15


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_runner_cancelled_stops_its_ray_jobs(ray_head: LocalRayHead, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        async with JobRunner(tmp_path / "jobs", backend=RayJobs(ray_head.address)) as runner:
            job = await runner.run("echo up; exec sleep 120")
            with anyio.fail_after(90):
                while b"up" not in job.stdout_log_path.read_bytes():
                    await anyio.sleep(0.2)
            raise RuntimeError("boom")
    result = await job.status()
    assert (result.state, result.reason) == (JobStatus.KILLED, "runner_cancelled")
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(ray_head.address)
    with anyio.fail_after(30):
        while str(client.get_job_status(job.job_id)).split(".")[-1] not in ("STOPPED", "FAILED", "SUCCEEDED"):
            await anyio.sleep(0.5)
