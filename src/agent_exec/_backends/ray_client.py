"""The Ray Jobs client: Ray's own ``JobSubmissionClient``, imported only when a Ray job is
touched (it costs ~1.5 s and needs ``agent-exec[ray]``), with every HTTP request bounded
in time and every failure sorted into one of three kinds the callers act on.

Client calls block (``requests``): the library runs them in worker threads, the CLI and
the detached watcher call them directly.
"""

from __future__ import annotations

import os
from typing import Any

from .._errors import BackendUnavailable

__all__ = [
    "DEFAULT_ADDRESS",
    "HeadUnreachable",
    "RayJobMissing",
    "RayRequestFailed",
    "connect",
    "default_timeouts",
]

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
#: Seconds to establish a connection to the Jobs API / to wait for an answer.
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0


class RayRequestFailed(Exception):
    """The head answered, but not with success."""


class HeadUnreachable(RayRequestFailed):
    """No answer from the head: refused, timed out, or the connection broke."""


class RayJobMissing(RayRequestFailed):
    """The head does not know the job (restarted, or the job was deleted there)."""


def default_timeouts() -> tuple[float, float]:
    """``(connect, read)`` seconds; ``AGENT_EXEC_RAY_TIMEOUT`` overrides the connect one."""
    raw = os.environ.get("AGENT_EXEC_RAY_TIMEOUT", "")
    try:
        connect_timeout = float(raw) if raw else CONNECT_TIMEOUT
    except ValueError:
        connect_timeout = CONNECT_TIMEOUT
    return max(0.1, connect_timeout), READ_TIMEOUT


def _client_class() -> Any:
    try:
        from ray.job_submission import JobSubmissionClient
    except ImportError as exc:
        raise BackendUnavailable(
            f"the Ray backend needs Ray's job client: pip install 'agent-exec[ray]' (import failed: {exc})",
            retryable=False,
        ) from None

    class BoundedClient(JobSubmissionClient):  # type: ignore[misc,valid-type]
        """``JobSubmissionClient`` whose requests all carry a timeout (Ray's carry none, so
        an address that swallows packets would hang the caller)."""

        def __init__(self, address: str, timeouts: tuple[float, float]) -> None:
            self._agent_exec_timeouts = timeouts
            super().__init__(address)

        def _do_request(self, method: str, endpoint: str, **kwargs: Any) -> Any:
            kwargs.setdefault("timeout", self._agent_exec_timeouts)
            return super()._do_request(method, endpoint, **kwargs)

    return BoundedClient


def classify(exc: BaseException) -> RayRequestFailed:
    """Sort an exception raised by a client call into our three kinds."""
    if isinstance(exc, RayRequestFailed):
        return exc
    import requests

    text = str(exc) or type(exc).__name__
    if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout, ConnectionError)):
        return HeadUnreachable(text)
    if isinstance(exc, OSError):
        return HeadUnreachable(text)
    if "status code 404" in text or "does not exist" in text:
        return RayJobMissing(text)
    return RayRequestFailed(text)


def connect(address: str, timeouts: tuple[float, float] | None = None) -> Any:
    """A connected client (Ray checks the head's version on construction).

    :raises BackendUnavailable: Ray is not installed, or the head does not answer.
    """
    cls = _client_class()
    try:
        return cls(address, timeouts or default_timeouts())
    except Exception as exc:
        failure = classify(exc)
        raise BackendUnavailable(
            f"cannot reach the Ray Jobs API at {address}: {failure}",
            retryable=isinstance(failure, HeadUnreachable),
        ) from None


def call(method: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a client method, re-raising failures as :class:`RayRequestFailed` kinds."""
    try:
        return method(*args, **kwargs)
    except Exception as exc:
        raise classify(exc) from None
