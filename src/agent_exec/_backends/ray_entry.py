"""The entrypoint of a Ray job: how one job's workload runs on a Ray worker, and how its
output comes back.

Ray runs a job's entrypoint with ``/bin/sh -c`` and writes everything it prints, stdout and
stderr together, into one driver log, mixed with Ray's own lines. To keep the two streams
apart, the entrypoint is a small **self-contained** Python program (standard library only,
so workers need no agent-exec installed, only a ``python3`` or ``python`` on their
``PATH``): it starts the workload with separate stdout/stderr pipes, in the job's cwd and
environment, enforces ``timeout``/``kill_after``, relays Ray's stop signal to the
workload's process group, and prints every chunk it reads as one *frame* line::

    @agent-exec:<nonce>:o <base64 chunk>      stdout bytes
    @agent-exec:<nonce>:e <base64 chunk>      stderr bytes
    @agent-exec:<nonce>:s <pid>               the workload started
    @agent-exec:<nonce>:f <base64 reason>     the workload could not be started
    @agent-exec:<nonce>:x <json>              the workload's outcome (rc, duration, timeout)

Each frame is written with one ``write(2)`` to the ``O_APPEND`` log, so a line of Ray's
never tears a frame; :class:`FrameDecoder` keeps the frames and drops everything else. The
job's definition travels in the ``AGENT_EXEC_RAY_JOB`` variable of the job's
``runtime_env`` (zlib + base64 JSON), so the entrypoint Ray logs stays short.
"""

from __future__ import annotations

import base64
import binascii
import functools
import shlex
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["JOB_VAR", "FrameDecoder", "Outcome", "build_entrypoint", "encode_job"]

#: The runtime_env variable carrying the job definition to the entrypoint.
JOB_VAR = "AGENT_EXEC_RAY_JOB"
#: Largest stdin a Ray job takes (it travels inside one environment variable).
MAX_STDIN = 64 * 1024

# The program run on the worker. Python 3.8+, standard library only. Exit status: the
# workload's, or 128+N for a workload killed by signal N (as a shell reports it).
_PROGRAM = r"""
import base64, json, os, selectors, signal, subprocess, sys, tempfile, time, zlib
job = json.loads(zlib.decompress(base64.b64decode(os.environ.pop("AGENT_EXEC_RAY_JOB"))))
mark = ("@agent-exec:%s:" % job["nonce"]).encode()
def frame(kind, payload):
    data = mark + kind + b" " + payload + b"\n"
    while data:
        data = data[os.write(1, data):]
env = dict(os.environ) if job["inherit_env"] else {}
env.update(job["env"])
env.setdefault("PATH", os.defpath)
stdin = subprocess.DEVNULL
if job.get("stdin") is not None:
    stdin = tempfile.TemporaryFile()
    stdin.write(base64.b64decode(job["stdin"]))
    stdin.seek(0)
cwd = job["cwd"]
if job["cwd_optional"] and cwd and not os.path.isdir(cwd):
    cwd = None
clock = time.monotonic()
try:
    proc = subprocess.Popen(job["argv"], cwd=cwd, env=env, stdin=stdin, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
except (OSError, ValueError) as exc:
    if cwd and not os.path.isdir(cwd):
        reason = "spawn_failed: working directory does not exist: %s" % cwd
    else:
        reason = "spawn_failed: %s" % (getattr(exc, "strerror", None) or exc)
        if getattr(exc, "filename", None):
            reason += ": %s" % exc.filename
    frame(b"f", base64.b64encode(reason.encode()))
    sys.exit(127)
def relay(signum, _frame):
    try:
        os.killpg(proc.pid, signum)
    except OSError:
        pass
for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(signum, relay)
frame(b"s", str(proc.pid).encode())
selector = selectors.DefaultSelector()
for pipe, kind in ((proc.stdout, b"o"), (proc.stderr, b"e")):
    os.set_blocking(pipe.fileno(), False)
    selector.register(pipe.fileno(), selectors.EVENT_READ, kind)
timeout, kill_after = job["timeout"], job["kill_after"]
term_at = clock + timeout if timeout > 0 else None
kill_at = None
timed_out = False
rc = None
exited = None
while True:
    now = time.monotonic()
    if rc is None:
        rc = proc.poll()
        if rc is not None:
            exited = now
    if rc is not None and (not selector.get_map() or now - exited > 2.0):
        break
    if term_at is not None and now >= term_at:
        term_at, timed_out, kill_at = None, True, now + kill_after
        relay(signal.SIGTERM, None)
    if kill_at is not None and now >= kill_at:
        kill_at = None
        relay(signal.SIGKILL, None)
    for key, _ in selector.select(0.05):
        try:
            data = os.read(key.fd, 49152)
        except BlockingIOError:
            continue
        except OSError:
            data = b""
        if data:
            frame(key.data, base64.b64encode(data))
        else:
            selector.unregister(key.fd)
duration = int((exited - clock) * 1000)
frame(b"x", json.dumps({"rc": rc, "duration_ms": duration, "timed_out": timed_out}).encode())
if kill_at is not None:
    relay(signal.SIGKILL, None)
sys.exit(rc if rc >= 0 else 128 - rc)
"""

