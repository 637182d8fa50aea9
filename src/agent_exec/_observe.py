"""Observing jobs: the read side (``status``, ``tail``, ``wait``, ``kill``, ``list``) and
the inline observation of ``run``/``start``.

Every read command of the CLI runs this module, so it imports only what such a call
needs: no ``typing``/``dataclasses``/``signal`` at run time, and JSON through
:mod:`._codec` (the standard library for one small document, orjson once ``list`` has
thousands of files to parse). ``tests/test_import_budget.py`` keeps it that way.
"""

from __future__ import annotations

import fcntl
import os
import time

from ._codec import BULK_THRESHOLD, use_orjson
from ._errors import InvalidState, StateCorrupt
from ._logs import ENCODING, file_size, read_head, read_tail
from ._models import JobStatus
from ._paths import LOCK_FILE, STDERR_LOG, STDOUT_LOG, iter_job_dirs, resolve_job
from ._store import read_meta, read_state

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: see the module docstring
if TYPE_CHECKING:
    import threading
    from collections.abc import Sequence
    from pathlib import Path
    from typing import Any

    from ._models import JobState

DEFAULT_MAX_BYTES = 65536
#: How long ``run`` waits for completion after it first sees output (see :func:`observe`).
OUTPUT_SETTLE = 0.15


def tags_match(patterns: Sequence[str], tags: Sequence[str]) -> bool:
    """True if every pattern matches at least one tag (``ns.*`` matches ``ns`` and ``ns.x``)."""
    for pattern in patterns:
        if pattern.endswith(".*"):
            base = pattern[:-2]
            if not any(tag == base or tag.startswith(base + ".") for tag in tags):
                return False
        elif pattern not in tags:
            return False
    return True


