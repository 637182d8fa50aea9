"""Timestamps and durations in the formats of the on-disk contract."""

from __future__ import annotations

import re
import time

from ._errors import InvalidDuration

_DURATION = re.compile(r"^(\d+)([dhms]?)$")
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1, "": 1}


def format_ts(epoch: float) -> str:
    """UTC, whole seconds, ``YYYY-MM-DDTHH:MM:SSZ`` (the only timestamp form agent-exec writes)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def now_ts() -> str:
    """The current time as a contract timestamp."""
    return format_ts(time.time())


def parse_duration(text: str) -> int:
    """Seconds in ``30d``/``24h``/``60m``/``3600s``/``3600``; raise :class:`InvalidDuration`."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise InvalidDuration(text)
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
