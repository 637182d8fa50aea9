"""``gc`` policy: which scanned jobs are deleted and why, as a pure function of the scan
records, the policy and ``now`` (spec gc-delete §1.1 steps 5-9). No I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ._models import JobStatus
from ._timeutil import format_ts

__all__ = [
    "GcEntry",
    "GcPolicy",
    "ScanRecord",
    "Selection",
    "cutoff_ts",
    "is_older",
    "may_be_candidate",
    "select",
]


@dataclass(frozen=True, slots=True)
class GcPolicy:
    """What ``gc`` may delete: jobs older than ``older_than_s``, shaped by the two budgets."""

    older_than_s: int
    max_jobs: int | None = None
    max_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class ScanRecord:
    """What the scan learnt about one job directory.

    :param status: ``None`` when ``state.json`` is missing or unparsable.
    :param gc_ts: ``finished_at`` if recorded, else ``updated_at``.
    :param bytes: total size of the regular files below the directory; only measured for
        jobs that can be candidates (terminal and older than the cutoff), else 0.
    :param supervised: a supervisor still holds the job's lock (only probed for the same
        jobs as ``bytes``).
    """

    job_id: str
    status: JobStatus | None
    gc_ts: str = ""
    bytes: int = 0
    supervised: bool = False
    #: ``io_error: ...`` when reading the job failed for a passing reason (descriptor or
    #: memory pressure): the job is skipped, counted failed, and never called unreadable.
    error: str | None = None

    @property
    def state(self) -> str:
        return self.status.value if self.status is not None else "unknown"


@dataclass(slots=True)
class GcEntry:
    """One element of ``jobs[]`` in the ``gc`` response."""

    job_id: str
    state: str
    action: str
    reason: str
    bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "state": self.state,
            "action": self.action,
            "reason": self.reason,
            "bytes": self.bytes,
        }


@dataclass(slots=True)
class Selection:
    """The outcome of :func:`select`.

    ``kept`` are the jobs never targeted, in report order (scan order, then the candidates
    the policy spared, oldest first); ``selected`` are ``(record, reason)`` pairs, oldest
    first, where ``reason`` is the ``+``-joined list such as ``older_than+max_jobs``.
    """

    kept: list[GcEntry] = field(default_factory=list)
    selected: list[tuple[ScanRecord, str]] = field(default_factory=list)


def cutoff_ts(now: float, older_than_s: int) -> str:
    """The GC cutoff timestamp; saturates at the epoch for absurd retentions."""
    return format_ts(max(0.0, now - older_than_s))


def is_older(gc_ts: str, cutoff: str) -> bool:
    """Upstream's comparison: the first 19 characters (``YYYY-MM-DDTHH:MM:SS``), strictly less."""
    return gc_ts[:19] < cutoff[:19]


def may_be_candidate(status: JobStatus | None, gc_ts: str, cutoff: str) -> bool:
    """Shared by the scanner (worth sizing?) and :func:`select` (a candidate?)."""
    return status is not None and status.is_terminal and gc_ts != "" and is_older(gc_ts, cutoff)


def select(records: Sequence[ScanRecord], policy: GcPolicy, *, now: float) -> Selection:
    """Decide, without I/O, which scanned jobs ``gc`` deletes (spec gc-delete §1.1 steps 5-9).

    ``--max-jobs``/``--max-bytes`` only act on jobs already older than the cutoff: the
    newest ``max_jobs`` of them are kept (``policy_not_matched``), and ``max_bytes`` only
    adds its reason to the oldest ones until the rest would fit.
    """
    cutoff = cutoff_ts(now, policy.older_than_s)
    result = Selection()
    candidates: list[tuple[ScanRecord, list[str]]] = []
    for record in records:
        reason: str | None = None
        if record.error is not None:
            reason = record.error
        elif record.status is None:
            reason = "state_unreadable"
        elif record.status.is_active:
            reason = "active_job"
        elif record.gc_ts == "":
            reason = "no_timestamp"
        elif not is_older(record.gc_ts, cutoff):
            reason = "too_recent"
        elif record.supervised:
            reason = "active_job"
        if reason is not None:
            result.kept.append(GcEntry(record.job_id, record.state, "skipped", reason, 0))
        else:
            candidates.append((record, ["older_than"]))
    candidates.sort(key=lambda item: item[0].gc_ts)  # stable: equal timestamps keep scan order
    if policy.max_jobs is not None and len(candidates) > policy.max_jobs:
        cut = len(candidates) - policy.max_jobs
        for _, reasons in candidates[:cut]:
            reasons.append("max_jobs")
        for _, reasons in candidates[cut:]:
            reasons.remove("older_than")
    if policy.max_bytes is not None:
        total = sum(record.bytes for record, _ in candidates)
        for record, reasons in candidates:
            if total <= policy.max_bytes:
                break
            reasons.append("max_bytes")
            total -= record.bytes
    for record, reasons in candidates:
        if reasons:
            result.selected.append((record, "+".join(reasons)))
        else:
            entry = GcEntry(record.job_id, record.state, "skipped", "policy_not_matched", record.bytes)
            result.kept.append(entry)
    return result
