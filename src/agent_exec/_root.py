"""Whether a jobs root can be trusted, checked every time one is used.

Whoever can write to the jobs root can rename a job directory away or plant a symlink in
its place; whoever can write to one of its parent directories can do the same to the root
itself. So a root is used only if it is a directory owned by the caller that nobody else
can write to, and every directory above it is owned by the caller or by root and either not
writable by others or sticky (``/tmp``: others cannot rename what is not theirs). Anything
else is refused with ``unsafe_root`` before a single file is read or written, unless
``AGENT_EXEC_UNSAFE_ROOT=1`` says the caller accepts the risk (documented as unsafe).
"""

from __future__ import annotations

import os
import stat

from ._errors import IoError, UnsafeRoot
from ._paths import DIR_MODE

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: every read command imports this module
if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["UNSAFE_ROOT_ENV", "check_root", "ensure_root"]

#: Set to ``1`` to use a root that fails the checks (shared or foreign roots): unsafe.
UNSAFE_ROOT_ENV = "AGENT_EXEC_UNSAFE_ROOT"


def _unsafe_allowed() -> bool:
    return os.environ.get(UNSAFE_ROOT_ENV, "") not in ("", "0")


def _describe_missing(root: Path) -> str | None:
    """Why ``root`` cannot be created, if it is a dangling symlink (``mkdir`` would only say
    "File exists")."""
    if os.path.islink(root) and not os.path.exists(root):
        return f"jobs root {root} is a symlink to {os.readlink(root)!r}, which does not exist"
    return None


def _check_dir(path: str, info: os.stat_result, *, is_root: bool, uid: int) -> str | None:
    mode = stat.S_IMODE(info.st_mode)
    if is_root:
        if not stat.S_ISDIR(info.st_mode):
            return f"jobs root {path} is not a directory"
        if info.st_uid != uid:
            return f"jobs root {path} is owned by uid {info.st_uid}, not by you (uid {uid})"
        if mode & 0o022:
            who = "group and others" if mode & 0o022 == 0o022 else ("group" if mode & 0o020 else "others")
            return (
                f"jobs root {path} is writable by {who} (mode {mode:04o}): another user could swap"
                " its job directories (chmod go-w)"
            )
        return None
    if info.st_uid not in (uid, 0):
        return f"{path}, above the jobs root, is owned by uid {info.st_uid}: that user could replace the root"
    if mode & 0o022 and not mode & stat.S_ISVTX:
        return (
            f"{path}, above the jobs root, is writable by group or others (mode {mode:04o}):"
            " they could replace the root"
        )
    return None


def check_root(root: Path) -> bool:
    """Raise :class:`UnsafeRoot` if ``root`` cannot be trusted; False if it does not exist.

    Cost: one ``stat`` per path component (microseconds), on every use, since a root that
    was safe yesterday may not be today.
    """
    try:
        real = os.path.realpath(root, strict=True)
    except FileNotFoundError:
        reason = _describe_missing(root)
        if reason is not None:
            raise UnsafeRoot(reason) from None
        return False
    except OSError as exc:
        raise UnsafeRoot(f"jobs root {root} cannot be resolved: {exc.strerror or exc}") from None
    if _unsafe_allowed():
        return True
    uid = os.geteuid()
    path = real
    is_root = True
    while True:
        try:
            info = os.stat(path)
        except OSError as exc:
            raise UnsafeRoot(f"cannot check {path}: {exc.strerror or exc}") from None
        reason = _check_dir(path, info, is_root=is_root, uid=uid)
        if reason is not None:
            raise UnsafeRoot(f"{reason} (set {UNSAFE_ROOT_ENV}=1 to use it anyway: unsafe)")
        parent = os.path.dirname(path)
        if parent == path:
            return True
        path, is_root = parent, False


def ensure_root(root: Path) -> None:
    """Create ``root`` (and its parents) private to the caller if missing, then check it."""
    if not check_root(root):
        try:
            os.makedirs(root, mode=DIR_MODE, exist_ok=True)  # the mode applies to the root itself
        except OSError as exc:
            reason = _describe_missing(root)
            if reason is not None:
                raise UnsafeRoot(reason) from None
            raise IoError.from_os(exc, "failed to create jobs root", root) from None
        check_root(root)
