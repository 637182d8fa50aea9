"""The response envelope: exactly one document on stdout per invocation, JSON or YAML."""

from __future__ import annotations

import sys

from ._codec import dumps_line
from ._models import SCHEMA_VERSION

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: this module is on every CLI call's path
if TYPE_CHECKING:
    from typing import Any

    from ._errors import AgentExecError


def envelope(kind: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"schema_version": SCHEMA_VERSION, "ok": True, "type": kind, **data}


def error_envelope(error: AgentExecError) -> dict[str, Any]:
    return {"schema_version": SCHEMA_VERSION, "ok": False, "type": "error", "error": error.to_dict()}


def render(document: dict[str, Any], *, yaml: bool = False, sort_keys: bool = False) -> bytes:
    """One compact JSON line (non-ASCII kept literal), or the same data as block YAML.

    The JSON encoder is chosen by :mod:`._codec` (the same bytes either way).
    """
    if yaml:
        import yaml as pyyaml

        text = pyyaml.safe_dump(
            document, sort_keys=sort_keys, allow_unicode=True, default_flow_style=False, width=float("inf")
        )
        return text.encode("utf-8")
    return dumps_line(document, sort_keys=sort_keys)


def emit(document: dict[str, Any], *, yaml: bool = False) -> None:
    """Write the response document to stdout (a closed stdout is not an error of the job)."""
    try:
        sys.stdout.buffer.write(render(document, yaml=yaml))
        sys.stdout.buffer.flush()
    except (BrokenPipeError, ValueError, OSError):
        pass
