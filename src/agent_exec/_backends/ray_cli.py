"""The CLI's Ray paths: ``run``/``start`` submit the job from the calling process (so an
unreachable head is a JSON error at once) and hand the job to a detached watcher;
``kill`` asks Ray to stop it and observes the outcome the watcher records.

Imported only for Ray jobs; the Ray client itself only once a request is needed.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

from .._errors import BackendUnavailable, InvalidState
from .._models import JobMeta, JobState, JobStatus
from .._spec import LaunchSpec
from .._store import read_state, write_state
from .._timeutil import now_ts

__all__ = ["kill_ray_job", "launch_on_ray", "ray_client_for"]

#: How long ``kill`` observes a stopped Ray job (Ray's own grace is 3 s, plus polling).
KILL_OBSERVE = 10.0


def ray_client_for(address: str) -> Any:
    """A connected client; :raises BackendUnavailable: quickly if that is impossible."""
    from .ray_client import connect

    return connect(address)


def launch_on_ray(client: Any, address: str, spec: LaunchSpec, meta: JobMeta, lock_fd: int) -> int:
    """Submit a job and start its detached watcher, which takes over ``lock_fd``; return
    the watcher's pid (0 for a job recorded ``failed`` before submission).

    A job that cannot be defined on Ray (unreadable env file, stdin too large) is recorded
    ``failed`` with ``spawn_failed: ...``, as a local spawn failure is.

    :raises BackendUnavailable: the head refused or did not answer the submission (the
        job is left as it was: the caller decides what to do with it).
    """
    from .ray import prepare_submission, submit
    from .ray_client import RayRequestFailed
    from .ray_watch import spawn_detached

    started_at = now_ts()
    prepared = prepare_submission(spec, meta)
    if isinstance(prepared, str):
        state = JobState(
            job_id=spec.job_id,
            status=JobStatus.FAILED,
            updated_at=started_at,
            started_at=started_at,
            finished_at=started_at,
            reason=prepared,
        )
        write_state(spec.job_dir, state)
        return 0
    try:
        submit(client, prepared)
    except RayRequestFailed as exc:
        raise BackendUnavailable(f"Ray did not accept job {spec.job_id} at {address}: {exc}") from None
    state = JobState(
        job_id=spec.job_id, status=JobStatus.RUNNING, updated_at=started_at, started_at=started_at
    )
    write_state(spec.job_dir, state)
    try:
        return spawn_detached(spec.job_dir, address, lock_fd, started_at, spec.full_log)
    except BaseException:
        # Nobody would watch it: the caller removes the record, so the job must not run.
        from .ray_client import call

        with contextlib.suppress(Exception):
            call(client.stop_job, spec.job_id)
        raise


def kill_ray_job(
    job_id: str, job_dir: Path, record: dict[str, Any], *, signal_name: str, wait: bool
) -> dict[str, Any]:
    """``kill`` of a Ray job: ``stop_job``, then the real outcome as the watcher records it."""
    from .._jobs import SupervisorWatch
    from .._kill import _kill_outcome, observe_outcome
    from .ray import stop_signal_ok
    from .ray_client import RayRequestFailed, call

    stop_signal_ok(signal_name)
    data: dict[str, Any] = {"job_id": job_id, "signal": signal_name.strip().upper()}
    state = read_state(job_dir)
    if state.status is JobStatus.CREATED:
        raise InvalidState(f"job {job_id} is in 'created' state and has not been started; cannot send signal")
    if state.is_terminal:
        return _kill_outcome(data, state, 0) if wait else data
    started = time.monotonic()
    client = ray_client_for(str(record.get("address", "")))
    try:
        call(client.stop_job, job_id)
    except RayRequestFailed as exc:
        raise BackendUnavailable(f"Ray could not stop job {job_id}: {exc}") from None
    if not wait:
        return data
    return observe_outcome(
        job_dir, data, state, SupervisorWatch(job_dir), started=started, patience=KILL_OBSERVE
    )
