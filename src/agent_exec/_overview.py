"""The dashboard's read side: job summary rows, activity buckets and log slices.

Built from the same store primitives as ``list``/``status``/``tail`` (``iter_job_dirs``,
``read_meta``, ``read_state``, ``resolve_job``), with two differences that make a page
polling every two seconds cheap on a store of thousands of jobs:

- :class:`JobIndex` keeps the summary row of every job and re-reads a job's files only
  when its directory changed (``meta.json``/``state.json`` are replaced by ``rename``, which
  touches the directory's mtime). Active jobs are re-read every time, because
  ``read_state`` is also where a dead supervisor's ``running`` job becomes ``failed``.
- log reads are slices by byte offset, so a page following a job fetches only what is new.
"""

from __future__ import annotations

import calendar
import os
import stat
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._errors import AgentExecError, InvalidArgument, JobNotFound, StateCorrupt
from ._jobs import tags_match, validate_tag_pattern
from ._logs import lossy
from ._models import JobStatus
from ._paths import FULL_LOG, META_FILE, STDERR_LOG, STDOUT_LOG, iter_job_dirs, resolve_job
from ._store import read_meta, read_state

#: Log files a page may read, by the name it uses for them.
LOG_FILES = {"stdout": STDOUT_LOG, "stderr": STDERR_LOG, "full": FULL_LOG}
#: Largest slice of a log one request returns.
MAX_LOG_SLICE = 256 * 1024
#: Most rows one list request returns (the page asks for fewer).
MAX_ROWS = 1000
#: A directory modified this close to the moment it was read may change again within the
#: same mtime tick: its row is not trusted from cache (the racy-git rule).
_RACY_NS = 1_000_000_000
#: ``window`` -> (bucket count, bucket seconds) of the activity picture.
ACTIVITY_WINDOWS = {"hour": (60, 60), "day": (48, 1800)}
STATES = ("created", "running", "exited", "failed", "killed", "unknown")


def parse_ts(text: str | None) -> int | None:
    """Epoch seconds of a contract timestamp (``YYYY-MM-DDTHH:MM:SSZ``), None if absent or odd."""
    if not text:
        return None
    try:
        return calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        return None


@dataclass
class _Cached:
    mtime_ns: int
    trusted: bool
    row: dict[str, Any] | None  # None: meta.json unreadable (counted as skipped)


def _summary(job_dir: Path) -> dict[str, Any] | None:
    try:
        meta = read_meta(job_dir)
    except StateCorrupt:
        return None
    row: dict[str, Any] = {
        "job_id": meta.job_id,
        "short_job_id": meta.job_id[:7],
        "command": meta.command,
        "cwd": meta.cwd,
        "tags": meta.tags,
        "created_at": meta.created_at,
        "state": "unknown",
    }
    try:
        state = read_state(job_dir)
    except (StateCorrupt, OSError):
        row["reason"] = "state.json unreadable"
    else:
        row["state"] = state.status.value
        for key in ("started_at", "finished_at", "exit_code", "signal", "duration_ms", "reason"):
            value = getattr(state, key)
            if value is not None:
                row[key] = value
    # Timestamps have whole seconds: within one, meta.json's mtime orders jobs by creation.
    row["_sort"] = (row.get("started_at") or row["created_at"], _mtime_ns(job_dir / META_FILE), meta.job_id)
    row["_created"] = parse_ts(meta.created_at)
    row["_search"] = " ".join(
        [meta.job_id, " ".join(meta.command), meta.cwd or "", " ".join(meta.tags), row.get("reason", "")]
    ).lower()
    return row


def _mtime_ns(path: Path) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0


def _is_active(row: dict[str, Any] | None) -> bool:
    return row is not None and row["state"] in (JobStatus.CREATED.value, JobStatus.RUNNING.value)


