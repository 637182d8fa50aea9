"""What one job's directory costs: the file creations, renames and unlinks of a job's life,
laid out three ways, on this disk (``/work``, ext4) and on a tmpfs, against a floor.

    python benchmarks/bench_jobdir.py [--jobs 300] [--tmpfs /tmp/aex-bench-tmpfs]

Each layout replays, in one process and without spawning anything, the exact sequence of
file operations the store performs for one ``run`` (launcher + supervisor), ``--jobs``
times into a fresh directory, and reports the median per-job cost of five rounds:

- ``before``: the layout before this change: ``mkdir``, ``meta.json`` via temp + rename,
  three empty logs, ``supervisor.lock``, the launcher's ``running`` record via temp +
  rename, the supervisor's reserve page, its ``running`` record with the workload pid and
  the terminal record (temp + rename each), the reserve removed.
- ``reserve as terminal temp only``: the same, but the reserve page is the terminal
  record's temporary file (written over, renamed onto ``state.json``).
- ``adopted``: that, and the directory built under ``.tmp-<id>`` (``meta.json`` and the
  launcher's ``state.json`` written directly: no reader can see them before the one
  ``rename`` that publishes the directory).
- ``adopted, lock on the directory``: with the supervisor lock taken on the directory
  itself instead of a ``supervisor.lock`` file (not adopted, see the README).
- floor: ``mkdir`` plus one file written, the least any job directory can cost.

The tmpfs is mounted (and unmounted) by the script when run as root; otherwise pass
``--tmpfs`` an existing tmpfs directory or the column is skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
META = b'{"job": {"id": "x"}, "command": ["true"], "created_at": "2026-01-01T00:00:00Z"}' * 4
STATE = b'{"job": {"id": "x", "status": "running"}, "updated_at": "2026-01-01T00:00:00Z"}'


def _write(dir_fd: int, name: str, data: bytes) -> None:
    fd = os.open(name, FLAGS, 0o600, dir_fd=dir_fd)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _atomic(dir_fd: int, name: str, data: bytes) -> None:
    tmp = f".tmp-{name}.{os.urandom(6).hex()}"
    _write(dir_fd, tmp, data)
    os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


def _old_supervisor(dir_fd: int) -> None:
    """The supervisor's part before: reserve page, running-with-pid and terminal records
    (temp + rename each), reserve removed."""
    _write(dir_fd, ".state.reserve", b" " * 4096)
    _atomic(dir_fd, "state.json", STATE)
    _atomic(dir_fd, "state.json", STATE)
    os.unlink(".state.reserve", dir_fd=dir_fd)


def _lean_supervisor(dir_fd: int) -> None:
    """The supervisor's part now: the reserve page is the terminal record's temp file."""
    fd = os.open(".state.reserve", os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
    try:
        os.write(fd, b" " * 4096)
        _atomic(dir_fd, "state.json", STATE)
        os.pwrite(fd, STATE, 0)
        os.ftruncate(fd, len(STATE))
        os.replace(".state.reserve", "state.json", src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    finally:
        os.close(fd)


def old_layout(root: Path, job_id: str) -> None:
    path = root / job_id
    os.mkdir(path, 0o700)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        _atomic(fd, "meta.json", META)
        for name in ("stdout.log", "stderr.log", "full.log", "supervisor.lock"):
            _write(fd, name, b"")
        _atomic(fd, "state.json", STATE)
        _old_supervisor(fd)
    finally:
        os.close(fd)


def _lean(root: Path, job_id: str, *, lock_file: bool, build: bool = True) -> None:
    building = root / (f".tmp-{job_id}" if build else job_id)
    os.mkdir(building, 0o700)
    fd = os.open(building, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if build:
            _write(fd, "meta.json", META)
            _write(fd, "state.json", STATE)
        else:
            _atomic(fd, "meta.json", META)
        for name in ("stdout.log", "stderr.log", "full.log", *(("supervisor.lock",) if lock_file else ())):
            _write(fd, name, b"")
        if build:
            os.rename(building, root / job_id)
        else:
            _atomic(fd, "state.json", STATE)
        _lean_supervisor(fd)
    finally:
        os.close(fd)


def lean_layout(root: Path, job_id: str) -> None:
    _lean(root, job_id, lock_file=True)


def lean_no_lock(root: Path, job_id: str) -> None:
    _lean(root, job_id, lock_file=False)


def reserve_only(root: Path, job_id: str) -> None:
    _lean(root, job_id, lock_file=True, build=False)


def floor(root: Path, job_id: str) -> None:
    path = root / job_id
    os.mkdir(path, 0o700)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        _write(fd, "state.json", STATE)
    finally:
        os.close(fd)


LAYOUTS: list[tuple[str, Callable[[Path, str], None], str]] = [
    ("floor: mkdir + 1 file", floor, "1 mkdir, 1 create"),
    ("before (0.3.0 layout)", old_layout, "1 mkdir, 9 creates, 4 renames, 1 unlink"),
    ("reserve as terminal temp only", reserve_only, "1 mkdir, 8 creates, 4 renames"),
    ("adopted: build + rename, reserve as temp", lean_layout, "1 mkdir, 8 creates, 3 renames (1 of the dir)"),
    ("adopted, lock on the directory", lean_no_lock, "1 mkdir, 7 creates, 3 renames (1 of the dir)"),
]


def per_job_us(base: Path, jobs: int, rounds: int = 7) -> dict[str, float]:
    """Median per-job microseconds of each layout; the layouts take turns in every round, so
    a burst of load on this shared machine hits them all alike."""
    samples: dict[str, list[float]] = {name: [] for name, _, _ in LAYOUTS}
    for _ in range(rounds):
        for name, fn, _ in LAYOUTS:
            root = Path(tempfile.mkdtemp(dir=base))
            ids = [os.urandom(16).hex() for _ in range(jobs)]
            start = time.perf_counter()
            for job_id in ids:
                fn(root, job_id)
            samples[name].append((time.perf_counter() - start) / jobs * 1e6)
            shutil.rmtree(root)
    return {name: statistics.median(values) for name, values in samples.items()}


@contextlib.contextmanager
def tmpfs(given: str | None) -> Iterator[Path | None]:
    if given:
        yield Path(given)
        return
    if os.geteuid() != 0:
        yield None
        return
    mount = Path(tempfile.mkdtemp(prefix="aex-bench-tmpfs-"))
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", str(mount)]).returncode != 0:
        mount.rmdir()
        yield None
        return
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)])
        mount.rmdir()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--disk", default=str(Path(__file__).resolve().parent.parent))
    parser.add_argument("--tmpfs", default=None)
    args = parser.parse_args()
    disk = Path(tempfile.mkdtemp(prefix=".bench-jobdir-", dir=args.disk))
    try:
        with tmpfs(args.tmpfs) as memory:
            places = [("disk", disk)] + ([("tmpfs", memory)] if memory is not None else [])
            measured = {where: per_job_us(base, args.jobs) for where, base in places}
            results = {name: {where: measured[where][name] for where, _ in places} for name, _, _ in LAYOUTS}
    finally:
        shutil.rmtree(disk, ignore_errors=True)
    load = os.getloadavg()
    print(
        f"per-job file work, median of 7 x {args.jobs} jobs;"
        f" load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    columns = " | ".join(f"{where} us/job (x floor)" for where, _ in places)
    header = f"| layout | operations | {columns} |"
    print(header)
    print("|" + "---|" * (2 + len(places)))
    floor_us = results[LAYOUTS[0][0]]
    for name, _, ops in LAYOUTS:
        cells = " | ".join(
            f"{results[name][where]:.0f} ({results[name][where] / floor_us[where]:.1f}x)"
            for where, _ in places
        )
        print(f"| {name} | {ops} | {cells} |")


if __name__ == "__main__":
    main()