class SupervisorWatch:
    """Wakes a waiter the moment a job's supervisor lets go of its lock (the job finished
    or the supervisor died), instead of polling ``state.json``."""

    def __init__(self, job_dir: Path) -> None:
        self._path = job_dir / LOCK_FILE
        # Made by the first wait: a finished job is reported without importing threading.
        self._released: threading.Event | None = None
        self._thread: threading.Thread | None = None

    def _watch(self, released: threading.Event) -> None:
        try:
            fd = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            fcntl.flock(fd, fcntl.LOCK_UN)
            released.set()
        except OSError:
            pass
        finally:
            os.close(fd)

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds; True once the lock was seen free."""
        import threading

        if self._released is None:
            self._released = threading.Event()
        released = self._released
        if released.is_set():
            released.clear()
            self._thread = None
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, args=(released,), daemon=True)
            self._thread.start()
        if timeout <= 0:
            return released.is_set()
        return released.wait(timeout)


def observe(job_dir: Path, *, wait: bool, until: float, forever: bool) -> tuple[JobState, int]:
    """The inline observation of ``run``/``start``: return at the terminal state at once,
    or at the first 100 ms tick that finds output in the logs, or at the deadline.

    A job seen with output gets a short grace (``OUTPUT_SETTLE``) to finish: a quick
    command that printed and is exiting right now is then reported ``exited`` with its
    exit code, even on a loaded machine, instead of ``running``.
    """
    if not wait:
        return read_state(job_dir), 0
    start = time.monotonic()
    deadline = None if forever else start + until
    watch = SupervisorWatch(job_dir)
    tick = 0
    while True:
        state = read_state(job_dir)
        now = time.monotonic()
        if state.is_terminal:
            break
        if now >= start + tick * 0.1:
            if file_size(job_dir / STDOUT_LOG) or file_size(job_dir / STDERR_LOG):
                settle = OUTPUT_SETTLE if deadline is None else min(OUTPUT_SETTLE, deadline - now)
                if settle > 0 and watch.wait(settle):
                    continue
                break
            tick = int((now - start) / 0.1) + 1
        if deadline is not None and now >= deadline:
            break
        wake_at = start + tick * 0.1
        if deadline is not None:
            wake_at = min(wake_at, deadline)
        watch.wait(max(0.0, wake_at - time.monotonic()))
    return read_state(job_dir), int((time.monotonic() - start) * 1000)


def output_fields(job_dir: Path, max_bytes: int) -> dict[str, Any]:
    """The bounded inline output block shared by ``run``, ``start`` and ``wait``."""
    stdout, stdout_range, stdout_total = read_head(job_dir / STDOUT_LOG, max_bytes)
    stderr, stderr_range, stderr_total = read_head(job_dir / STDERR_LOG, max_bytes)
    return {
        "stdout": stdout,
        "stderr": stderr,
        "stdout_range": stdout_range,
        "stderr_range": stderr_range,
        "stdout_total_bytes": stdout_total,
        "stderr_total_bytes": stderr_total,
        "encoding": ENCODING,
    }


def outcome_fields(state: JobState) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if state.exit_code is not None:
        data["exit_code"] = state.exit_code
    if state.finished_at is not None:
        data["finished_at"] = state.finished_at
    if state.signal is not None:
        data["signal"] = state.signal
    if state.duration_ms is not None:
        data["duration_ms"] = state.duration_ms
    if state.reason is not None:
        data["reason"] = state.reason
    return data


def run_data(
    job_id: str,
    job_dir: Path,
    state: JobState,
    *,
    tags: list[str],
    env_vars: list[str] | None,
    elapsed_ms: int,
    waited_ms: int,
    max_bytes: int,
) -> dict[str, Any]:
    data: dict[str, Any] = {"job_id": job_id, "state": state.status.value, "tags": tags}
    if env_vars:
        data["env_vars"] = env_vars
    data["stdout_log_path"] = str(job_dir / STDOUT_LOG)
    data["stderr_log_path"] = str(job_dir / STDERR_LOG)
    data["elapsed_ms"] = elapsed_ms
    data["waited_ms"] = waited_ms
    data.update(output_fields(job_dir, max_bytes))
    data.update(outcome_fields(state))
    return data


# -- the read side --------------------------------------------------------------------


def status_data(root: Path, given: str) -> dict[str, Any]:
    job_id, job_dir = resolve_job(root, given)
    meta = read_meta(job_dir)
    state = read_state(job_dir)
    data: dict[str, Any] = {"job_id": job_id, "state": state.status.value}
    if state.exit_code is not None:
        data["exit_code"] = state.exit_code
    data["created_at"] = meta.created_at
    if state.started_at is not None:
        data["started_at"] = state.started_at
    if state.finished_at is not None:
        data["finished_at"] = state.finished_at
    if state.signal is not None:
        data["signal"] = state.signal
    if state.reason is not None:
        data["reason"] = state.reason
    return data


def tail_data(
    root: Path, given: str, *, tail_lines: int = 50, max_bytes: int = DEFAULT_MAX_BYTES
) -> dict[str, Any]:
    job_id, job_dir = resolve_job(root, given)
    stdout, stdout_range, stdout_total = read_tail(job_dir / STDOUT_LOG, tail_lines, max_bytes)
    stderr, stderr_range, stderr_total = read_tail(job_dir / STDERR_LOG, tail_lines, max_bytes)
    return {
        "job_id": job_id,
        "stdout": stdout,
        "stderr": stderr,
        "encoding": ENCODING,
        "stdout_log_path": str(job_dir / STDOUT_LOG),
        "stderr_log_path": str(job_dir / STDERR_LOG),
        "stdout_range": stdout_range,
        "stderr_range": stderr_range,
        "stdout_total_bytes": stdout_total,
        "stderr_total_bytes": stderr_total,
    }


def wait_for(job_dir: Path, *, until: float | None, poll: float = 1.0) -> JobState:
    """Block until the job is terminal or ``until`` seconds passed (``None``: no deadline).

    A supervised job wakes the waiter the moment it finishes; only a ``created`` job (no
    supervisor yet) is polled, every ``poll`` seconds.
    """
    deadline = None if until is None else time.monotonic() + until
    watch = SupervisorWatch(job_dir)
    while True:
        state = read_state(job_dir)
        if state.is_terminal:
            return state
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            return state
        if state.status is JobStatus.RUNNING:
            watch.wait(3600.0 if remaining is None else remaining)
        else:
            time.sleep(poll if remaining is None else min(poll, remaining))


def wait_data(
    root: Path, given: str, *, until: float | None, poll: float = 1.0, max_bytes: int = DEFAULT_MAX_BYTES
) -> dict[str, Any]:
    job_id, job_dir = resolve_job(root, given)
    state = wait_for(job_dir, until=until, poll=max(poll, 1.0) if poll else 1.0)
    data: dict[str, Any] = {"job_id": job_id, "state": state.status.value}
    if state.is_terminal and state.exit_code is not None:
        data["exit_code"] = state.exit_code
    outputs = output_fields(job_dir, max_bytes)
    data["stdout_total_bytes"] = outputs.pop("stdout_total_bytes")
    data["stderr_total_bytes"] = outputs.pop("stderr_total_bytes")
    data["updated_at"] = state.updated_at
    if state.is_terminal:
        for key in ("finished_at", "signal", "duration_ms", "reason"):
            value = getattr(state, key)
            if value is not None:
                data[key] = value
    data.update(outputs)
    return data


def kill_job(root: Path, given: str, *, signal_name: str = "TERM", wait: bool = True) -> dict[str, Any]:
    """Signal a running job's process group and report what happened, truthfully.

    Unlike upstream, no ``killed`` record is written on the job's behalf while its
    supervisor lives: the supervisor records the real outcome once the process is gone.
    """
    from ._process import resolve_signal, signal_group

    signum = resolve_signal(signal_name)
    requested = signal_name.strip().upper()
    job_id, job_dir = resolve_job(root, given)
    state = read_state(job_dir)
    if state.status is JobStatus.CREATED:
        raise InvalidState(f"job {given} is in 'created' state and has not been started; cannot send signal")
    data: dict[str, Any] = {"job_id": job_id, "signal": requested}
    if state.is_terminal:  # nothing to signal: report the recorded outcome
        return _kill_outcome(data, state, 0) if wait else data
    started = time.monotonic()
    if state.pid is not None:
        # Before the workload exists the pid is the supervisor's, which passes it on.
        signal_group(state.pid, signum)
    if not wait:
        return data
    watch = SupervisorWatch(job_dir)
    deadline = started + 3.0
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


def _kill_outcome(data: dict[str, Any], state: JobState, observed_ms: int) -> dict[str, Any]:
    data["state"] = state.status.value
    if state.exit_code is not None:
        data["exit_code"] = state.exit_code
    if state.signal is not None:
        data["terminated_signal"] = state.signal
    data["observed_within_ms"] = observed_ms
    if state.reason is not None:
        data["reason"] = state.reason
    return data


def list_data(
    root: Path,
    *,
    state_filter: str | None = None,
    limit: int = 50,
    cwd_filter: str | None = None,
    tag_patterns: Sequence[str] = (),
) -> dict[str, Any]:
    jobs: list[dict[str, Any]] = []
    skipped = 0
    entries = iter_job_dirs(root)
    if len(entries) > BULK_THRESHOLD:
        use_orjson()  # its import pays for itself over this many files
    for entry in entries:
        job_dir = root / entry.name
        try:
            meta = read_meta(job_dir)
        except StateCorrupt:
            skipped += 1
            continue
        if cwd_filter is not None and meta.cwd != cwd_filter:
            continue
        if tag_patterns and not tags_match(tag_patterns, meta.tags):
            continue
        summary: dict[str, Any] = {"job_id": meta.job_id, "short_job_id": meta.job_id[:7]}
        try:
            state: JobState | None = read_state(job_dir)
        except StateCorrupt:
            state = None
        summary["state"] = state.status.value if state else "unknown"
        if state is not None and state.exit_code is not None:
            summary["exit_code"] = state.exit_code
        summary["created_at"] = meta.created_at
        if state is not None:
            if state.started_at is not None:
                summary["started_at"] = state.started_at
            if state.finished_at is not None:
                summary["finished_at"] = state.finished_at
            summary["updated_at"] = state.updated_at
            if state.reason is not None:
                summary["reason"] = state.reason
        summary["tags"] = meta.tags
        if state_filter is not None and summary["state"] != state_filter:
            continue
        jobs.append(summary)
    jobs.sort(key=lambda job: job["job_id"], reverse=True)
    jobs.sort(key=lambda job: job.get("started_at", ""), reverse=True)
    truncated = limit > 0 and len(jobs) > limit
    if truncated:
        jobs = jobs[:limit]
    return {"root": str(root), "jobs": jobs, "truncated": truncated, "skipped": skipped}
