"""Watching Ray jobs from here: the local half of a Ray job.

A Ray job's record lives in our store like any other (``meta.json``, ``state.json``, the
logs); the head's memory only holds Ray's copy, which is gone after ``ray stop``. The
*watcher* keeps the local record current: it polls the head for the job's status, pulls
the driver log back and splits it into ``stdout.log``/``stderr.log``/``full.log``
(:class:`~agent_exec._backends.ray_entry.FrameDecoder`), delivers notifications, and
writes the terminal state once every byte is in the logs. Like a supervisor it holds the
job's ``supervisor.lock`` for as long as it watches, so a watcher that dies is reported
``failed`` / ``supervisor_lost`` by every reader, and ``wait`` wakes when it finishes.

For a :class:`~agent_exec.JobRunner` the watcher is a task of the runner's task group,
and one :class:`StatusPoller` serves all of the runner's Ray jobs (one request per round,
however many jobs). For the CLI it is a detached process per job (``python -m
agent_exec._backends.ray_watch``), started by ``run``/``start`` after the submission.

Client calls block, so they run in worker threads (never on the event loop); the log is
pulled with plain requests rather than Ray's websocket tail, which only works under
asyncio, so the watcher runs under trio as well.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from .._logs import LogWriter
from .._models import JobState, JobStatus
from .._notify import Notifier
from .._paths import FULL_LOG, STDERR_LOG, STDOUT_LOG
from .._spec import LaunchSpec
from .._store import write_state
from .._timeutil import now_ts
from .ray_client import HeadUnreachable, RayJobMissing, RayRequestFailed, call
from .ray_entry import FrameDecoder

__all__ = ["StatusPoller", "follow_job", "stop_reason"]

#: Ray's job statuses after which nothing changes any more.
RAY_TERMINAL = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
#: How often a running job's output is pulled back (the whole driver log each time).
LOG_INTERVAL = 1.0
#: After Ray reports the end, how long to keep pulling for the entrypoint's final frame.
FINAL_FRAME_WAIT = 3.0


def lost_after_default() -> float:
    """Seconds without an answer from the head before its jobs are recorded ``failed``
    (``AGENT_EXEC_RAY_LOST_AFTER``, default 15)."""
    try:
        return max(0.5, float(os.environ.get("AGENT_EXEC_RAY_LOST_AFTER", "15")))
    except ValueError:
        return 15.0


def _status(info: Any) -> str:
    status = getattr(info, "status", "")
    return str(getattr(status, "value", status))


class StatusPoller:
    """One polling loop for every watched job of one head.

    Each round asks the head once (``get_job_info`` for a few jobs, ``list_jobs`` for
    many) and wakes every waiter. The loop runs only while somebody watches, so it never
    keeps a task group open by itself.
    """

    def __init__(
        self,
        client: Any,
        task_group: anyio.abc.TaskGroup,
        *,
        limiter: anyio.CapacityLimiter,
        interval: float = 0.25,
        lost_after: float | None = None,
    ) -> None:
        self._client = client
        self._tg = task_group
        self._limiter = limiter
        self._interval = interval
        self.lost_after = lost_after_default() if lost_after is None else lost_after
        self._watched: dict[str, int] = {}
        self._infos: dict[str, Any] = {}
        self._missing: dict[str, int] = {}
        self._round = anyio.Event()
        self._running = False
        self._failure: RayRequestFailed | None = None
        self._failing_since: float | None = None

    @contextlib.contextmanager
    def watching(self, submission_id: str) -> Any:
        self._watched[submission_id] = self._watched.get(submission_id, 0) + 1
        if not self._running:
            self._running = True
            self._tg.start_soon(self._loop, name="agent-exec ray status poller")
        try:
            yield
        finally:
            self._watched[submission_id] -= 1
            if not self._watched[submission_id]:
                del self._watched[submission_id]
                self._infos.pop(submission_id, None)
                self._missing.pop(submission_id, None)

    async def _loop(self) -> None:
        try:
            while self._watched:
                await self._poll_once()
                round_done, self._round = self._round, anyio.Event()
                round_done.set()
                # ``list_jobs`` returns every job the head knows: ask it less often.
                many = len(self._watched) > 4
                await anyio.sleep(max(self._interval, 1.0) if many else self._interval)
        finally:
            self._running = False

    async def _poll_once(self) -> None:
        wanted = list(self._watched)
        try:
            if len(wanted) <= 4:
                infos: dict[str, Any] = {}
                for sid in wanted:
                    try:
                        infos[sid] = await self._thread(self._client.get_job_info, sid)
                    except RayJobMissing:
                        infos[sid] = None
            else:
                listing = await self._thread(self._client.list_jobs)
                infos = {str(getattr(info, "submission_id", "")): info for info in listing}
        except RayRequestFailed as exc:
            self._failure = exc
            if self._failing_since is None:
                self._failing_since = time.monotonic()
            return
        self._failure, self._failing_since = None, None
        for sid in wanted:
            info = infos.get(sid)
            if info is None:
                self._missing[sid] = self._missing.get(sid, 0) + 1
            else:
                self._missing.pop(sid, None)
                self._infos[sid] = info

    async def _thread(self, method: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(lambda: call(method, *args), limiter=self._limiter)

    async def next_info(self, submission_id: str) -> Any:
        """The job's details after the next polling round.

        :raises HeadUnreachable: the head has not answered for ``lost_after`` seconds.
        :raises RayJobMissing: the head answered three rounds in a row without the job.
        """
        await self._round.wait()
        if self._failing_since is not None and time.monotonic() - self._failing_since >= self.lost_after:
            assert self._failure is not None
            raise HeadUnreachable(str(self._failure))
        if self._missing.get(submission_id, 0) >= 3:
            raise RayJobMissing(f"the Ray head does not know job {submission_id}")
        return self._infos.get(submission_id)


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def stop_reason(info: Any) -> str:
    message = getattr(info, "message", None) or ""
    return _short(str(message))


class _Follower:
    """The local record of one Ray job while it is watched."""

    def __init__(self, spec: LaunchSpec, started_at: str) -> None:
        self.spec = spec
        self.started_at = started_at
        self.decoder = FrameDecoder(spec.job_id)
        job_dir = spec.job_dir
        full_log = spec.full_log or job_dir / FULL_LOG
        self.writer = LogWriter(job_dir / STDOUT_LOG, job_dir / STDERR_LOG, full_log)
        self.writer_closed = False

    def absorb(self, text: str) -> bool:
        """Append the new output of ``text`` (the whole driver log) to the logs; True if any."""
        wrote = False
        for stream, data in self.decoder.feed(text):
            self.writer.write(stream, data)
            wrote = True
        return wrote

    def close_writer(self) -> None:
        if not self.writer_closed:
            self.writer_closed = True
            with contextlib.suppress(OSError):
                self.writer.close()

    def state(self, status: JobStatus, **fields: Any) -> JobState:
        now = now_ts()
        return JobState(
            job_id=self.spec.job_id,
            status=status,
            updated_at=now,
            started_at=self.started_at,
            finished_at=now,
            **fields,
        )

    def failed(self, reason: str) -> JobState:
        return self.state(JobStatus.FAILED, reason=reason)

    def terminal(self, info: Any) -> JobState:
        """The terminal record, from the entrypoint's own report when there is one."""
        status = _status(info)
        decoder = self.decoder
        if decoder.spawn_failure is not None:
            return self.failed(decoder.spawn_failure)
        outcome = decoder.outcome
        if outcome is not None:
            reason = "timeout" if outcome.timed_out else ("stopped" if status == "STOPPED" else None)
            if outcome.returncode < 0:
                return self.state(
                    JobStatus.KILLED,
                    signal=str(-outcome.returncode),
                    duration_ms=outcome.duration_ms,
                    reason=reason,
                )
            return self.state(
                JobStatus.EXITED, exit_code=outcome.returncode, duration_ms=outcome.duration_ms, reason=reason
            )
        if status == "STOPPED":
            # Stopped before the workload could report (e.g. SIGKILLed after Ray's grace).
            return self.state(JobStatus.KILLED, reason="stopped")
        code = getattr(info, "driver_exit_code", None)
        detail = stop_reason(info)
        if status == "SUCCEEDED":
            return self.failed("ray_job_incomplete: the entrypoint exited 0 without reporting its workload")
        return self.failed(f"ray_job_failed: exit code {code}: {detail}" if detail else "ray_job_failed")


