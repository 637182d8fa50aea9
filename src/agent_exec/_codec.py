"""JSON encoding and decoding, with the encoder chosen by what the call costs in total.

orjson is several times faster per document than the standard library's ``json``, but
importing it costs more than starting the interpreter (its initialisation imports
``dataclasses``, ``inspect``, ``uuid``, ``platform``, ``enum`` and ``json``). A read
command prints one small document after parsing one or two small files: there the
standard library is faster from start to exit, and faster still used through its C
accelerator ``_json`` directly (the scanner and encoder ``json`` itself calls), since
``json``'s own modules compile regular expressions at import: ``re`` and ``enum`` would
cost a third of an interpreter start on every call. Indented state files are laid out
here (``json`` does that in pure Python), with every scalar still encoded by ``_json``.
Bulk work (``list`` over thousands of jobs, the supervisor, the library, ``serve``)
imports orjson, and from then on every call here uses it.

Both encoders produce the same bytes for the documents agent-exec writes (compact
separators, insertion key order, non-ASCII literal, control characters as ``\\uXXXX`` or
the short escapes); :func:`dumps_line` hands anything where they could differ (floats,
integers beyond 64 bits, non-``str`` keys, other types) to orjson.
``tests/test_codec.py`` compares them on tricky documents.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: this module is on every CLI call's path
if TYPE_CHECKING:
    from typing import Any

#: Above this many files to parse, importing orjson pays for itself (see README, Benchmarks).
BULK_THRESHOLD = 300

_INT_MIN = -(1 << 63)
_INT_MAX = (1 << 64) - 1


def use_orjson() -> None:
    """Switch this process to orjson (bulk callers: parsing many files, long-lived hosts)."""
    import orjson  # noqa: F401


def _loaded() -> bool:
    return "orjson" in sys.modules


_decoder: Any = None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid JSON constant {name}")  # orjson refuses NaN/Infinity too


class _ScanContext:
    """What ``_json.make_scanner`` reads off a ``json.JSONDecoder``: strict strings, plain
    ``dict``/``float``/``int``, and no ``NaN``/``Infinity``."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = staticmethod(_reject_constant)


_JSON_WHITESPACE = " \t\n\r"


def _scanner() -> Any:
    """The standard library's C scanner (``json.scanner.c_make_scanner``) on its own:
    ``json.decoder`` compiles regular expressions at import, and ``re`` with ``enum``
    costs as much as a third of an interpreter start on a CLI call."""
    global _decoder
    if _decoder is None:  # one scanner for the process (json.loads with options makes one per call)
        accelerator = _accelerator()
        if accelerator is None:  # pragma: no cover - an interpreter without it
            import json

            _decoder = json.JSONDecoder(parse_constant=_reject_constant).scan_once  # type: ignore[attr-defined]
        else:
            _decoder = accelerator.make_scanner(_ScanContext())
    return _decoder


def loads(raw: bytes) -> Any:
    """Parse a JSON document; raise :class:`ValueError` if it is not valid JSON.

    Both parsers refuse ``NaN``/``Infinity`` and invalid UTF-8. A valid document is
    parsed by the very C scanner ``json.loads`` uses; anything else is handed to
    ``json.JSONDecoder`` itself, so that errors are exactly the standard library's.
    """
    if _loaded():
        import orjson

        return orjson.loads(raw)
    return _accelerated_loads(raw)


def _accelerated_loads(raw: bytes) -> Any:
    """:func:`loads` through ``_json``'s scanner (see the module docstring)."""
    try:
        text = raw.decode("utf-8")
        scan = _scanner()
        start = len(text) - len(text.lstrip(_JSON_WHITESPACE))
        document, end = scan(text, start)
        if not text[end:].strip(_JSON_WHITESPACE):
            return document
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    except (StopIteration, ValueError, SystemError):
        # Not valid JSON. (The scanner builds its error from ``json.decoder``, which it
        # expects to be imported; when it is not, CPython 3.11 reports a ``SystemError``.)
        pass
    return _stdlib_loads(raw)


