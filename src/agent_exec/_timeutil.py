"""Timestamps and durations in the formats of the on-disk contract."""

from __future__ import annotations

import time

from ._errors import InvalidDuration

_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1, "": 1}


def format_ts(epoch: float) -> str:
    """UTC, whole seconds, ``YYYY-MM-DDTHH:MM:SSZ`` (the only timestamp form agent-exec writes)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def parse_ts(text: str) -> float | None:
    """Seconds since the epoch of a contract timestamp (its first 19 characters,
    ``YYYY-MM-DDTHH:MM:SS``, read as UTC); ``None`` if it is not one."""
    if len(text) < 19 or text[4] != "-" or text[7] != "-" or text[10] != "T" or text[13] != ":":
        return None
    try:
        fields = (int(text[0:4]), int(text[5:7]), int(text[8:10]), int(text[11:13]), int(text[14:16]))
        second = int(text[17:19]) if text[16] == ":" else -1
    except ValueError:
        return None
    year, month, day, hour, minute = fields
    if not (1 <= month <= 12 and 1 <= day <= 31 and 0 <= hour < 24 and 0 <= minute < 60 and 0 <= second < 61):
        return None
    import calendar

    return float(calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)))


def now_ts() -> str:
    """The current time as a contract timestamp."""
    return format_ts(time.time())


def parse_duration(text: str) -> int:
    """Seconds in ``30d``/``24h``/``60m``/``3600s``/``3600``; raise :class:`InvalidDuration`.

    (ASCII digits and an optional unit, tested without ``re``: its import costs a CLI
    call milliseconds.)"""
    stripped = text.strip()
    unit = stripped[-1:] if stripped[-1:] in ("d", "h", "m", "s") else ""
    digits = stripped[: len(stripped) - len(unit)]
    if not (digits.isascii() and digits.isdigit()):
        raise InvalidDuration(text)
    return int(digits) * _UNIT_SECONDS[unit]
