"""The Ray backend: jobs run on a Ray cluster through Ray Jobs.

A job's entrypoint is the self-contained program of :mod:`.ray_entry` (no agent-exec
needed on the workers); its submission id is our job id; its definition (command, cwd,
env, stdin, timeout) travels in the submission's ``runtime_env``. The local store keeps
the full record, kept current by the watcher (:mod:`.ray_watch`).

What differs from a local job, by the nature of a cluster: the job runs in the worker's
environment (``inherit_env`` inherits the *worker's* variables, env files are read here
at submission), its cwd must exist on the worker (without ``cwd``, the submitter's
directory is used when the worker has it, else Ray's default), stdin is limited to
64 KiB, ``kill`` can only stop it (Ray sends SIGTERM, then SIGKILL 3 s later), and
output arrives in the local logs about once a second instead of as it is written.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal as signal_module
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from .._errors import BackendUnavailable, InvalidArgument, RunnerClosed
from .._models import JobMeta, JobState, JobStatus, WorkloadIdentity
from .._paths import STDIN_FILE
from .._process import build_argv, build_env, resolve_signal
from .._spec import LaunchSpec
from .._store import read_meta, read_state, read_state_raw, write_state
from .._timeutil import now_ts
from .ray_client import RayRequestFailed, call, connect, default_timeouts
from .ray_entry import JOB_VAR, MAX_STDIN, build_entrypoint, encode_job

__all__ = ["RayJobs", "prepare_submission", "stop_ray_job", "stop_signal_ok", "submit"]

#: Signals whose intent Ray's ``stop_job`` carries out (it cannot deliver any other).
STOP_SIGNALS = frozenset(
    getattr(signal_module, name) for name in ("SIGTERM", "SIGINT", "SIGHUP", "SIGKILL", "SIGQUIT")
)


def stop_signal_ok(signal: str | int) -> signal_module.Signals:
    """The signal, if stopping a Ray job is what it asks for.

    :raises InvalidSignal: unknown name. :raises InvalidArgument: a signal Ray cannot send.
    """
    signum = resolve_signal(str(signal))
    if signum not in STOP_SIGNALS:
        raise InvalidArgument(
            f"signal {signum.name} cannot be sent to a Ray job: Ray Jobs can only stop a job "
            "(SIGTERM, then SIGKILL after 3 s); use TERM, INT, HUP, QUIT or KILL"
        )
    return signum


def prepare_submission(
    spec: LaunchSpec,
    meta: JobMeta,
    *,
    entrypoint_num_cpus: float | None = None,
    entrypoint_resources: dict[str, float] | None = None,
) -> dict[str, Any] | str:
    """The ``submit_job`` arguments of a job, or the ``spawn_failed`` reason it cannot run
    (an unreadable env file, stdin too large), exactly as a local spawn failure reads."""
    try:
        env = build_env(inherit=False, env_files=spec.env_files, env_pairs=spec.env_pairs)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        name = getattr(exc, "filename", None)
        return f"spawn_failed: {detail}" + (f": {name}" if name else "")
    stdin: bytes | None = None
    if spec.stdin_file is not None:
        path = Path(spec.stdin_file)
        if not path.is_absolute():
            path = spec.job_dir / (spec.stdin_file or STDIN_FILE)
        try:
            with open(path, "rb") as file:
                stdin = file.read(MAX_STDIN + 1)
        except OSError as exc:
            return f"spawn_failed: cannot read stdin: {exc.strerror or exc}"
        if len(stdin) > MAX_STDIN:
            return f"spawn_failed: stdin of a Ray job is limited to {MAX_STDIN} bytes"
    blob = encode_job(
        nonce=spec.job_id,
        argv=build_argv(spec.wrapper, spec.command),
        cwd=meta.cwd,
        cwd_optional=spec.cwd is None,
        env=env,
        inherit_env=spec.inherit_env,
        stdin=stdin,
        timeout_s=float(math.ceil(spec.timeout_s)) if spec.timeout_s > 0 else 0.0,
        kill_after_s=float(math.ceil(spec.kill_after_s)) if spec.kill_after_s > 0 else 0.0,
    )
    submission: dict[str, Any] = {
        "entrypoint": build_entrypoint(),
        "submission_id": spec.job_id,
        "runtime_env": {"env_vars": {JOB_VAR: blob}},
        "metadata": {"agent_exec_job_id": spec.job_id, "agent_exec_root": str(spec.job_dir.parent)},
    }
    if entrypoint_num_cpus is not None:
        submission["entrypoint_num_cpus"] = entrypoint_num_cpus
    if entrypoint_resources:
        submission["entrypoint_resources"] = dict(entrypoint_resources)
    return submission


#: How long a submission is retried while the head says it is not ready yet (a head that
#: just started has no job agent for a few seconds).
SUBMIT_RETRY_FOR = 30.0


def submit(client: Any, submission: dict[str, Any]) -> None:
    """Submit one job (blocking). :raises RayRequestFailed: with the head's answer."""
    deadline = time.monotonic() + SUBMIT_RETRY_FOR
    delay = 0.2
    while True:
        try:
            call(client.submit_job, **submission)
            return
        except RayRequestFailed as exc:
            if "try again later" not in str(exc) or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 2.0)


