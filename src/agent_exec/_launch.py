"""Detached supervisors: processes of their own, in their own session, that outlive
whoever launched the job (the CLI exiting, being SIGKILLed, or its terminal going away).

``agent-exec run``/``start`` fork the supervisor at their very first instruction
(:meth:`Supervisor.prefork`), before parsing arguments: while the CLI builds the job
directory, the supervisor imports anyio on the other core, so interpreter start-up is not
paid twice on the critical path. The finished job spec and the locked supervisor lock
are then handed over a socket pair (the lock's file descriptor travels with
``SCM_RIGHTS``). A host running an event loop cannot fork safely; it execs
``python -m agent_exec._launch`` instead (:func:`exec_argv`), which speaks the same
protocol. Either way the supervisor is re-parented to init: nobody has to reap it.

This module imports only ``os``, ``sys`` and the ``_socket`` C module, so forking early
costs ~1 ms: ``socket.py`` itself builds four enums and imports ``selectors`` at import
(milliseconds, before the fork, on the critical path of ``run``); the few calls made here
exist on ``_socket``'s objects as they are (``socket.socket`` is a thin subclass).
"""

from __future__ import annotations

import os
import sys

try:
    import _socket
except ImportError:  # pragma: no cover - an interpreter without CPython's ``_socket``
    import socket as _socket  # type: ignore[no-redef]

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: this module runs before the fork, keep it light
if TYPE_CHECKING:
    from collections.abc import Callable

    from ._spec import LaunchSpec

#: The hand-over message starts with the spec's length, 8 bytes big-endian.
HEADER_SIZE = 8
_FD_SIZE = 4  # a C int, as ``SCM_RIGHTS`` carries descriptors
#: How long the launcher waits for the supervisor to acknowledge its job.
HAND_OVER_TIMEOUT = 60.0


def _send_with_fds(sock: _socket.socket, data: bytes, fds: list[int]) -> None:
    """``socket.send_fds``: ``data`` with ``fds`` attached (``SCM_RIGHTS``)."""
    packed = b"".join(fd.to_bytes(_FD_SIZE, sys.byteorder, signed=True) for fd in fds)
    sock.sendmsg([data], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, packed)])


def _recv_with_fds(sock: _socket.socket, size: int, max_fds: int) -> tuple[bytes, list[int]]:
    """``socket.recv_fds``: up to ``size`` bytes and the descriptors attached to them."""
    data, ancillary, _, _ = sock.recvmsg(size, _socket.CMSG_LEN(max_fds * _FD_SIZE))
    fds: list[int] = []
    for level, kind, payload in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % _FD_SIZE
            fds.extend(
                int.from_bytes(payload[at : at + _FD_SIZE], sys.byteorder, signed=True)
                for at in range(0, usable, _FD_SIZE)
            )
    return data, fds


