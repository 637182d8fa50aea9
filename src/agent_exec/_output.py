"""The response envelope: exactly one document on stdout per invocation, JSON or YAML."""

from __future__ import annotations

import sys
from typing import Any

import orjson

from ._errors import AgentExecError
from ._models import SCHEMA_VERSION


def envelope(kind: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"schema_version": SCHEMA_VERSION, "ok": True, "type": kind, **data}


def error_envelope(error: AgentExecError) -> dict[str, Any]:
    return {"schema_version": SCHEMA_VERSION, "ok": False, "type": "error", "error": error.to_dict()}


def render(document: dict[str, Any], *, yaml: bool = False, sort_keys: bool = False) -> bytes:
    """One compact JSON line (non-ASCII kept literal), or the same data as block YAML."""
    if yaml:
        import yaml as pyyaml

        text = pyyaml.safe_dump(
            document, sort_keys=sort_keys, allow_unicode=True, default_flow_style=False, width=float("inf")
        )
        return text.encode("utf-8")
    option = orjson.OPT_APPEND_NEWLINE | (orjson.OPT_SORT_KEYS if sort_keys else 0)
    return orjson.dumps(document, option=option)


def emit(document: dict[str, Any], *, yaml: bool = False) -> None:
    """Write the response document to stdout (a closed stdout is not an error of the job)."""
    try:
        sys.stdout.buffer.write(render(document, yaml=yaml))
        sys.stdout.buffer.flush()
    except (BrokenPipeError, ValueError, OSError):
        pass
