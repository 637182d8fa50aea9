"""``kill``: signal a job's process group and report what really happened.

Right after launch ``state.json`` still names the supervisor (which passes catchable
signals on); ``kill`` waits briefly for the workload's own record so that SIGKILL and
SIGSTOP reach the workload too. After a supervisor is lost, the workload's group is
signalled only when the recorded identity proves it is still the job's.
"""

from __future__ import annotations

import os
import time

from ._errors import InvalidState, StateCorrupt
from ._jobdir import JobDir, open_job
from ._jobs import PollingWatch, SupervisorWatch, Watch, fault_fields
from ._models import JobState, JobStatus
from ._paths import LOCK_FILE
from ._process import group_alive, resolve_signal, signal_group
from ._store import SUPERVISOR_LOST, read_state

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: `kill` is a CLI hot path (import budget)
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any


def kill_job(
    root: Path, given: str, *, signal_name: str = "TERM", wait: bool = True, polling: bool = False
) -> dict[str, Any]:
    """Signal a running job's process group and report what happened, truthfully.

    Unlike upstream, no ``killed`` record is written on the job's behalf while its
    supervisor lives: the supervisor records the real outcome once the process is gone.
    """
    signum = resolve_signal(signal_name)
    requested = signal_name.strip().upper()
    with open_job(root, given) as job_dir:
        from ._backends import backend_record_of

        record = backend_record_of(job_dir.path)
        if record is not None:  # a Ray job: Ray stops it, its watcher records the outcome
            from ._backends.ray_cli import kill_ray_job

            return kill_ray_job(job_dir.job_id, job_dir.path, record, signal_name=signal_name, wait=wait)
        return _kill(job_dir, given, signum, requested, wait=wait, polling=polling)


def _kill(
    job_dir: JobDir, given: str, signum: int, requested: str, *, wait: bool, polling: bool
) -> dict[str, Any]:
    job_id = job_dir.job_id
    state = read_state(job_dir)
    if state.status is JobStatus.CREATED:
        raise InvalidState(f"job {given} is in 'created' state and has not been started; cannot send signal")
    data: dict[str, Any] = {"job_id": job_id, "signal": requested}
    if state.is_terminal:
        if state.reason == SUPERVISOR_LOST:  # the workload may have outlived its supervisor
            data.update(_signal_orphan(state, signum))
        return _kill_outcome(data, state, 0) if wait else data
    started = time.monotonic()
    if state.workload is None and state.pid is not None and job_dir.exists(LOCK_FILE):
        # The pid is still the supervisor's (it passes catchable signals on, but not
        # SIGKILL or SIGSTOP): wait briefly for the workload's own record.
        state = _await_workload(job_dir, state, started + WORKLOAD_RECORD_PATIENCE)
        if state.is_terminal:
            return _kill_outcome(data, state, int((time.monotonic() - started) * 1000)) if wait else data
    target = state.workload.pgid if state.workload is not None else state.pid
    if target is not None:
        signal_group(target, signum)
    if not wait:
        return data
    # Long-lived hosts (serve, mcp) probe the lock instead of parking a thread on it.
    watch: Watch = PollingWatch(job_dir) if polling else SupervisorWatch(job_dir)
    return observe_outcome(job_dir, data, state, watch, started=started, patience=3.0)


def observe_outcome(
    job_dir: JobDir | Path,
    data: dict[str, Any],
    state: JobState,
    watch: Watch,
    *,
    started: float,
    patience: float,
) -> dict[str, Any]:
    """Watch a signalled job for up to ``patience`` seconds after ``started`` and report the
    outcome its supervisor (or watcher) records: the truth, never an optimistic ``killed``."""
    deadline = started + patience
    while True:
        try:
            state = read_state(job_dir)
        except StateCorrupt:
            break
        remaining = deadline - time.monotonic()
        if state.is_terminal or remaining <= 0:
            break
        watch.wait(remaining)
    return _kill_outcome(data, state, int((time.monotonic() - started) * 1000))


#: How long ``kill`` waits for a just-launched job to record its workload.
WORKLOAD_RECORD_PATIENCE = 3.0


def _await_workload(job_dir: JobDir, state: JobState, deadline: float) -> JobState:
    while state.workload is None and not state.is_terminal and time.monotonic() < deadline:
        time.sleep(0.005)
        try:
            state = read_state(job_dir)
        except StateCorrupt:
            break
    return state


def _signal_orphan(state: JobState, signum: int) -> dict[str, Any]:
    """``kill`` on a job whose supervisor is lost: reach its process group only if it
    provably is the job's (recorded identity, start time matching: never a reused pid).

    Returns ``delivered`` and, when nothing was sent, ``delivery`` saying why.
    """
    identity = state.workload
    if identity is None:
        return {"delivered": False, "delivery": "workload_identity_unknown"}
    alive = group_alive(identity.pgid, identity.start_ticks)
    if alive is None:
        return {"delivered": False, "delivery": "workload_identity_unproven"}
    if not alive:
        return {"delivered": False, "delivery": "workload_gone"}
    try:
        os.killpg(identity.pgid, signum)
    except ProcessLookupError:
        return {"delivered": False, "delivery": "workload_gone"}
    except PermissionError:
        return {"delivered": False, "delivery": "permission_denied"}
    return {"delivered": True}


def _kill_outcome(data: dict[str, Any], state: JobState, observed_ms: int) -> dict[str, Any]:
    data["state"] = state.status.value
    if state.exit_code is not None:
        data["exit_code"] = state.exit_code
    if state.signal is not None:
        data["terminated_signal"] = state.signal
    data["observed_within_ms"] = observed_ms
    if state.reason is not None:
        data["reason"] = state.reason
    data.update(fault_fields(state))
    return data
