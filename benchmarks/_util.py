"""Shared helpers of the benchmark scripts: how to run the CLI as an installed package
runs, median timing against a floor measured in the same run, one table format, and
memory readings from ``/proc``.

Why the care with the environment: the development shell sets
``PYTHONDONTWRITEBYTECODE=1``, which makes every CLI start-up recompile our modules (a
cost no installed package pays). :func:`bench_env` removes it and :func:`compile_package`
writes the bytecode once, so start-up figures reflect an installed package.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import agent_exec

PACKAGE_DIR = Path(agent_exec.__file__).resolve().parent
PYTHON = sys.executable


def cli_argv() -> list[str]:
    """The ``agent-exec`` console script next to this interpreter (``python -m`` as a fallback).

    The console script is what users run; it shares the interpreter (and so the floor's
    start-up cost) with ``PYTHON``.
    """
    script = Path(PYTHON).parent / "agent-exec"
    if script.is_file():
        return [str(script)]
    return [PYTHON, "-m", "agent_exec"]


def floor_argv() -> list[str]:
    """``python3 -c pass`` with the CLI's interpreter: the cheapest possible start-up."""
    return [PYTHON, "-c", "pass"]


def bench_env(config_home: Path | None = None) -> dict[str, str]:
    """The environment for every timed subprocess: bytecode writes allowed, no user config."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("AGENT_EXEC_ROOT", None)
    if config_home is not None:
        env["XDG_CONFIG_HOME"] = str(config_home)
    return env


def compile_package() -> None:
    """Byte-compile the package once, as ``pip install`` does, before timing start-ups."""
    subprocess.run(
        [PYTHON, "-m", "compileall", "-q", str(PACKAGE_DIR)],
        check=True,
        env=bench_env(),
    )


@contextlib.contextmanager
def temp_root(prefix: str = "agent-exec-bench-") -> Iterator[Path]:
    """A scratch directory holding the jobs root (``jobs``) and an empty config home (``cfg``)."""
    with tempfile.TemporaryDirectory(prefix=prefix) as raw:
        base = Path(raw)
        (base / "jobs").mkdir()
        (base / "cfg").mkdir()
        yield base


def time_once(argv: Sequence[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[bytes]]:
    """Wall time of one subprocess run, output captured (as an agent's harness would)."""
    start = time.perf_counter()
    proc = subprocess.run(list(argv), capture_output=True, env=env, check=False)
    return time.perf_counter() - start, proc


def median_pair(
    floor: Sequence[str],
    measured: Sequence[str],
    *,
    env: dict[str, str],
    repeat: int,
    warmup: int = 2,
    settle: float = 0.0,
) -> tuple[float, float, list[subprocess.CompletedProcess[bytes]]]:
    """Median wall time of ``floor`` and ``measured``, interleaved so drift hits both alike.

    ``settle``: seconds to pause before each timed run, so that what a previous run left
    working in the background (a job's supervisor) is done first.
    Returns (floor median, measured median, the measured runs' results for checking).
    """
    for _ in range(warmup):
        time_once(floor, env)
        time_once(measured, env)
    floors: list[float] = []
    ours: list[float] = []
    results: list[subprocess.CompletedProcess[bytes]] = []
    for _ in range(repeat):
        if settle:
            time.sleep(settle)
        elapsed, _proc = time_once(floor, env)
        floors.append(elapsed)
        if settle:
            time.sleep(settle)
        elapsed, proc = time_once(measured, env)
        ours.append(elapsed)
        results.append(proc)
    return statistics.median(floors), statistics.median(ours), results


@dataclass
class Row:
    """One line of a results table. ``target`` is a maximum ratio; ``None`` means report only."""

    name: str
    floor: float | None
    measured: float
    target: float | None
    unit: str = "s"
    note: str = ""
    ok: bool = True  # functional checks (bytes kept, state reached) passed

    @property
    def ratio(self) -> float | None:
        if self.floor is None or self.floor <= 0:
            return None
        return self.measured / self.floor

    @property
    def verdict(self) -> str:
        if not self.ok:
            return "FAIL"
        if self.target is None:
            return "info"
        value = self.ratio if self.floor is not None else self.measured
        return "PASS" if value is not None and value <= self.target else "FAIL"


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value * 1000:.1f} ms" if value < 10 else f"{value:.2f} s"
    if unit == "MiB":
        return f"{value:.1f} MiB"
    return f"{value:g} {unit}"


def print_table(title: str, rows: Sequence[Row]) -> None:
    """A fixed-width table: benchmark, floor, measured, ratio, target, verdict, note."""
    header = ("benchmark", "floor", "measured", "ratio", "target", "result", "note")
    lines = []
    for row in rows:
        ratio = row.ratio
        if row.target is None:
            target = "-"
        elif row.floor is not None:
            target = f"<= {row.target:g}x"
        else:
            target = f"<= {_fmt(row.target, row.unit)}"
        lines.append(
            (
                row.name,
                _fmt(row.floor, row.unit),
                _fmt(row.measured, row.unit),
                "-" if ratio is None else f"{ratio:.2f}x",
                target,
                row.verdict,
                row.note,
            )
        )
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *lines, strict=True)]
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"\n== {title} (load average {load}; figures are noisy when it exceeds the core count) ==")
    for cells in (header, *lines):
        print("  ".join(str(cell).ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip())
    sys.stdout.flush()


# -- memory ---------------------------------------------------------------------------


def read_pss_mib(pid: int) -> float | None:
    """Proportional set size from ``/proc/PID/smaps_rollup`` (shared pages split fairly)."""
    return _read_kib_field(f"/proc/{pid}/smaps_rollup", "Pss:")


def read_rss_mib(pid: int) -> float | None:
    """Resident set size (``VmRSS``) from ``/proc/PID/status``."""
    return _read_kib_field(f"/proc/{pid}/status", "VmRSS:")


def read_hwm_mib(pid: int) -> float | None:
    """Peak resident set size so far (``VmHWM``), tracked by the kernel: no sampling gaps."""
    return _read_kib_field(f"/proc/{pid}/status", "VmHWM:")


def _read_kib_field(path: str, field: str) -> float | None:
    try:
        with open(path, encoding="ascii", errors="replace") as file:
            for line in file:
                if line.startswith(field):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def find_supervisor(job_id: str) -> int | None:
    """The pid of the detached supervisor of ``job_id`` (its title names the job)."""
    needle = f"_supervise --job-id {job_id}".encode()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as file:
                cmdline = file.read().replace(b"\0", b" ")
        except OSError:
            continue
        if needle in cmdline:
            return int(entry.name)
    return None


def wait_for_supervisor(job_id: str, timeout: float = 10.0) -> int | None:
    """Poll /proc until the supervisor has taken its title (it does so right after hand-over)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = find_supervisor(job_id)
        if pid is not None:
            return pid
        time.sleep(0.002)
    return None
