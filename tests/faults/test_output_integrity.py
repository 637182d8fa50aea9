"""Item 4: output is stored byte for byte whatever it contains, and reading it back is
bounded in memory and time whatever its size."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from .conftest import Cli, assert_no_traceback, py

pytestmark = pytest.mark.faults

GIB = 1 << 30
_CHUNK = 1 << 20
_SEED = 20240501

#: Writes ``GIB`` pseudo-random bytes (binary, invalid UTF-8, stray newlines) to stdout.
_GENERATOR = f"""
import random, sys
rng = random.Random({_SEED})
out = sys.stdout.buffer
for _ in range({GIB // _CHUNK}):
    out.write(rng.randbytes({_CHUNK}))
out.flush()
"""


def _expected_sha256() -> str:
    import random

    rng = random.Random(_SEED)
    digest = hashlib.sha256()
    for _ in range(GIB // _CHUNK):
        digest.update(rng.randbytes(_CHUNK))
    return digest.hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _measure_cli(root: Path, env: dict[str, str], *args: str) -> tuple[dict[str, Any], float, int]:
    """Run one CLI call in a fresh intermediate process and return ``(doc, seconds,
    max_rss_kib)`` of that call alone (RUSAGE_CHILDREN there sees only the CLI)."""
    probe = (
        "import resource, subprocess, sys, time\n"
        "start = time.monotonic()\n"
        "proc = subprocess.run(sys.argv[1:], capture_output=True)\n"
        "elapsed = time.monotonic() - start\n"
        "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
        "sys.stdout.buffer.write(proc.stdout)\n"
        "sys.stderr.write(f'{elapsed} {rss} {proc.returncode}\\n')\n"
    )
    argv = [sys.executable, "-c", probe, sys.executable, "-m", "agent_exec", "--root", str(root), *args]
    proc = subprocess.run(argv, capture_output=True, env=env, timeout=120)
    elapsed, rss, code = proc.stderr.decode().split()[-3:]
    assert int(code) == 0, proc
    assert b"Traceback" not in proc.stderr
    return orjson.loads(proc.stdout), float(elapsed), int(rss)


def _doc(stdout: str) -> dict[str, Any]:
    """Parse the one JSON line. (``str.splitlines`` would also split at U+2028 or U+0085,
    which lossy-decoded random bytes contain and JSON strings may hold unescaped.)"""
    lines = stdout.rstrip("\n").split("\n")
    assert len(lines) == 1, stdout[:200]
    return orjson.loads(lines[0])  # type: ignore[no-any-return]


@pytest.mark.slow
@pytest.mark.timeout(900)  # ~35 s on an idle 2-core machine; minutes when it is shared
def test_a_gibibyte_of_binary_output_lands_byte_for_byte(
    cli: Cli, root: Path, cli_env: dict[str, str]
) -> None:
    job_id = cli("run", "--no-wait", "--", *py(_GENERATOR)).doc["job_id"]
    waited = _doc(cli("wait", "--until", "600", "--max-bytes", "4096", job_id, timeout=700).stdout)
    assert waited["state"] == "exited" and waited["exit_code"] == 0, waited
    assert waited["stdout_total_bytes"] == GIB
    log = root / job_id / "stdout.log"
    assert log.stat().st_size == GIB
    assert _file_sha256(log) == _expected_sha256()
    doc, elapsed, rss_kib = _measure_cli(root, cli_env, "tail", "--tail-lines", "20", job_id)
    assert doc["stdout_total_bytes"] == GIB
    assert doc["stdout_range"][1] == GIB
    assert elapsed < 5, elapsed
    assert rss_kib < 150 * 1024, rss_kib


def test_tail_of_a_huge_log_is_bounded_in_memory_and_time(
    cli: Cli, root: Path, cli_env: dict[str, str]
) -> None:
    """The fast variant: a sparse 4 GiB log (no newlines for 4 GiB, then a few lines)."""
    job_id = cli("run", "--", "true").doc["job_id"]
    log = root / job_id / "stdout.log"
    with open(log, "r+b") as file:
        file.truncate(4 * GIB)
        file.seek(0, os.SEEK_END)
        file.write(b"".join(b"line %d\n" % i for i in range(100)))
    total = log.stat().st_size
    cases = [
        (("tail", job_id), 50),
        (("tail", "--tail-lines", "0", job_id), None),
        (("tail", "--tail-lines", "3", "--max-bytes", str(8 * 1024 * 1024), job_id), 3),
        # Fewer lines than asked inside a window of NULs: the scan stops at the window.
        (("tail", "--tail-lines", "500", "--max-bytes", str(1024 * 1024), job_id), None),
    ]
    for args, lines in cases:
        doc, elapsed, rss_kib = _measure_cli(root, cli_env, *args)
        assert doc["stdout_total_bytes"] == total
        begin, end = doc["stdout_range"]
        assert end == total
        if lines is not None:
            assert doc["stdout"] == "".join(f"line {i}\n" for i in range(100 - lines, 100))
        assert elapsed < 5, (args, elapsed)
        print(args[:-1], f"{elapsed:.3f}s", f"{rss_kib} KiB")
        # An idle interpreter with the CLI loaded is ~25 MiB; the excerpt is at most 8 MiB
        # (its JSON at most 6x that for NULs), never the 4 GiB log.
        assert rss_kib < 64 * 1024, (args, rss_kib)
        assert begin >= total - 8 * 1024 * 1024


TEXT = "héllo wörld €😀 ok\n"


@pytest.mark.parametrize("max_bytes", range(1, 8))
def test_inline_output_cut_inside_multibyte_characters(cli: Cli, max_bytes: int) -> None:
    raw = TEXT.encode()
    run = cli("run", "--max-bytes", str(max_bytes), "--", "printf", "%s", TEXT)
    assert_no_traceback(run)
    doc = run.doc
    waited = cli("wait", "--max-bytes", str(max_bytes), doc["job_id"]).doc
    tail = cli("tail", "--max-bytes", str(max_bytes), doc["job_id"]).doc
    for inline in (doc, waited):
        assert inline["stdout_range"] == [0, max_bytes], inline
        assert inline["stdout"] == raw[:max_bytes].decode("utf-8", "replace")
        assert inline["stdout_total_bytes"] == len(raw)
    assert tail["stdout_range"] == [len(raw) - max_bytes, len(raw)]
    assert tail["stdout"] == raw[-max_bytes:].decode("utf-8", "replace")


def test_invalid_utf8_is_lossy_inline_and_raw_on_disk(cli: Cli, root: Path) -> None:
    payload = b"ok \xff\xfe bad \xc3( cut \xe2\x82\n\x00nul\r\n"
    code = f"import sys; sys.stdout.buffer.write({payload!r}); sys.stderr.buffer.write({payload!r})"
    doc = cli("run", "--", *py(code)).doc
    waited = cli("wait", doc["job_id"]).doc
    assert waited["stdout"] == payload.decode("utf-8", "replace")
    assert waited["stderr"] == payload.decode("utf-8", "replace")
    assert (root / doc["job_id"] / "stdout.log").read_bytes() == payload
    assert (root / doc["job_id"] / "stderr.log").read_bytes() == payload
    full = (root / doc["job_id"] / "full.log").read_bytes()
    full.decode("utf-8")  # the combined log is always valid UTF-8
    assert full.count(b"[STDOUT] ") == 2 and full.count(b"[STDERR] ") == 2
    _ = time