def _closed(fd: int | None) -> None:
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)


class RayJobs:
    """Run a :class:`~agent_exec.JobRunner`'s jobs on a Ray cluster through Ray Jobs.

    Usage::

        async with JobRunner(backend=RayJobs("http://127.0.0.1:8265"), max_concurrency=32) as runner:
            job = await runner.run(["python", "eval.py"], cwd="/data/evals")
            result = await job.wait()

    - ``address``: the Jobs API (the dashboard's HTTP address), default
      ``$AGENT_EXEC_RAY_ADDRESS``, then ``http://127.0.0.1:8265``.
    - ``connect_timeout``: seconds to reach the head (default 5, or
      ``$AGENT_EXEC_RAY_TIMEOUT``); the runner connects on ``__aenter__`` and raises
      :class:`~agent_exec.BackendUnavailable` if Ray is not installed or the head does not
      answer.
    - ``entrypoint_num_cpus``/``entrypoint_resources``: Ray resources reserved per job.
    - ``lost_after``: seconds without an answer from the head before its jobs are
      recorded ``failed`` (``ray_head_unreachable: ...``); default 15 or
      ``$AGENT_EXEC_RAY_LOST_AFTER``.

    ``runner.run`` returns as soon as the job is recorded locally; submissions go out
    concurrently from worker threads (at most ``max_client_threads`` requests at once),
    so many jobs are never serialized on round trips. One polling loop watches all of the
    runner's jobs.
    """

    kind = "ray"

    def __init__(
        self,
        address: str | None = None,
        *,
        connect_timeout: float | None = None,
        entrypoint_num_cpus: float | None = None,
        entrypoint_resources: dict[str, float] | None = None,
        lost_after: float | None = None,
        poll_interval: float = 0.25,
        max_client_threads: int = 16,
    ) -> None:
        from .ray_client import DEFAULT_ADDRESS

        self.address = (address or os.environ.get("AGENT_EXEC_RAY_ADDRESS") or DEFAULT_ADDRESS).rstrip("/")
        connect_default, read_timeout = default_timeouts()
        self._timeouts = (connect_timeout if connect_timeout is not None else connect_default, read_timeout)
        self.entrypoint_num_cpus = entrypoint_num_cpus
        self.entrypoint_resources = entrypoint_resources
        self.lost_after = lost_after
        self.poll_interval = poll_interval
        self._max_threads = max_client_threads
        self._client: Any = None
        self._limiter: anyio.CapacityLimiter | None = None
        self._poller: Any = None

    def __repr__(self) -> str:
        return f"RayJobs(address={self.address!r})"

    def record(self) -> dict[str, Any] | None:
        return {"kind": self.kind, "address": self.address}

    async def open(self, task_group: anyio.abc.TaskGroup) -> None:
        from .ray_watch import StatusPoller

        self._limiter = anyio.CapacityLimiter(self._max_threads)
        self._client = await anyio.to_thread.run_sync(connect, self.address, self._timeouts)
        self._poller = StatusPoller(
            self._client,
            task_group,
            limiter=self._limiter,
            interval=self.poll_interval,
            lost_after=self.lost_after,
        )

    async def aclose(self) -> None:
        self._client = None

    def _connected(self) -> tuple[Any, anyio.CapacityLimiter]:
        if self._client is None or self._limiter is None:
            raise RunnerClosed("RayJobs is used only inside 'async with JobRunner(backend=RayJobs(...))'")
        return self._client, self._limiter

    async def supervise(
        self,
        spec: LaunchSpec,
        lock_fd: int,
        *,
        task_status: anyio.abc.TaskStatus[WorkloadIdentity | None],
        on_terminal: Callable[[JobState], None],
        on_output: Callable[[], None],
    ) -> JobState:
        """Submit the job, then watch it to its end (see :class:`~.base.Backend`)."""
        from .._notify import Notifier
        from .ray_watch import follow_job

        client, limiter = self._connected()
        notifier = Notifier(spec)
        started_at = now_ts()
        # Handed over: ``running`` (Ray's PENDING included) from here on, and ``run()``
        # returns while the submission goes out, concurrently with every other job's.
        write_state(spec.job_dir, _running(spec.job_id, started_at))
        task_status.started(None)
        state: JobState | None = None
        try:
            prepared = prepare_submission(
                spec,
                read_meta(spec.job_dir),
                entrypoint_num_cpus=self.entrypoint_num_cpus,
                entrypoint_resources=self.entrypoint_resources,
            )
            if isinstance(prepared, str):
                state = _ended(spec.job_id, started_at, JobStatus.FAILED, reason=prepared)
            else:
                try:
                    await anyio.to_thread.run_sync(submit, client, prepared, limiter=limiter)
                except RayRequestFailed as exc:
                    state = _ended(
                        spec.job_id, started_at, JobStatus.FAILED, reason=f"ray_submit_failed: {exc}"
                    )
                else:
                    if spec.job_id in _STOP_REQUESTED:  # killed while its submission was out
                        await anyio.to_thread.run_sync(
                            lambda: _stop_quietly(client, spec.job_id), limiter=limiter
                        )
            if state is not None:
                write_state(spec.job_dir, state)
                on_terminal(state)
            else:
                state = await follow_job(
                    spec,
                    client,
                    self._poller,
                    notifier,
                    started_at=started_at,
                    limiter=limiter,
                    on_output=on_output,
                    on_terminal=on_terminal,
                )
        except BaseException:
            with anyio.CancelScope(shield=True):
                with contextlib.suppress(Exception):
                    state = read_state_raw(spec.job_dir)
                if state is None or not state.is_terminal:
                    await anyio.to_thread.run_sync(
                        lambda: _stop_quietly(client, spec.job_id), limiter=limiter
                    )
                    state = _ended(spec.job_id, started_at, JobStatus.KILLED, reason="runner_cancelled")
                    with contextlib.suppress(OSError):
                        write_state(spec.job_dir, state)
                    on_terminal(state)
                _closed(lock_fd)
            raise
        finally:
            _STOP_REQUESTED.discard(spec.job_id)
        _closed(lock_fd)
        await notifier.completion(state)
        return state

    async def launch_detached(self, spec: LaunchSpec, lock_fd: int) -> int:
        """Submit from here and hand the job to a detached watcher process (``detached=True``),
        as ``agent-exec run`` does: the job's record stays current after this process
        exits. Returns the watcher's pid (0 if the job failed before it was submitted)."""
        from .ray_cli import launch_on_ray

        client, limiter = self._connected()
        meta = read_meta(spec.job_dir)
        return await anyio.to_thread.run_sync(
            lambda: launch_on_ray(client, self.address, spec, meta, lock_fd), limiter=limiter
        )

    async def wait_detached(self, spec: LaunchSpec, pid: int) -> None:
        """Wait until the detached watcher ``pid`` is gone (its job is finished)."""
        from .._launcher import LocalLauncher

        if pid > 0:
            await LocalLauncher().wait_detached(spec, pid)


