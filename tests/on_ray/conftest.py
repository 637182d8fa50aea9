"""Ray tests: one local head for the session, on loopback only (see ``_head.py``).

Run them inside a loopback-only network namespace, as ``.ci/run`` does::

    unshare --net --fork sh -c 'ip link set lo up && exec .venv/bin/python -m pytest -m ray tests/ray'

The default run (``pytest``) deselects them (``-m "not ray"`` in the pytest options).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ._head import UNSHARE_HINT, LocalRayHead, loopback_only


@pytest.fixture(scope="session")
def ray_head() -> Iterator[LocalRayHead]:
    """A Ray head shared by the session's Ray tests; stopped at the end whatever happens."""
    # CI sets AGENT_EXEC_RAY_REQUIRED: there a missing Ray or namespace fails, never skips.
    give_up = pytest.fail if os.environ.get("AGENT_EXEC_RAY_REQUIRED") else pytest.skip
    try:
        import ray.job_submission  # noqa: F401
    except ImportError:
        give_up("Ray is not installed: pip install -e '.[ray]'")
    if not loopback_only():
        give_up(f"Ray tests run only in a loopback-only network namespace: {UNSHARE_HINT}")
    base = Path(tempfile.mkdtemp(prefix="agent-exec-ray-"))
    head = LocalRayHead(base, port_base=46000)
    try:
        head.start()
        yield head
    finally:
        head.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def ray_env(cli_env: dict[str, str], ray_head: LocalRayHead) -> dict[str, str]:
    """A CLI environment that sends jobs to the session's head."""
    env = dict(cli_env)
    env.update(AGENT_EXEC_BACKEND="ray", AGENT_EXEC_RAY_ADDRESS=ray_head.address)
    env.pop("AGENT_EXEC_RAY_TIMEOUT", None)
    env["AGENT_EXEC_RAY_LOST_AFTER"] = os.environ.get("AGENT_EXEC_RAY_LOST_AFTER", "15")
    return env
