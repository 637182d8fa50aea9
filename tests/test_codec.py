"""The two JSON encoders give the same bytes, and the two parsers accept the same files.

The CLI prints a read command's small document with the standard library's ``json`` and
bulk output with orjson (see ``_codec``); the 0.2.3 contract is byte for byte, so both
must agree on every document agent-exec can print.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys

import orjson
import pytest

from agent_exec import _codec
from conftest import Cli

TRICKY_STRINGS = [
    "",
    "plain ascii",
    'quote " backslash \\ slash / </script>',
    "".join(chr(code) for code in range(0x20)),  # every C0 control: \\uXXXX or short escapes
    "\x7f del, \x80\x9f C1 controls",
    "é à ü ß \u2013 \u201ccurly\u201d … ©",
    "日本語テキスト 中文 한국어",
    "emoji 😀 👩‍👩‍👧 astral 𝄞",
    "line\u2028separator\u2029paragraph",
    "\ufeff bom \ufffd replacement \uffff nonchar",
    "tab\tnewline\ncr\rformfeed\fbackspace\b",
    "x" * 70_000,
]
TRICKY_INTS = [0, -1, 1, 2**31, 2**53 + 1, 2**63 - 1, -(2**63), 2**64 - 1]


def _documents() -> list[object]:
    docs: list[object] = [{"s": text} for text in TRICKY_STRINGS]
    docs += [{"n": number} for number in TRICKY_INTS]
    docs += [
        {},
        [],
        {"a": [], "b": {}, "c": [[]], "d": [{}]},
        {"t": True, "f": False, "n": None},
        {key: index for index, key in enumerate(TRICKY_STRINGS[:11])},  # tricky keys, insertion order
        {"z": 1, "a": 2, "é": 3, "Z": 4, "_": 5},
        [TRICKY_STRINGS, TRICKY_INTS, [None, True, False], (1, "tuple")],
        {
            "schema_version": "0.1",
            "ok": True,
            "type": "status",
            "job_id": "0123456789abcdef0123456789abcdef",
            "state": "exited",
            "exit_code": 0,
            "created_at": "2026-01-01T00:00:00Z",
            "stdout": "héllo\n\x1b[31mred\x1b[0m\n",
            "stdout_range": [0, 24],
            "tags": ["ci.build", "x-y"],
        },
    ]
    return docs


DOCUMENTS = _documents()


@pytest.mark.parametrize("sort_keys", [False, True], ids=["insertion-order", "sorted"])
@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda doc: repr(doc)[:40])
def test_stdlib_and_orjson_lines_are_byte_identical(document: object, sort_keys: bool) -> None:
    assert _codec._plain(document)
    expected = _codec.orjson_line(document, sort_keys=sort_keys)
    assert _codec.stdlib_line(document, sort_keys=sort_keys) == expected
    assert _codec.dumps_line(document, sort_keys=sort_keys) == expected


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda doc: repr(doc)[:40])
def test_pretty_state_files_are_byte_identical(document: object) -> None:
    expected = orjson.dumps(document, option=orjson.OPT_INDENT_2)
    assert json.dumps(document, ensure_ascii=False, indent=2).encode() == expected
    assert _codec.dumps_pretty(document) == expected


@pytest.mark.parametrize(
    "document",
    [{"f": 1.5}, {"f": 1e-05}, {"big": 2**64}, {1: "int key"}, {"x": object()}],
    ids=["float", "float-exponent", "int-beyond-64-bits", "int-key", "object"],
)
def test_documents_the_encoders_could_disagree_on_go_to_orjson(document: object) -> None:
    assert not _codec._plain(document)
    try:
        expected = orjson.dumps(document, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:
        with pytest.raises(TypeError):
            _codec.dumps_line(document)
        return
    assert _codec.dumps_line(document) == expected


def test_undecodable_bytes_are_printed_as_replacement_characters() -> None:
    document = {"message": "job not found: \udcff\udcfe", "lone": "\ud800"}
    line = _codec.stdlib_line(document)
    assert json.loads(line) == {"message": "job not found: \ufffd\ufffd", "lone": "\ufffd"}
    assert _codec.dumps_line(document) == line


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a": 1, "b": [true, false, null], "c": "\\u00e9\\ud83d\\ude00", "d": -0, "e": 1.5e3}',
        '{"é": "日本", "emoji": "😀"}'.encode(),
        b"  [1, 2]\n",
        b'"\\u2028"',
    ],
)
def test_parsers_agree_on_valid_documents(raw: bytes) -> None:
    assert _codec.loads(raw) == orjson.loads(raw)


@pytest.mark.parametrize(
    "raw",
    [b"", b"{", b'{"a": NaN}', b"[Infinity]", b"[-Infinity]", b'{"a": 1} x', b'"\xff\xfe"', b"[" * 5000],
    ids=["empty", "truncated", "nan", "infinity", "minus-infinity", "trailing", "invalid-utf8", "deep"],
)
def test_parsers_refuse_the_same_invalid_documents(raw: bytes) -> None:
    with pytest.raises(ValueError):
        orjson.loads(raw)
    # The standard-library path, in a process that has not imported orjson.
    code = (
        "import sys\nfrom agent_exec import _codec\nassert 'orjson' not in sys.modules\n"
        "try:\n    _codec.loads(sys.stdin.buffer.read())\nexcept ValueError:\n    print('refused')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], input=raw, capture_output=True, timeout=30, check=False
    )
    assert (proc.returncode, proc.stdout) == (0, b"refused\n"), proc.stderr


def test_cli_prints_a_non_utf8_job_id_as_json_not_a_traceback(cli: Cli) -> None:
    result = cli("status", "\udcff")  # an undecodable argv byte, as the shell passes $'\xff'
    assert result.returncode == 1
    doc = result.doc
    assert doc["error"]["code"] == "job_not_found"
    assert doc["error"]["message"] == "job not found: \ufffd"


def _random_document(rng: random.Random, depth: int = 0) -> object:
    kind = rng.randrange(8 if depth < 4 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.choice([0, -1, 7, 2**63 - 1, -(2**63), rng.randrange(-(10**12), 10**12)])
    if kind in (3, 4):
        alphabet = 'ab "\\/\n\t\x00\x1f\x7f é€😀\u2028'
        return "".join(rng.choice(alphabet) for _ in range(rng.randrange(6)))
    if kind == 5:
        return [_random_document(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = [str(_random_document(rng, 4)) for _ in range(rng.randrange(4))]
    return {key: _random_document(rng, depth + 1) for key in keys}


def test_the_accelerator_paths_write_what_json_writes() -> None:
    """``_codec`` calls the ``_json`` C module directly and lays out indented files itself:
    byte for byte what ``json.dumps`` writes, and ``loads`` reads it back."""
    rng = random.Random(20261202)
    for _ in range(2000):
        document = _random_document(rng)
        compact = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
        assert _codec.stdlib_line(document) == (compact + "\n").encode()
        assert _codec._compact(document, allow_nan=False) == compact
        pretty = json.dumps(document, ensure_ascii=False, indent=2).encode()
        assert _codec._pretty_bytes(document) == pretty
        assert _codec._accelerated_loads(pretty) == document
        assert _codec._accelerated_loads(compact.encode()) == document
