"""Spawning a detached supervisor's workload with ``os.posix_spawn`` instead of
``subprocess.Popen``.

A detached supervisor exists for one workload, and everything it does between its fork
and that workload's spawn is on the critical path of ``agent-exec run``. Importing
``subprocess`` (with ``selectors``, ``locale``, ``threading`` and ``warnings``) was the
largest part of it. ``os.posix_spawn`` needs no import and spawns with ``vfork`` as
``Popen`` does. What ``Popen`` would otherwise do for us is done here, the same way:

* the program is looked up in the ``PATH`` of the workload's environment, and a failure
  is reported as ``Popen`` reports it (the error of the first candidate that exists but
  cannot be run, else ``ENOENT``, with the program's name as given);
* the working directory: ``posix_spawn`` has no ``chdir`` action, so this process moves
  there for the spawn (and the program's lookup) and comes back, through a descriptor,
  so even a renamed or deleted directory is found again. Only a process that runs
  nothing else meanwhile may do this;
* no descriptor but 0, 1 and 2 is inherited (``close_fds``): any inheritable descriptor
  is made close-on-exec first;
* ``SIGPIPE`` and ``SIGXFSZ``, ignored by the supervisor, are reset to their defaults
  (``restore_signals``); the workload gets its own process group (``process_group=0``).
  (glibc's ``posix_spawn`` leaves its two internal signals, 32 and 33, ignored in the new
  program, as for every program spawned that way, Rust's ``Command`` included; C
  libraries and runtimes install their own handlers for them.)

The library's runner, which shares its process with its host, keeps ``Popen``.
"""

from __future__ import annotations

import errno
import os
import stat

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: imported before the spawn, keep it light
if TYPE_CHECKING:
    from collections.abc import Mapping

# signal.SIGPIPE and signal.SIGXFSZ on Linux, without importing ``signal`` for them.
_SIGPIPE = 13
_SIGXFSZ = 25


def find_program(name: str, env: Mapping[str, str] | None) -> str:
    """The path ``execvpe`` would run for ``name`` in ``env``'s ``PATH`` (``os.environ``'s
    if ``env`` is ``None``); raise the ``OSError`` ``Popen`` would raise."""
    if os.path.dirname(name):
        return name
    refused: OSError | None = None
    for directory in os.get_exec_path(env):  # type: ignore[arg-type]
        candidate = os.path.join(directory, name)
        try:
            mode = os.stat(candidate).st_mode
        except (OSError, ValueError):
            continue
        if stat.S_ISREG(mode) and os.access(candidate, os.X_OK):
            return candidate
        if refused is None:
            refused = PermissionError(errno.EACCES, os.strerror(errno.EACCES), name)
    raise refused or FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), name)


#: Descriptors an event loop opens (epoll and its self-pipe's two ends).
LOOP_DESCRIPTORS = 3


def hold_room() -> list[int]:
    """Hold :data:`LOOP_DESCRIPTORS` descriptors for the supervisor's event loop, from
    before the spawn until the loop is loaded.

    Under a tight ``ulimit -n`` a workload must not be started that its supervisor could
    then not supervise (it would have to kill it again): the spawn fails instead, as
    ``Popen``'s did for want of its error pipe. Raises ``OSError`` (``EMFILE``).
    """
    held: list[int] = []
    try:
        for _ in range(LOOP_DESCRIPTORS):
            held.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))  # noqa: PERF401 - keep what opened
    except OSError as exc:
        for fd in held:
            os.close(fd)
        raise OSError(exc.errno, exc.strerror) from None  # no room: not a /dev/null problem
    return held


def _inherit_nothing() -> None:
    """Make every descriptor above 2 close-on-exec (``Popen``'s ``close_fds``)."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:  # pragma: no cover - no /proc: every descriptor we open is CLOEXEC
        return
    for name in names:
        fd = int(name)
        if fd > 2:
            try:
                if os.get_inheritable(fd):
                    os.set_inheritable(fd, False)
            except OSError:
                pass  # the listing's own descriptor, closed by now


def spawn(
    argv: list[str],
    *,
    stdin: int,
    stdout: int,
    stderr: int,
    cwd: str | None,
    env: Mapping[str, str] | None,
) -> int:
    """Spawn ``argv`` in its own process group with the given standard streams; its pid.

    Raises ``OSError`` as ``Popen`` does (``filename`` is the working directory when that is
    what failed, else the program's name), ``ValueError`` for a NUL in an argument.
    """
    _inherit_nothing()
    actions = [
        (os.POSIX_SPAWN_DUP2, stdin, 0),
        (os.POSIX_SPAWN_DUP2, stdout, 1),
        (os.POSIX_SPAWN_DUP2, stderr, 2),
    ]
    home = -1
    if cwd is not None:
        home = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.chdir(cwd)
        except OSError:
            os.close(home)
            raise
    try:
        # Looked up from the working directory, as Popen's child does after its chdir (a
        # relative ``PATH`` entry or ``./program`` is relative to the job's directory).
        program = find_program(argv[0], env)
        try:
            return os.posix_spawn(
                program,
                argv,
                os.environ if env is None else env,
                file_actions=actions,
                setpgroup=0,
                setsigdef=(_SIGPIPE, _SIGXFSZ),
            )
        except OSError as exc:  # named as Popen names it: the program as given
            raise OSError(exc.errno, exc.strerror, argv[0]) from None
    finally:
        if home >= 0:
            try:
                os.fchdir(home)
            finally:
                os.close(home)
