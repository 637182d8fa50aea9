"""Job backends: where a job's workload runs.

The runner, the CLI and the store are the same whatever the backend; a backend only
decides how a workload is started, observed, read back and stopped (``base.py`` is the
whole contract). ``local.py`` is the default (a supervisor on this machine);
``ray.py`` runs jobs on a Ray cluster through Ray Jobs. Nothing here imports Ray (or
anyio) until a Ray job is actually touched: the CLI's read path imports this package.
"""

from __future__ import annotations

from .._models import JobMeta

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: `kill`/`status` reach this module (import budget)
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

KINDS = ("local", "ray")


def backend_record(meta: JobMeta) -> dict[str, Any] | None:
    """``meta.json``'s ``backend`` entry of a job that does not run locally, else ``None``."""
    record = meta.extra.get("backend")
    if isinstance(record, dict) and record.get("kind") not in (None, "local"):
        return record
    return None


def backend_record_of(job_dir: Path) -> dict[str, Any] | None:
    """:func:`backend_record` of a job directory; ``None`` if ``meta.json`` is unreadable."""
    from .._errors import StateCorrupt
    from .._store import read_meta

    try:
        return backend_record(read_meta(job_dir))
    except StateCorrupt:
        return None
