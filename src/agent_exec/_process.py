"""Process-level policy: how a command becomes an argv, what environment it gets, and how
signals reach its process group."""

from __future__ import annotations

import os

from ._errors import AgentExecError, ConfigError, InvalidSignal

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: every read command imports this module
if TYPE_CHECKING:
    import signal
    from collections.abc import Mapping, Sequence

DEFAULT_WRAPPER = ("sh", "-lc")
#: The library's shell for a command given as one string (``subprocess``'s ``shell=True``).
LIBRARY_SHELL = ("sh", "-c")
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


def parse_wrapper(text: str) -> list[str]:
    """``--shell-wrapper "bash -lc"`` → ``["bash", "-lc"]`` (whitespace split, no quoting)."""
    words = text.split()
    if not words:
        raise ConfigError("--shell-wrapper must not be empty")
    return words


def build_argv(wrapper: Sequence[str], command: Sequence[str]) -> list[str]:
    """The argv to exec for ``command`` under ``wrapper`` (0.2.3 rules when there is one).

    No wrapper (an empty one, the library's choice for an argv) execs ``command`` directly.
    Through a wrapper, one word is a shell string; several words are exec'd verbatim.
    """
    if not wrapper:
        return list(command)
    if len(command) == 1:
        return [*wrapper, command[0]]
    return [*wrapper, 'exec "$@"', "--", *command]


def library_command(
    command: Sequence[str] | str, shell_wrapper: Sequence[str] | None
) -> tuple[list[str], list[str]]:
    """The library's command policy, Python's own (``subprocess``): ``(words, wrapper)``.

    - a sequence is exec'd directly: no shell, ``PATH`` looked up in the job's environment
      (so a venv or tool directory on the caller's ``PATH`` is found);
    - a ``str`` runs through ``sh -c`` (not a login shell: Debian's profile resets ``PATH``);
    - ``shell_wrapper`` (e.g. ``["bash", "-lc"]``) runs either through that wrapper instead,
      with the CLI's rules for a sequence (one word is a shell string, several are exec'd
      with ``exec "$@"``).

    :raises ValueError: an empty command or wrapper.
    """
    if isinstance(command, str):
        words = [command]
        if not command.strip():
            raise ValueError("command must not be empty")
    else:
        words = list(command)
        if not words:
            raise ValueError("command must not be empty")
        if not all(isinstance(word, str) for word in words):
            raise TypeError("command words must be str")
    if shell_wrapper is not None:
        # A string is split on whitespace, like ``--shell-wrapper "bash -lc"``.
        wrapper = shell_wrapper.split() if isinstance(shell_wrapper, str) else list(shell_wrapper)
        if not wrapper:
            raise ValueError("shell_wrapper must not be empty")
        return words, wrapper
    return words, list(LIBRARY_SHELL) if isinstance(command, str) else []


def split_env_pair(pair: str) -> tuple[str, str]:
    key, _, value = pair.partition("=")
    return key, value


def parse_env_file(path: str) -> list[tuple[str, str]]:
    """``KEY=VALUE`` lines; blank lines and ``#`` comments skipped; no quoting or expansion."""
    with open(path, encoding="utf-8") as file:
        text = file.read()
    pairs = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pairs.append(split_env_pair(line))
    return pairs


def build_env(
    *,
    inherit: bool,
    env_files: Sequence[str],
    env_pairs: Sequence[str],
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The workload environment: inherited (or empty), then env files in order, then ``--env``."""
    env = dict(os.environ if base is None else base) if inherit else {}
    for path in env_files:
        env.update(parse_env_file(path))
    env.update(split_env_pair(pair) for pair in env_pairs)
    return env


def resolve_signal(name: str | int) -> signal.Signals:
    """Any signal name (``TERM``, ``SIGTERM``, ``term``), number or :class:`signal.Signals`;
    else :class:`InvalidSignal`."""
    import signal  # not at module level: ``signal`` builds its enums at import (a millisecond)

    if isinstance(name, int):
        try:
            return signal.Signals(name)
        except ValueError:
            raise InvalidSignal(str(name)) from None
    text = name.strip().upper()
    if text.isdigit():
        try:
            return signal.Signals(int(text))
        except ValueError:
            raise InvalidSignal(name) from None
    if not text.startswith("SIG"):
        text = "SIG" + text
    try:
        return signal.Signals[text]
    except KeyError:
        raise InvalidSignal(name) from None


def signal_group(pid: int, signum: int) -> bool:
    """Signal the process group led by ``pid``, else ``pid`` itself; False if both are gone."""
    try:
        os.killpg(pid, signum)
        return True
    except ProcessLookupError:
        pass
    except PermissionError as exc:
        raise AgentExecError(f"failed to signal process group {pid}: {exc.strerror}") from None
    try:
        os.kill(pid, signum)
        return True
    except ProcessLookupError:
        return False
    except PermissionError as exc:
        raise AgentExecError(f"failed to signal process {pid}: {exc.strerror}") from None


def _stat_fields(pid: int | str) -> list[bytes] | None:
    """``/proc/<pid>/stat`` after the command name: state, ppid, pgrp, ... (field 3 on)."""
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)  # no io stack: per job
        try:
            raw = os.read(fd, 4096)
        finally:
            os.close(fd)
        return raw[raw.rindex(b")") + 2 :].split()
    except (OSError, ValueError):
        return None


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started (clock ticks after boot, ``/proc/<pid>/stat`` field 22), or
    ``None`` if it cannot be read. A reused pid has a later start time."""
    fields = _stat_fields(pid)
    try:
        return int(fields[19]) if fields is not None else None
    except (ValueError, IndexError):
        return None


def _group_has_live_member(pgid: int) -> bool:
    """Is a process other than a zombie in group ``pgid``? (Zombies of a group whose
    supervisor is gone wait for init to reap them, and ``killpg(pgid, 0)`` counts them.)"""
    try:
        names = os.listdir("/proc")
    except OSError:
        return True
    for name in names:
        if name.isdigit():
            fields = _stat_fields(name)
            if (
                fields is not None
                and len(fields) > 2
                and fields[2] == b"%d" % pgid
                and fields[0] not in (b"Z", b"X")
            ):
                return True
    return False


def group_alive(pgid: int, ticks: int | None) -> bool | None:
    """Does the process group ``pgid`` of a workload that started at ``ticks`` still exist?

    ``False`` if it provably does not (no process in it, or its pid now names a process
    that started later: a pid is not reused while its group exists); ``None`` if it
    cannot be told (no start time recorded, or the group belongs to another user).
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return None
    leader = _stat_fields(pgid)
    if leader is not None and ticks is not None and len(leader) > 19 and leader[19] != b"%d" % ticks:
        return False  # the pid is someone else's now, so our group is gone
    if ticks is None:
        return None
    if leader is not None and leader[0] not in (b"Z", b"X"):
        return True
    return _group_has_live_member(pgid)