async def follow_job(
    spec: LaunchSpec,
    client: Any,
    poller: StatusPoller,
    notifier: Notifier,
    *,
    started_at: str,
    limiter: anyio.CapacityLimiter,
    on_output: Callable[[], None] | None = None,
    on_terminal: Callable[[JobState], None] | None = None,
) -> JobState:
    """Keep one submitted job's record current until it is terminal; write and return
    that state.

    Output reaches the logs as it is pulled; the terminal state is written only after the
    entrypoint's final frame (every byte of output) is in, or after
    :data:`FINAL_FRAME_WAIT` if it never comes (entrypoint killed). The caller then
    releases the lock and delivers the completion notification.
    """
    follower = _Follower(spec, started_at)
    notifier.attach(follower.writer)
    sid = spec.job_id

    async def pull() -> bool:
        try:
            text = await anyio.to_thread.run_sync(
                lambda: call(client.get_job_logs, sid), limiter=limiter, abandon_on_cancel=True
            )
        except RayRequestFailed:
            return False
        if follower.absorb(text) and on_output is not None:
            on_output()
        return True

    state: JobState | None = None
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(notifier.run)
            with poller.watching(sid):
                last_pull = -math.inf
                while state is None:
                    try:
                        info = await poller.next_info(sid)
                    except HeadUnreachable as exc:
                        state = follower.failed(f"ray_head_unreachable: {_short(str(exc))}")
                        break
                    except RayJobMissing as exc:
                        state = follower.failed(f"ray_job_lost: {_short(str(exc))}")
                        break
                    status = _status(info) if info is not None else "PENDING"
                    if status in RAY_TERMINAL:
                        deadline = time.monotonic() + FINAL_FRAME_WAIT
                        while True:
                            await pull()
                            decoder = follower.decoder
                            if decoder.outcome or decoder.spawn_failure or time.monotonic() >= deadline:
                                break
                            await anyio.sleep(0.2)
                        state = follower.terminal(info)
                    elif status == "RUNNING" and time.monotonic() - last_pull >= LOG_INTERVAL:
                        last_pull = time.monotonic()
                        await pull()
            follower.close_writer()
            await notifier.drain()
            write_state(spec.job_dir, state)
            if on_terminal is not None:
                on_terminal(state)
            tg.cancel_scope.cancel()
    finally:
        follower.close_writer()
    assert state is not None
    return state