def _read_exact(sock: _socket.socket, size: int) -> bytes:
    chunks: list[bytes] = []
    while size > 0:
        chunk = sock.recv(min(size, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _detach_stdio(keep: int) -> None:
    """Never hold the caller's terminal or pipes: a ``run | jq`` must see EOF at once."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for target in (0, 1, 2):
        os.dup2(devnull, target)
    os.close(devnull)
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        fds = list(range(3, 256))
    for fd in fds:
        if fd > 2 and fd != keep:
            try:
                os.close(fd)
            except OSError:
                pass


class Supervisor:
    """The launcher's handle on a detached supervisor process that awaits its job."""

    def __init__(self, sock: _socket.socket, pid: int) -> None:
        self._sock = sock
        self.pid = pid

    @classmethod
    def prefork(cls) -> Supervisor:
        """Fork (twice, with ``setsid``) a supervisor that warms up and waits for a job.

        Call only from a single-threaded process.
        """
        parent_sock, child_sock = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            pid_r, pid_w = os.pipe()
        except OSError:
            parent_sock.close()
            child_sock.close()
            raise
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        try:
            child = os.fork()
        except OSError as exc:
            for fd in (pid_r, pid_w):
                os.close(fd)
            parent_sock.close()
            child_sock.close()
            raise _cannot_start(exc.errno) from None
        if child == 0:  # pragma: no cover - runs in the forked children
            status = 1
            try:
                parent_sock.close()
                os.close(pid_r)
                os.setsid()
                try:
                    grandchild = os.fork()
                except OSError as exc:
                    os.write(pid_w, b"!%d" % (exc.errno or 0))
                    raise
                if grandchild == 0:
                    try:
                        os.close(pid_w)
                        _detach_stdio(child_sock.fileno())
                        from ._detached import supervisor_main

                        supervisor_main(child_sock)
                        status = 0
                    finally:
                        os._exit(status)
                os.write(pid_w, str(grandchild).encode())
                status = 0
            finally:
                os._exit(status)
        child_sock.close()
        os.close(pid_w)
        try:
            os.waitpid(child, 0)
            raw = b""
            while chunk := os.read(pid_r, 64):
                raw += chunk
        finally:
            os.close(pid_r)
        if not raw.isdigit():
            parent_sock.close()
            raise _cannot_start(int(raw[1:]) if raw[1:].isdigit() else None)
        return cls(parent_sock, int(raw))

    def hand_over(self, spec: LaunchSpec, lock_fd: int, on_handed_over: Callable[[int], None]) -> int:
        """Give the supervisor its job and the locked lock fd; return its pid.

        All or nothing: the supervisor acknowledges the job, ``on_handed_over(pid)`` writes
        the launcher's ``running`` record, and only then is the supervisor told to start
        the workload. If anything before that fails, the supervisor exits without starting
        it and the error is raised here (an :class:`~agent_exec.IoError` for OS failures).
        """
        from ._errors import IoError

        payload = spec.to_json()
        opened_here = spec.dir is None
        try:
            try:
                # The job directory's descriptor travels with the lock: the supervisor works
                # on the very directory the launcher made, wherever it is later moved.
                header = len(payload).to_bytes(HEADER_SIZE, "big")
                _send_with_fds(self._sock, header, [lock_fd, spec.handle().fd])
                self._sock.sendall(payload)
                self._sock.settimeout(HAND_OVER_TIMEOUT)
                ack = self._sock.recv(1)
            except OSError as exc:
                raise IoError.from_os(
                    exc, "cannot hand the job to its supervisor", f"(pid {self.pid})"
                ) from None
            if ack != b"k":
                raise _cannot_start(None)
            on_handed_over(self.pid)
            try:
                self._sock.sendall(b"g")
            except OSError as exc:
                raise IoError.from_os(exc, "cannot start the job's supervisor", f"(pid {self.pid})") from None
        finally:
            self._sock.close()
            if opened_here and spec.dir is not None:
                spec.dir.close()
                spec.dir = None
        return self.pid

    def cancel(self) -> None:
        """Tell an unused supervisor to exit (closing the socket does it)."""
        self._sock.close()


#: A supervisor forked ahead of time by the CLI, taken by the next launch.
_preforked: list[Supervisor] = []


def prefork() -> None:
    """Fork a detached supervisor now so it warms up while the caller prepares the job.

    Best effort: if the fork fails (process limit), :func:`take_supervisor` tries again
    and reports the failure as a JSON error.
    """
    try:
        _preforked.append(Supervisor.prefork())
    except Exception:
        pass


def _cannot_start(errno_: int | None) -> Exception:
    import errno

    from ._errors import IoError

    code = errno_ or errno.EAGAIN
    return IoError(f"cannot start the job's supervisor: {os.strerror(code)}", errno_=code)


def take_supervisor() -> Supervisor:
    """The pre-forked supervisor if there is one, else a freshly forked one."""
    return _preforked.pop() if _preforked else Supervisor.prefork()


def exec_argv(fd: int) -> list[str]:
    """The command a host with an event loop runs to get a supervisor on socket ``fd``."""
    return [sys.executable, "-m", "agent_exec._launch", str(fd)]


def exec_supervisor(spec: LaunchSpec, lock_fd: int, on_handed_over: Callable[[int], None]) -> int:
    """Start a detached supervisor without forking this process, and hand it the job.

    For hosts that must not fork (threads, an event loop: ``serve``, ``mcp``, a restart
    from :class:`~agent_exec.JobRunner`); blocking, so call it from a worker thread there.
    The launcher process is waited for here, so it never lingers as a zombie; the
    supervisor it forks is re-parented to init.
    """
    import subprocess

    from ._errors import IoError

    parent_sock, child_sock = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        try:
            launcher = subprocess.run(
                exec_argv(child_sock.fileno()),
                pass_fds=(child_sock.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                check=False,
            )
        except OSError as exc:
            raise IoError.from_os(exc, "cannot start the supervisor launcher") from None
        finally:
            child_sock.close()
        text = launcher.stdout.decode("ascii", "replace").strip()
        if launcher.returncode != 0 or not text.isdigit():
            raise IoError(f"cannot start the job's supervisor: launcher exit status {launcher.returncode}")
    except BaseException:
        parent_sock.close()
        raise
    return Supervisor(parent_sock, int(text)).hand_over(spec, lock_fd, on_handed_over)


def main() -> None:  # pragma: no cover - exercised through JobRunner(detached=True)
    """``python -m agent_exec._launch FD``: fork, print the supervisor pid, exit."""
    sock = _socket.socket(fileno=int(sys.argv[1]))
    child = os.fork()
    if child:
        sys.stdout.write(f"{child}\n")
        sys.stdout.flush()
        os._exit(0)
    os.setsid()
    _detach_stdio(sock.fileno())
    from ._detached import supervisor_main

    supervisor_main(sock)
    os._exit(0)


if __name__ == "__main__":  # pragma: no cover
    main()