def _stdlib_loads(raw: bytes) -> Any:
    """``json.JSONDecoder.decode``: the document, or the standard library's error."""
    import json

    try:
        return json.JSONDecoder(parse_constant=_reject_constant).decode(raw.decode("utf-8"))
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def _plain(value: object) -> bool:
    """True if the standard library encodes ``value`` exactly as orjson does."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        return _INT_MIN <= value <= _INT_MAX  # type: ignore[operator]
    if kind is dict:
        return all(type(key) is str and _plain(item) for key, item in value.items())  # type: ignore[attr-defined]
    if kind is list or kind is tuple:
        return all(_plain(item) for item in value)  # type: ignore[attr-defined]
    return False


def _lossy(text: str) -> bytes:
    """UTF-8 of ``text`` with unpaired surrogates as U+FFFD: an undecodable byte of argv
    (``surrogateescape``) becomes one U+FFFD, as ``utf-8-lossy`` log output shows it."""
    import re

    text = re.sub("[\ud800-\udc7f\udd00-\udfff]", "\ufffd", text)
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace").encode("utf-8")


def dumps_line(document: Any, *, sort_keys: bool = False) -> bytes:
    """One compact JSON line (non-ASCII kept literal) ending in a newline.

    A string that is not valid Unicode (a command word or job id given as undecodable
    bytes) is written with U+FFFD in place of the bad bytes, never refused.
    """
    if _loaded() or not _plain(document):
        try:
            return orjson_line(document, sort_keys=sort_keys)
        except TypeError:
            if not _plain(document):
                raise
    return stdlib_line(document, sort_keys=sort_keys)


def orjson_line(document: Any, *, sort_keys: bool = False) -> bytes:
    """:func:`dumps_line` with orjson (raises ``TypeError`` on a string that is not Unicode)."""
    import orjson

    option = orjson.OPT_APPEND_NEWLINE | (orjson.OPT_SORT_KEYS if sort_keys else 0)
    return orjson.dumps(document, option=option)  # type: ignore[no-any-return]


def stdlib_line(document: Any, *, sort_keys: bool = False) -> bytes:
    """:func:`dumps_line` with the standard library (for documents :func:`_plain` accepts)."""
    text = _compact(document, sort_keys=sort_keys) + "\n"
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _lossy(text)


def _raise_not_serializable(value: object) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _compact(document: Any, *, sort_keys: bool = False, allow_nan: bool = True) -> str:
    """``json.dumps(document, ensure_ascii=False, separators=(",", ":"))``, through the C
    encoder that call uses (``json.encoder.c_make_encoder``) without importing
    ``json.encoder`` and its regular expressions."""
    accelerator = _accelerator()
    if accelerator is None:  # pragma: no cover - an interpreter without it
        import json

        return json.dumps(
            document, ensure_ascii=False, separators=(",", ":"), sort_keys=sort_keys, allow_nan=allow_nan
        )
    if type(document) is str:
        return accelerator.encode_basestring(document)  # type: ignore[no-any-return]
    quote = accelerator.encode_basestring
    encode = accelerator.make_encoder(
        {}, _raise_not_serializable, quote, None, ":", ",", sort_keys, False, allow_nan
    )
    return "".join(encode(document, 0))


_C_JSON: list[Any] = []


def _accelerator() -> Any:
    """The ``_json`` C module (``None`` on an interpreter without it), loaded once."""
    if not _C_JSON:
        try:
            import _json
        except ImportError:  # pragma: no cover
            _C_JSON.append(None)
        else:
            _C_JSON.append(_json)
    return _C_JSON[0]


def _pretty(document: Any, depth: int, out: list[str]) -> None:
    """``json.dumps(document, ensure_ascii=False, indent=2)`` for documents :func:`_plain`
    accepts (the standard library writes indented JSON in pure Python, after importing
    ``re``): containers here, scalars by the C encoder."""
    kind = type(document)
    if (kind is dict or kind is list or kind is tuple) and document:
        inner = "\n" + "  " * (depth + 1)
        out.append("{" if kind is dict else "[")
        separator = inner
        for item in document.items() if kind is dict else document:
            out.append(separator)
            if kind is dict:
                key, item = item
                out.append(_compact(key))
                out.append(": ")
            _pretty(item, depth + 1, out)
            separator = "," + inner
        out.append("\n" + "  " * depth + ("}" if kind is dict else "]"))
    else:
        out.append(_compact(document))


def dumps_compact(document: Any) -> bytes:
    """Compact JSON without a newline, for data passed between our own processes (where
    the exact bytes do not matter, so floats take the standard library's form too).

    A string that is not valid Unicode is refused (a ``TypeError``, as orjson refuses
    it), never altered: this carries a job's data.
    """
    if _loaded():
        import orjson

        return orjson.dumps(document)  # type: ignore[no-any-return]
    try:
        return _compact(document, allow_nan=False).encode("utf-8")
    except UnicodeEncodeError:
        import orjson

        return orjson.dumps(document)  # type: ignore[no-any-return]


def _pretty_bytes(document: Any) -> bytes:
    """``json.dumps(document, ensure_ascii=False, indent=2)`` in UTF-8, for a :func:`_plain` document."""
    out: list[str] = []
    _pretty(document, 0, out)
    return "".join(out).encode("utf-8")


def dumps_pretty(document: Any) -> bytes:
    """Two-space indented JSON without a trailing newline (the state-file layout)."""
    if _loaded() or not _plain(document):
        import orjson

        return orjson.dumps(document, option=orjson.OPT_INDENT_2)  # type: ignore[no-any-return]
    try:
        return _pretty_bytes(document)
    except UnicodeEncodeError:  # refused as orjson refuses it (a TypeError naming the cause)
        import orjson

        return orjson.dumps(document, option=orjson.OPT_INDENT_2)  # type: ignore[no-any-return]
