"""``agent-exec schema``: the bundled JSON Schema of every response document.

The schema ships as package data (``schema/agent-exec.schema.json``) and is returned
verbatim. Unlike upstream's copy it describes what this implementation really prints —
every response type, the extension fields (``reason``, the inline output of ``wait``) and
no snapshot-era leftovers — and the test suite validates real CLI output against it, so
it cannot silently go stale.
"""

from __future__ import annotations

from typing import Any

import orjson

from ._errors import AgentExecError

SCHEMA_FORMAT = "json-schema-draft-07"
_RESOURCE = ("schema", "agent-exec.schema.json")
_NAME = "/".join(_RESOURCE)


def load_schema() -> dict[str, Any]:
    """The bundled schema document; ``internal_error`` if it is missing or not a JSON object."""
    from importlib import resources

    try:
        raw = resources.files(__package__).joinpath(*_RESOURCE).read_bytes()
        document = orjson.loads(raw)
    except (OSError, orjson.JSONDecodeError) as exc:
        raise AgentExecError(f"schema file not found; the bundled {_NAME} is unreadable: {exc}") from None
    if not isinstance(document, dict):
        raise AgentExecError(f"schema file not found; the bundled {_NAME} is not a JSON object")
    return document


def schema_data() -> dict[str, Any]:
    """The ``schema`` response: format, document, and the document's ``$comment`` date."""
    document = load_schema()
    comment = document.get("$comment")
    return {
        "schema_format": SCHEMA_FORMAT,
        "schema": document,
        "generated_at": comment if isinstance(comment, str) else "unknown",
    }