# -- the detached watcher of CLI jobs ----------------------------------------------------


def spawn_detached(
    job_dir: Path, address: str, lock_fd: int, started_at: str, full_log: Path | None = None
) -> int:
    """Start the detached watcher of one submitted job and return its pid; it inherits the
    locked ``lock_fd``. It is forked once more and re-parented to init (nobody has to
    reap it, as with the detached supervisor)."""
    import subprocess

    argv = [
        sys.executable,
        "-m",
        "agent_exec._backends.ray_watch",
        str(job_dir),
        address,
        str(lock_fd),
        started_at,
        str(full_log or ""),
    ]
    process = subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        pass_fds=(lock_fd,),
        start_new_session=True,
        check=True,
    )
    return int(process.stdout)


async def _watch_main(
    job_dir: Path, address: str, lock_fd: int, started_at: str, full_log: Path | None
) -> None:
    from .._jobs import launch_spec
    from .._store import read_meta
    from .ray_client import connect

    meta = read_meta(job_dir)
    spec = launch_spec(job_dir, meta, env_pairs=[], cwd=meta.cwd, full_log=full_log)
    limiter = anyio.CapacityLimiter(4)
    lost_after = lost_after_default()
    client: Any = None
    deadline = time.monotonic() + lost_after
    while client is None:
        try:
            client = await anyio.to_thread.run_sync(connect, address)
        except Exception as exc:
            if time.monotonic() >= deadline:
                now = now_ts()
                write_state(
                    job_dir,
                    JobState(
                        job_id=meta.job_id,
                        status=JobStatus.FAILED,
                        updated_at=now,
                        started_at=started_at,
                        finished_at=now,
                        reason=f"ray_head_unreachable: {_short(str(exc))}",
                    ),
                )
                return
            await anyio.sleep(0.5)
    notifier = Notifier(spec)
    async with anyio.create_task_group() as tg:
        poller = StatusPoller(client, tg, limiter=limiter, lost_after=lost_after)
        state = await follow_job(spec, client, poller, notifier, started_at=started_at, limiter=limiter)
    os.close(lock_fd)
    await notifier.completion(state)


def main() -> None:  # pragma: no cover - runs as the detached watcher process
    """``python -m agent_exec._backends.ray_watch JOB_DIR ADDRESS LOCK_FD STARTED_AT FULL_LOG``:
    fork, print the watcher's pid, exit; the watcher keeps the job's record current."""
    job_dir, address, lock_fd, started_at, full_log = sys.argv[1:6]
    child = os.fork()
    if child:
        sys.stdout.write(f"{child}\n")
        sys.stdout.flush()
        os._exit(0)
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for target in (0, 1, 2):
        os.dup2(devnull, target)
    os.close(devnull)
    try:
        import setproctitle

        setproctitle.setproctitle(f"agent-exec _ray_watch --job-id {Path(job_dir).name}")
    except Exception:
        pass
    try:
        log = Path(full_log) if full_log else None
        anyio.run(_watch_main, Path(job_dir), address, int(lock_fd), started_at, log)
    finally:
        os._exit(0)


if __name__ == "__main__":  # pragma: no cover
    main()
