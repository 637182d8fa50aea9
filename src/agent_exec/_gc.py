"""Cleanup: ``gc`` (manual and automatic) and ``delete``/``rm``.

The work is split into three steps so that the policy can be tested without a disk or a
clock, and the I/O can run concurrently:

1. *scan* (blocking I/O, in worker threads): one :class:`ScanRecord` per job directory
   (status, GC timestamp, size, whether a supervisor still holds the job's lock);
2. *select* (:func:`select`, pure): which records are deleted and why, from the records,
   the policy and ``now`` alone;
3. *delete* (blocking I/O, in worker threads, at most ``concurrency`` trees at a time).

:func:`collect` is the async core (anyio); :func:`gc_command`, :func:`delete_one`,
:func:`delete_all` and :func:`auto_gc` are the synchronous entry points the CLI and the
supervisor call.

Safety rules (stricter than upstream 0.2.3, never looser):

- A ``running`` or ``created`` job is never removed, and neither is a job whose
  supervisor still holds ``supervisor.lock`` (e.g. right after ``kill`` wrote ``killed``
  while the workload is still being reaped): such jobs are reported ``active_job``
  (``pid_alive`` for ``delete --all``, an ``invalid_state`` error for ``delete <id>``).
  The lock is taken exclusively for the duration of a removal, so no supervisor can claim
  the job meanwhile. A ``running`` job whose supervisor is gone is repaired to ``failed``
  by :func:`agent_exec._store.read_state` (and is then too recent for ``gc``).
- Nothing outside the root is touched: job directories are opened relative to the root
  with ``O_NOFOLLOW``; symlinks, inside job directories or in place of them, are never
  followed, neither for size accounting (a symlink counts 0 bytes) nor for removal (the
  link itself is unlinked). A symlink in place of a job directory is ignored like a file.
- ``deleted`` is reported only once the directory is confirmed absent. When two ``gc``
  runs race for a job, exactly one of them (the one whose ``rmdir`` succeeds) reports it
  ``deleted``; the other reports ``skipped`` / ``already_deleted`` (counted out of scope,
  not failed), and a job directory that vanishes while being scanned is not reported.

Deliberate differences from upstream, where the spec marks the behaviour incidental:

- The auto-GC lock is an ``flock`` on ``<root>/.gc.lock`` (the file is created once and
  never removed), not a create-exclusive file: the kernel drops it when its holder dies,
  so a crash can no longer disable auto-GC forever. A plain ``.gc.lock`` left behind by
  upstream is simply locked and reused.
- ``delete --all`` keeps the documented identity ``skipped = out_of_scope + failed``:
  jobs of other directories (and jobs whose ``meta.json`` is unreadable) count as
  ``out_of_scope`` *and* ``skipped`` (still not listed); upstream counted them only as
  ``out_of_scope``. An unreadable root entry counts as ``skipped`` and ``failed``, as in
  ``gc``. For terminal jobs that have a ``supervisor.lock``, liveness is the lock (so a
  reused workload pid no longer blocks deletion); the ``pid_alive`` probe of the recorded
  pid remains for jobs written by upstream, which have no lock file.
- An absurdly large ``--older-than`` puts the cutoff at the epoch instead of overflowing.
- OS errors are rendered as upstream's Rust renders them: ``<strerror> (os error <n>)``.
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from ._errors import AgentExecError, InvalidState, StateCorrupt
from ._gcfs import (
    Removal,
    bulk_scan_one,
    job_supervised,
    list_root,
    open_root,
    os_error_text,
    printable,
    remove_job,
    scan_one,
    sweep_stale_builds,
)
from ._gcpolicy import GcEntry, GcPolicy, ScanRecord, Selection, cutoff_ts, is_older, select
from ._models import JobStatus
from ._paths import FILE_MODE, GC_LOCK_FILE, resolve_job
from ._root import check_root
from ._store import read_state
from ._timeutil import parse_duration

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_OLDER_THAN",
    "GcEntry",
    "GcPolicy",
    "GcResult",
    "ScanRecord",
    "Selection",
    "auto_gc",
    "collect",
    "cutoff_ts",
    "delete_all",
    "delete_one",
    "gc_command",
    "is_older",
    "select",
]

log = logging.getLogger("agent_exec.gc")

DEFAULT_OLDER_THAN = "30d"
#: Job trees removed (or scanned) at the same time. Removal is dominated by waiting for the
#: filesystem (journal, discard), not by the GIL, so a few threads beat ``rm -rf``.
DEFAULT_CONCURRENCY = 4
#: Directories handled per worker-thread call: amortises the thread hand-off (tens of µs).
_BATCH = 32

T = TypeVar("T")
U = TypeVar("U")


# -- the async core ----------------------------------------------------------------------


@dataclass(slots=True)
class GcResult:
    """Counters and per-job entries of one collection (the ``gc`` response minus the echo)."""

    deleted: int = 0
    skipped: int = 0
    out_of_scope: int = 0
    failed: int = 0
    freed_bytes: int = 0
    scanned_dirs: int = 0
    candidate_count: int = 0
    jobs: list[GcEntry] = field(default_factory=list)

    def counters(self) -> dict[str, int]:
        return {
            "deleted": self.deleted,
            "skipped": self.skipped,
            "out_of_scope": self.out_of_scope,
            "failed": self.failed,
            "freed_bytes": self.freed_bytes,
            "scanned_dirs": self.scanned_dirs,
            "candidate_count": self.candidate_count,
        }


async def _map_batched(fn: Callable[[T], U], items: Sequence[T], limiter: anyio.CapacityLimiter) -> list[U]:
    """``[fn(item) for item in items]`` in worker threads, ``limiter`` many at a time, in order."""
    results: list[U | None] = [None] * len(items)

    def run_batch(start: int, stop: int) -> None:
        for index in range(start, stop):
            results[index] = fn(items[index])

    async with anyio.create_task_group() as group:
        for start in range(0, len(items), _BATCH):
            stop = min(start + _BATCH, len(items))
            group.start_soon(
                functools.partial(anyio.to_thread.run_sync, run_batch, start, stop, limiter=limiter)
            )
    return results  # type: ignore[return-value]


async def _remove_all(
    root_fd: int, names: Sequence[str], limiter: anyio.CapacityLimiter, budget: int | None
) -> list[Removal | None]:
    """Remove ``names`` concurrently; with a ``budget``, stop after that many successes.

    With a budget the work goes in waves no larger than the remaining budget, so the limit
    is never overshot however the concurrent removals end. ``None`` = budget exhausted.
    """
    if budget is None:
        return list(await _map_batched(lambda name: remove_job(root_fd, name), names, limiter))
    outcomes: list[Removal | None] = [None] * len(names)
    position = succeeded = 0
    while position < len(names) and succeeded < budget:
        wave = range(position, min(len(names), position + budget - succeeded))
        done = await _map_batched(lambda index: remove_job(root_fd, names[index]), wave, limiter)
        for index, removal in zip(wave, done, strict=True):
            outcomes[index] = removal
            succeeded += removal.outcome == "deleted"
        position = wave.stop
    return outcomes


async def collect(
    root: Path,
    policy: GcPolicy,
    *,
    now: float,
    dry_run: bool,
    concurrency: int = DEFAULT_CONCURRENCY,
    scan_limit: int | None = None,
    delete_limit: int | None = None,
) -> GcResult:
    """Scan ``root``, select by ``policy`` as of ``now``, and delete (or, dry, report).

    :param concurrency: job directories scanned or removed at the same time.
    :param scan_limit: examine at most this many directories (auto-GC's scan budget).
    :param delete_limit: at most this many successful removals (auto-GC's delete budget);
        the remaining selected jobs are reported ``delete_budget_exhausted``.
    :raises AgentExecError: the root exists but cannot be read.
    """
    result = GcResult()
    root_fd = open_root(root)
    if root_fd is None:
        return result
    try:
        names, unreadable = list_root(root, root_fd)
        result.skipped += unreadable
        result.failed += unreadable
        if scan_limit is not None:
            names = names[:scan_limit]
        result.scanned_dirs = len(names)
        cutoff = cutoff_ts(now, policy.older_than_s)
        limiter = anyio.CapacityLimiter(max(1, concurrency))
        listed = [name for name in names if printable(name)]
        result.skipped += len(names) - len(listed)
        result.out_of_scope += len(names) - len(listed)
        scanned = await _map_batched(lambda name: scan_one(root, root_fd, name, cutoff, now), listed, limiter)
        records = [record for record in scanned if record is not None]
        result.scanned_dirs -= len(scanned) - len(records)
        selection = select(records, policy, now=now)
        result.jobs.extend(selection.kept)
        io_errors = sum(entry.reason.startswith("io_error") for entry in selection.kept)
        result.failed += io_errors  # retryable: nothing is wrong with those jobs
        result.out_of_scope += len(selection.kept) - io_errors
        result.skipped += len(selection.kept)
        result.candidate_count = len(selection.selected)
        if dry_run:
            for record, reason in selection.selected:
                result.jobs.append(GcEntry(record.job_id, record.state, "would_delete", reason, record.bytes))
                result.freed_bytes += record.bytes
            return result
        sweep_stale_builds(root_fd, now)
        names_to_remove = [record.job_id for record, _ in selection.selected]
        removals = await _remove_all(root_fd, names_to_remove, limiter, delete_limit)
    finally:
        os.close(root_fd)
    for (record, reason), removal in zip(selection.selected, removals, strict=True):
        _account(result, record, reason, removal)
    return result


def _account(result: GcResult, record: ScanRecord, reason: str, removal: Removal | None) -> None:
    if removal is not None and removal.outcome == "deleted":
        result.deleted += 1
        result.freed_bytes += record.bytes
        result.jobs.append(GcEntry(record.job_id, record.state, "deleted", reason, record.bytes))
        return
    if removal is None:
        why, failed = "delete_budget_exhausted", False
    elif removal.outcome == "gone":
        why, failed = "already_deleted", False
    elif removal.outcome == "busy":
        why, failed = "active_job", False
    elif removal.outcome == "still_exists":
        why, failed = "post_delete_check_failed", True
    else:
        why, failed = f"delete_failed: {removal.error}", True
    result.skipped += 1
    if failed:
        result.failed += 1
    else:
        result.out_of_scope += 1
    result.jobs.append(GcEntry(record.job_id, record.state, "skipped", why, record.bytes))


def _event_loop_running() -> bool:
    """Is an event loop running in this thread? (``anyio.run`` would refuse to nest.)"""
    import asyncio

    try:
        asyncio.get_running_loop()
        return True
    except RuntimeError:
        pass
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            trio.lowlevel.current_task()
            return True
        except RuntimeError:
            pass
    return False


def _run(fn: Callable[[], Any]) -> Any:
    """``anyio.run(fn)``, from a helper thread when called inside a running event loop.

    The supervisor calls :func:`auto_gc` from inside its own ``anyio.run``; its job is
    over by then, so blocking that loop for the duration of the collection is harmless.
    """
    if not _event_loop_running():
        return anyio.run(fn)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = anyio.run(fn)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name="agent-exec-gc")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


# -- entry points ------------------------------------------------------------------------


def gc_command(
    root: Path,
    *,
    older_than: str | None,
    max_jobs: int | None,
    max_bytes: int | None,
    dry_run: bool,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> dict[str, Any]:
    """Manual ``gc``: the response data (spec output §4.8), without the envelope.

    :raises InvalidDuration: ``older_than`` is malformed (and the root exists).
    """
    text, source = (older_than, "flag") if older_than is not None else (DEFAULT_OLDER_THAN, "default")
    data: dict[str, Any] = {
        "root": str(root),
        "dry_run": dry_run,
        "older_than": text,
        "older_than_source": source,
    }
    result = GcResult()
    if check_root(root):  # a missing root is not an error, and skips duration validation
        policy = GcPolicy(parse_duration(text), max_jobs, max_bytes)
        now = time.time()

        async def main() -> GcResult:
            return await collect(root, policy, now=now, dry_run=dry_run, concurrency=concurrency)

        result = _run(main)
    data.update(result.counters())
    data["jobs"] = [entry.to_dict() for entry in result.jobs]
    return data


def auto_gc(root: Path, settings: dict[str, Any]) -> None:
    """Best-effort automatic GC after ``run``/``start`` (spec gc-delete §2); never raises.

    Runs under an ``flock`` on ``<root>/.gc.lock``; if another process holds it, this run is
    skipped silently. Problems are logged at warning level.
    """
    try:
        if not settings.get("auto", True) or not check_root(root):
            return
        try:
            lock_fd = os.open(
                root / GC_LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE
            )
        except OSError as exc:
            log.warning("auto-gc skipped: cannot open lock %s: %s", root / GC_LOCK_FILE, os_error_text(exc))
            return
        try:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return  # another process is collecting
            policy = GcPolicy(
                parse_duration(str(settings.get("older_than") or DEFAULT_OLDER_THAN)),
                settings.get("max_jobs"),
                settings.get("max_bytes"),
            )
            scan_limit = settings.get("scan_limit")
            delete_limit = settings.get("delete_limit")
            scan_limit = 200 if scan_limit is None else scan_limit
            delete_limit = 20 if delete_limit is None else delete_limit
            now = time.time()

            async def main() -> GcResult:
                return await collect(
                    root, policy, now=now, dry_run=False, scan_limit=scan_limit, delete_limit=delete_limit
                )

            _run(main)
        finally:
            os.close(lock_fd)
    except Exception as exc:
        log.warning("auto-gc failed (best-effort): %s", getattr(exc, "message", None) or exc)


def _delete_entry(job_id: str, state: str, action: str, reason: str) -> dict[str, Any]:
    return {"job_id": job_id, "state": state, "action": action, "reason": reason}


def delete_one(root: Path, given: str, *, dry_run: bool) -> dict[str, Any]:
    """``delete <JOB_ID>``: remove one job of any non-running state (spec gc-delete §3.1).

    :raises JobNotFound, AmbiguousJobId: from resolving ``given``.
    :raises InvalidState: the job is running (or its supervisor still holds it).
    :raises AgentExecError: the removal failed or the directory survived it.
    """
    check_root(root)
    job_id, job_dir = resolve_job(root, given)
    try:
        status: JobStatus | None = read_state(job_dir).status
    except (OSError, StateCorrupt):
        status = None
    running = InvalidState(f"cannot delete job {given}: job is currently running")
    if status is JobStatus.RUNNING:
        raise running
    state = status.value if status is not None else "unknown"
    action = "would_delete"
    if not dry_run:
        root_fd = open_root(root)
        if root_fd is None:
            raise AgentExecError(f"failed to delete job directory {job_dir}: No such file or directory")
        try:
            removal = remove_job(root_fd, job_id)
        finally:
            os.close(root_fd)
        if removal.outcome == "busy":
            raise running
        if removal.outcome == "failed":
            raise AgentExecError(f"failed to delete job directory {job_dir}: {removal.error}")
        if removal.outcome == "still_exists":
            raise AgentExecError(f"delete reported success but job directory still exists: {job_dir}")
        action = "deleted"  # "gone": removed concurrently, and absent as promised
    elif job_supervised(job_dir):
        raise running
    return {
        "root": str(root),
        "dry_run": dry_run,
        "deleted": int(action == "deleted"),
        "skipped": 0,
        "out_of_scope": 0,
        "failed": 0,
        "jobs": [_delete_entry(job_id, state, action, "explicit_delete")],
    }


def delete_all(
    root: Path, *, cwd_scope: str, dry_run: bool, concurrency: int = DEFAULT_CONCURRENCY
) -> dict[str, Any]:
    """``delete --all``: remove the finished jobs started in ``cwd_scope`` (spec gc-delete §3.2)."""
    data: dict[str, Any] = {"root": str(root), "dry_run": dry_run, "cwd_scope": cwd_scope}
    counts = {"deleted": 0, "skipped": 0, "out_of_scope": 0, "failed": 0}
    jobs: list[dict[str, Any]] = []

    async def main(root_fd: int) -> None:
        names, unreadable = list_root(root, root_fd)
        counts["skipped"] += unreadable
        counts["failed"] += unreadable
        limiter = anyio.CapacityLimiter(max(1, concurrency))
        scanned = await _map_batched(
            lambda name: bulk_scan_one(root, root_fd, name, cwd_scope), names, limiter
        )
        records = [record for record in scanned if record is not None]
        eligible = [record.job_id for record in records if record.in_scope and record.reason is None]
        removals: Iterable[Removal | None] = [None] * len(eligible)
        if not dry_run:
            removals = await _remove_all(root_fd, eligible, limiter, None)
        outcome = dict(zip(eligible, removals, strict=True))
        for record in records:
            if not record.in_scope:
                counts["out_of_scope"] += 1
                counts["skipped"] += 1
                continue
            if record.reason is not None:
                counts["out_of_scope"] += 1
                counts["skipped"] += 1
                jobs.append(_delete_entry(record.job_id, record.state, "skipped", record.reason))
                continue
            removal = outcome[record.job_id]
            if removal is None:
                jobs.append(_delete_entry(record.job_id, record.state, "would_delete", "terminal_in_cwd"))
                continue
            action, reason, failed = _bulk_outcome(removal)
            if action == "deleted":
                counts["deleted"] += 1
            else:
                counts["skipped"] += 1
                counts["failed" if failed else "out_of_scope"] += 1
            jobs.append(_delete_entry(record.job_id, record.state, action, reason))

    root_fd = open_root(root) if check_root(root) else None
    if root_fd is not None:
        try:
            _run(functools.partial(main, root_fd))
        finally:
            os.close(root_fd)
    data.update(counts)
    data["jobs"] = jobs
    return data


def _bulk_outcome(removal: Removal) -> tuple[str, str, bool]:
    """``(action, reason, failed)`` of one ``delete --all`` removal."""
    if removal.outcome == "deleted":
        return "deleted", "terminal_in_cwd", False
    if removal.outcome == "gone":
        return "skipped", "already_deleted", False
    if removal.outcome == "busy":
        return "skipped", "pid_alive", False
    if removal.outcome == "still_exists":
        return "skipped", "post_delete_check_failed", True
    return "skipped", f"delete_failed: {removal.error}", True