class JobIndex:
    """Summary rows of every job under ``root``, refreshed incrementally (see module doc).

    Thread-safe: the server calls :meth:`query` from worker threads.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: dict[str, _Cached] = {}
        self._lock = threading.Lock()

    def rows(self) -> tuple[list[dict[str, Any]], int]:
        """``(rows, skipped)``: one row per readable job, in no particular order."""
        with self._lock:
            fresh: dict[str, _Cached] = {}
            now_ns = time.time_ns()
            for entry in iter_job_dirs(self.root):
                try:
                    mtime_ns = entry.stat(follow_symlinks=False).st_mtime_ns
                except OSError:
                    continue
                cached = self._cache.get(entry.name)
                if (
                    cached is not None
                    and cached.trusted
                    and cached.mtime_ns == mtime_ns
                    and not _is_active(cached.row)
                ):
                    fresh[entry.name] = cached
                    continue
                row = _summary(Path(entry.path))
                fresh[entry.name] = _Cached(mtime_ns, now_ns - mtime_ns > _RACY_NS, row)
            self._cache = fresh
            rows = [cached.row for cached in fresh.values() if cached.row is not None]
            return rows, len(fresh) - len(rows)

    def query(
        self,
        *,
        state: str | None = None,
        tag: str | None = None,
        text: str | None = None,
        cwd: str | None = None,
        limit: int = 200,
        window: str = "hour",
        now: float | None = None,
    ) -> dict[str, Any]:
        """The page's table: filtered rows (newest first, at most ``limit``), counts per
        state (ignoring the state filter, for the filter chips), and the activity picture
        of every job in scope."""
        if state is not None and state not in STATES:
            raise InvalidArgument(f"invalid state filter {state!r}: expected one of {', '.join(STATES)}")
        if window not in ACTIVITY_WINDOWS:
            raise InvalidArgument(f"invalid activity window {window!r}: expected hour or day")
        patterns: Sequence[str] = [validate_tag_pattern(tag)] if tag else ()
        needle = text.lower().strip() if text else ""
        limit = max(1, min(limit, MAX_ROWS))
        rows, skipped = self.rows()
        scoped = [row for row in rows if cwd is None or row["cwd"] == cwd]
        counts = dict.fromkeys(STATES, 0)
        matching: list[dict[str, Any]] = []
        for row in scoped:
            if patterns and not tags_match(patterns, row["tags"]):
                continue
            if needle and needle not in row["_search"]:
                continue
            counts[row["state"]] += 1
            if state is None or row["state"] == state:
                matching.append(row)
        matching.sort(key=lambda row: row["_sort"], reverse=True)
        shown = [{key: value for key, value in row.items() if not key.startswith("_")} for row in matching]
        return {
            "root": str(self.root),
            "jobs": shown[:limit],
            "matched": len(matching),
            "total": len(scoped),
            "skipped": skipped,
            "counts": counts,
            "activity": activity(scoped, window, time.time() if now is None else now),
        }


def activity(rows: Sequence[dict[str, Any]], window: str, now: float) -> dict[str, Any]:
    """Jobs created in each bucket of the window, split by their current state; an
    ``exited`` job with a non-zero exit code counts as ``nonzero`` (a failure to a reader)."""
    count, width = ACTIVITY_WINDOWS[window]
    end = (int(now) // width + 1) * width
    start = end - count * width
    buckets: list[dict[str, int]] = [{} for _ in range(count)]  # only states with jobs
    for row in rows:
        created = row["_created"]
        if created is not None and start <= created < end:
            bucket = buckets[(created - start) // width]
            key = row["state"]
            if key == "exited" and row.get("exit_code", 0) != 0:
                key = "nonzero"
            bucket[key] = bucket.get(key, 0) + 1
    return {"window": window, "start": start, "bucket_seconds": width, "buckets": buckets}


# -- job detail and logs -----------------------------------------------------------------


def job_detail(root: Path, given: str) -> dict[str, Any]:
    """Everything the job view shows: definition, state and log sizes (no env values:
    ``serve``'s ``/exec`` stores them unmasked)."""
    job_id, job_dir = resolve_job(root, given)
    try:
        meta = read_meta(job_dir)
        state = read_state(job_dir)
    except StateCorrupt:
        if not job_dir.exists():  # deleted between resolving and reading: gone, not corrupt
            raise JobNotFound(given) from None
        raise
    data: dict[str, Any] = {
        "job_id": job_id,
        "short_job_id": job_id[:7],
        "state": state.status.value,
        "command": meta.command,
        "cwd": meta.cwd,
        "tags": meta.tags,
        "created_at": meta.created_at,
        "env_keys": meta.env_keys,
        "timeout_ms": meta.timeout_ms,
        "updated_at": state.updated_at,
        "log_sizes": {name: _size(job_dir / file) for name, file in LOG_FILES.items()},
    }
    for key in ("started_at", "finished_at", "exit_code", "signal", "duration_ms", "reason", "pid"):
        value = getattr(state, key)
        if value is not None:
            data[key] = value
    return data


def _size(path: Path) -> int:
    try:
        return os.lstat(path).st_size
    except OSError:
        return 0


def open_log(root: Path, given: str, stream: str) -> tuple[str, int]:
    """``(job_id, fd)`` of one of a job's log files, opened without following symlinks
    and refused unless it is a regular file (a FIFO planted there must not hang a reader)."""
    if stream not in LOG_FILES:
        raise InvalidArgument(f"invalid stream {stream!r}: expected stdout, stderr or full")
    job_id, job_dir = resolve_job(root, given)
    path = job_dir / LOG_FILES[stream]
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)  # not written yet: empty
    except OSError as exc:
        raise AgentExecError(f"failed to open {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode) and path.exists():
        os.close(fd)
        raise AgentExecError(f"failed to open {path}: not a regular file")
    return job_id, fd


def _complete_utf8_end(data: bytes) -> int:
    """Length of ``data`` without a UTF-8 sequence cut short at its end (kept for the next read)."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 == 0x80:
            continue  # continuation byte: look further back for the lead
        if byte >= 0xC0:
            needed = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return len(data) - back if needed > back else len(data)
        return len(data)
    return len(data)


def log_slice(root: Path, given: str, stream: str, *, offset: int | None, max_bytes: int) -> dict[str, Any]:
    """Bytes ``[offset, offset + max_bytes)`` of a log, lossy-decoded, or its last
    ``max_bytes`` when ``offset`` is None (or past the end). ``range`` is the byte range
    returned: the page asks for ``range[1]`` next; a UTF-8 character cut by the end of a
    slice is left for that next read (unless it is all the slice has)."""
    max_bytes = max(1, min(max_bytes, MAX_LOG_SLICE))
    job_id, fd = open_log(root, given, stream)
    try:
        total = os.fstat(fd).st_size
        tail = offset is None or not 0 <= offset <= total
        begin = max(0, total - max_bytes) if tail or offset is None else offset
        data = os.pread(fd, min(max_bytes, total - begin), begin) if total > begin else b""
    finally:
        os.close(fd)
    complete = _complete_utf8_end(data)
    if complete > 0:  # never trim to nothing: a stray partial character must not stall a reader
        data = data[:complete]
    if tail and begin > 0:
        # A tail starts at a line (or at least a character) boundary, not mid-way.
        newline = data.find(b"\n", 0, 4096)
        skip = newline + 1 if newline >= 0 else 0
        while skip < len(data) and data[skip] & 0xC0 == 0x80:
            skip += 1
        data = data[skip:]
        begin += skip
    return {
        "job_id": job_id,
        "stream": stream,
        "text": lossy(data),
        "range": [begin, begin + len(data)],
        "total_bytes": total,
    }