_LAUNCHER = "import base64,zlib;exec(zlib.decompress(base64.b64decode({blob!r})))"


@functools.cache
def build_entrypoint() -> str:
    """The shell command Ray runs: the program above under the worker's Python."""
    blob = base64.b64encode(zlib.compress(_PROGRAM.encode(), 9)).decode()
    code = _LAUNCHER.format(blob=blob)
    return f'P=$(command -v python3 || command -v python) && exec "$P" -c {shlex.quote(code)}'


def encode_job(
    *,
    nonce: str,
    argv: list[str],
    cwd: str | None,
    cwd_optional: bool,
    env: dict[str, str],
    inherit_env: bool,
    stdin: bytes | None,
    timeout_s: float,
    kill_after_s: float,
) -> str:
    """The value of :data:`JOB_VAR` for one job."""
    job = {
        "nonce": nonce,
        "argv": argv,
        "cwd": cwd,
        "cwd_optional": cwd_optional,
        "env": env,
        "inherit_env": inherit_env,
        "stdin": base64.b64encode(stdin).decode() if stdin is not None else None,
        "timeout": timeout_s,
        "kill_after": kill_after_s,
    }
    return base64.b64encode(zlib.compress(orjson.dumps(job), 6)).decode()


@dataclass
class Outcome:
    """What the entrypoint reported about its workload (the ``x`` frame)."""

    returncode: int
    duration_ms: int
    timed_out: bool


class FrameDecoder:
    """Turns successive reads of a job's driver log into output chunks and outcomes.

    Ray returns the whole log on every read; the decoder remembers how much of it was
    consumed and only ever looks at complete new lines.
    """

    def __init__(self, nonce: str) -> None:
        self._mark = f"@agent-exec:{nonce}:"
        self.consumed = 0
        self.pid: int | None = None
        self.outcome: Outcome | None = None
        self.spawn_failure: str | None = None

    def feed(self, text: str) -> Iterator[tuple[str, bytes]]:
        """Yield ``(stream, bytes)`` for every new output frame of ``text`` (the full log)."""
        if len(text) < self.consumed:  # the log was replaced: nothing sane to resume from
            self.consumed = len(text)
            return
        end = text.rfind("\n") + 1
        if end <= self.consumed:
            return
        chunk = text[self.consumed : end]
        self.consumed = end
        mark = self._mark
        for line in chunk.split("\n"):
            if not line.startswith(mark) or len(line) < len(mark) + 2:
                continue
            kind, payload = line[len(mark)], line[len(mark) + 2 :]
            if kind in "oe":
                try:
                    data = base64.b64decode(payload, validate=True)
                except (binascii.Error, ValueError):
                    continue
                yield ("stdout" if kind == "o" else "stderr"), data
            elif kind == "s" and payload.isdigit():
                self.pid = int(payload)
            elif kind == "x":
                self.outcome = _parse_outcome(payload)
            elif kind == "f":
                try:
                    self.spawn_failure = base64.b64decode(payload).decode("utf-8", "replace")
                except (binascii.Error, ValueError):
                    self.spawn_failure = "spawn_failed"


def _parse_outcome(payload: str) -> Outcome | None:
    try:
        data: Any = orjson.loads(payload)
        return Outcome(int(data["rc"]), int(data["duration_ms"]), bool(data["timed_out"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
