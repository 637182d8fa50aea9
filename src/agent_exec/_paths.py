"""Where things live: the jobs root, job directories and job ids.

This is the only module that knows the on-disk layout of the job store.
"""

from __future__ import annotations

import os
import stat

from ._errors import AmbiguousJobId, JobIdExhausted, JobNotFound

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: every CLI call imports this module
if TYPE_CHECKING:
    from pathlib import Path

META_FILE = "meta.json"
STATE_FILE = "state.json"
STDOUT_LOG = "stdout.log"
STDERR_LOG = "stderr.log"
FULL_LOG = "full.log"
STDIN_FILE = "stdin.bin"
LOCK_FILE = "supervisor.lock"
#: Held (``flock``) while a job is being restarted; ``gc``/``delete`` leave the job alone then.
RESTART_LOCK_FILE = "restart.lock"
COMPLETION_EVENT_FILE = "completion_event.json"
NOTIFICATION_EVENTS_FILE = "notification_events.ndjson"
GC_LOCK_FILE = ".gc.lock"

DIR_MODE = 0o700
FILE_MODE = 0o600


def resolve_root(root: str | os.PathLike[str] | None = None, *, light: bool = False) -> Path:
    """The jobs root: ``root`` > ``$AGENT_EXEC_ROOT`` > ``$XDG_DATA_HOME/agent-exec/jobs`` > home.

    The path is not canonicalised: it is echoed as given in ``root`` fields and log paths.
    ``light``: a :class:`RootPath` (no ``pathlib`` import), for the read commands.
    """
    if root is not None and str(root) != "":
        text = os.fspath(root)
    elif os.environ.get("AGENT_EXEC_ROOT"):
        text = os.environ["AGENT_EXEC_ROOT"]
    elif os.environ.get("XDG_DATA_HOME"):
        text = os.path.join(os.environ["XDG_DATA_HOME"], "agent-exec", "jobs")
    else:
        home = os.environ.get("HOME") or os.path.expanduser("~")
        text = os.path.join(home, ".local", "share", "agent-exec", "jobs")
    if light:
        return RootPath(posix_normal(text))
    from pathlib import Path

    return Path(text)


def posix_normal(text: str) -> str:
    """``text`` spelled as ``str(PurePosixPath(text))`` spells it."""
    lead = "//" if text.startswith("//") and not text.startswith("///") else "/"[: text[:1] == "/"]
    return lead + "/".join(part for part in text.split("/") if part and part != ".") or "."


if TYPE_CHECKING:
    RootPath = Path
else:

    class RootPath(str):
        """A jobs root, or a path under one, as a plain ``str``: what the read commands use.

        Importing ``pathlib`` costs more than a read command does otherwise (``urllib.parse``,
        ``ipaddress``, ``fnmatch``, ``ntpath``: ~6 ms, a third of an interpreter start),
        and these commands only join names onto the root. This string has that operation
        (``/``), ``name`` and ``parent``, and is spelled exactly as ``str(Path(...))`` spells
        the same path (``//`` and ``.`` components folded, no trailing ``/``), so every
        reported path is byte-identical either way. It is typed as the ``Path`` it stands
        for; code reached by the read commands must not call other ``Path`` methods on the
        root (the CLI tests of ``status``/``tail``/``wait``/``kill``/``list`` run that code).
        """

        __slots__ = ()

        def __truediv__(self, name: str) -> RootPath:
            if "/" in name or name in ("", ".", ".."):
                joined = name if name[:1] == "/" else self + name if self.endswith("/") else f"{self}/{name}"
                return RootPath(posix_normal(joined))
            if self == ".":
                return RootPath(name)
            return RootPath(f"{self}{name}" if self.endswith("/") else f"{self}/{name}")

        @property
        def name(self) -> str:
            return "" if self in ("/", "//", ".") else self.rpartition("/")[2]

        @property
        def parent(self) -> RootPath:
            head, sep, _ = self.rpartition("/")
            if not sep or self in ("/", "//"):
                return self if sep else RootPath(".")
            return RootPath(head if head.strip("/") else self[: len(self) - len(self.lstrip("/"))])


def canonical_cwd(base: str | os.PathLike[str] | None = None) -> str:
    """The cwd recorded for a job and compared by ``list``/``delete --all`` (exact string).

    Always valid text: a directory whose name is not valid UTF-8 is given with the bad
    bytes replaced by U+FFFD (recorded for display and comparison only; a job started from
    it runs in the real directory, which it inherits).
    """
    cwd = _canonical_cwd(base)
    try:
        cwd.encode("utf-8")
    except UnicodeEncodeError:
        return cwd.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return cwd


def _canonical_cwd(base: str | os.PathLike[str] | None) -> str:
    if base is None:
        try:
            base = os.getcwd()
        except OSError:
            base = "."
        else:
            if base.startswith("/"):
                return base  # the kernel's answer is already free of symlinks

    try:
        return os.path.realpath(base, strict=True)
    except (OSError, ValueError):
        pass
    text = os.fspath(base)
    if os.path.isabs(text):
        return text
    try:
        return os.path.join(os.getcwd(), text)
    except OSError:
        return text


def new_job_id(root: Path) -> str:
    """32 lowercase hex characters that name no existing entry of ``root``."""
    for _ in range(16):
        candidate = os.urandom(16).hex()
        if not os.path.lexists(os.path.join(root, candidate)):
            return candidate
    raise JobIdExhausted()


_HEX = frozenset("0123456789abcdef")


def is_job_name(name: str) -> bool:
    """Can the directory ``name`` be a job?

    Job names are opaque (ids of other implementations, e.g. ULIDs, keep working), with two
    exceptions: a name that starts with ``.`` (``.tmp-*`` directories being built), and a
    job id with anything after it (``<id>.moved``, ``<id>~``: a renamed or copied job
    directory, which must never answer to ``<id>`` or its prefixes).
    """
    if not name or name[0] == ".":
        return False
    return len(name) <= 32 or not _HEX.issuperset(name[:32])


def is_safe_job_name(name: str) -> bool:
    """True if ``name`` can only ever name an entry directly inside the root."""
    return name not in ("", ".", "..") and "/" not in name and "\0" not in name


def _is_real_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except (OSError, ValueError):
        return False


def resolve_job(root: Path, given: str) -> tuple[str, Path]:
    """Resolve a job id or unique prefix to ``(job_id, job_dir)``.

    Symlinks in the root are never followed, ids that could escape the root (``..``,
    ``a/b``, empty) are simply not found, and only job names (:func:`is_job_name`) are
    candidates: a renamed ``<id>.moved`` is not the job ``<id>``.
    """
    if not is_safe_job_name(given):
        raise JobNotFound(given)
    exact = root / given
    if is_job_name(given) and _is_real_dir(exact):
        return given, exact
    try:
        with os.scandir(root) as entries:
            matches = [
                entry.name
                for entry in entries
                if entry.name.startswith(given)
                and is_job_name(entry.name)
                and entry.is_dir(follow_symlinks=False)
            ]
    except OSError:
        matches = []
    if not matches:
        raise JobNotFound(given)
    if len(matches) > 1:
        raise AmbiguousJobId(given, matches)
    return matches[0], root / matches[0]


def iter_job_dirs(root: Path) -> list[os.DirEntry[str]]:
    """Every real (non-symlink) job directory directly inside ``root``; empty if ``root`` is
    unreadable."""
    try:
        with os.scandir(root) as entries:
            return [
                entry for entry in entries if is_job_name(entry.name) and entry.is_dir(follow_symlinks=False)
            ]
    except OSError:
        return []