#: Jobs ``Job.kill`` asked to stop while their submission was still out (this process).
_STOP_REQUESTED: set[str] = set()


def _stop_quietly(client: Any, job_id: str) -> bool:
    try:
        return bool(call(client.stop_job, job_id))
    except RayRequestFailed:
        return False


def _running(job_id: str, started_at: str) -> JobState:
    return JobState(job_id=job_id, status=JobStatus.RUNNING, updated_at=started_at, started_at=started_at)


def _ended(job_id: str, started_at: str, status: JobStatus, *, reason: str) -> JobState:
    now = now_ts()
    return JobState(
        job_id=job_id, status=status, updated_at=now, started_at=started_at, finished_at=now, reason=reason
    )


async def stop_ray_job(record: dict[str, Any], job_dir: Path, job_id: str, signal: str | int) -> bool:
    """``Job.kill`` of any Ray job of the store: ask its head (from ``meta.json``) to stop
    it; False if it is not running. Its watcher records the outcome.

    :raises InvalidSignal: / :raises InvalidArgument: a signal Ray cannot carry out.
    """
    stop_signal_ok(signal)
    state = read_state(job_dir)
    if state.is_terminal:
        return False
    address = str(record.get("address", ""))
    _STOP_REQUESTED.add(job_id)  # a submission still in flight stops right after it lands

    def stop() -> bool:
        try:
            client = connect(address)
        except BackendUnavailable:
            return False
        return _stop_quietly(client, job_id)

    return await anyio.to_thread.run_sync(stop)
