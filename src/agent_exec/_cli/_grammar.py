"""The command-line grammar, declared once.

The table drives two parsers: :func:`parse` (no imports beyond the stdlib, used for every
well-formed invocation, because ``import typer`` alone costs ~5x a bare interpreter
start-up) and the typer application in ``_app.py`` (help, completions and usage errors),
which is generated from the same table so the two cannot drift apart.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: every CLI call imports this module
if TYPE_CHECKING:
    from typing import Any

FLAG = "flag"  # switch, no value
STR = "str"  # one string value
INT = "int"  # one non-negative decimal integer
MULTI = "multi"  # repeatable string
OPTBOOL = "optbool"  # --wait [true|false]
COUNT = "count"  # -v, -vv

_TAG_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")


def is_tag(value: str) -> bool:
    """Dot-separated, non-empty segments of ASCII letters, digits and ``-``."""
    return all(segment and _TAG_CHARS.issuperset(segment) for segment in value.split("."))


def is_tag_pattern(value: str) -> bool:
    return is_tag(value[:-2] if value.endswith(".*") else value)


#: Help sections of a command's options, in this order (a command whose options all sit
#: in one section, or in none, lists them under plain "Options").
DEFINITION, OBSERVATION, NOTIFICATION, AUTO_GC = "Definition", "Observation", "Notification", "Auto-GC"
PANELS = (DEFINITION, OBSERVATION, NOTIFICATION, AUTO_GC)
_DEFAULT_METAVAR = {STR: "TEXT", INT: "N", MULTI: "TEXT", OPTBOOL: "[true|false]"}


class Opt:
    """One option: its flag, destination parameter, value kind and help text, and how
    ``--help`` shows it (``metavar``: ``SECONDS``, ``PATH``...; ``panel``: its section).

    (Plain classes rather than dataclasses here: this module is on the start-up path of
    every CLI call, and generating dataclass methods costs milliseconds.)
    """

    __slots__ = ("check", "choices", "default", "dest", "flag", "help", "kind", "metavar", "panel")

    def __init__(
        self,
        flag: str,
        dest: str,
        kind: str,
        help: str,
        choices: tuple[str, ...] | None = None,
        check: str | None = None,  # "tag" | "tag_pattern" | "u16"
        default: Any = None,
        *,
        metavar: str | None = None,
        panel: str | None = None,
    ) -> None:
        self.flag, self.dest, self.kind, self.help = flag, dest, kind, help
        self.choices, self.check, self.default = choices, check, default
        if metavar is None and kind in _DEFAULT_METAVAR:
            metavar = "|".join(choices) if choices else _DEFAULT_METAVAR[kind]
        self.metavar, self.panel = metavar, panel


class Command:
    """One subcommand: its options, positional arguments and option conflicts."""

    __slots__ = (
        "aliases",
        "by_flag",
        "conflicts",
        "help",
        "job_id",
        "name",
        "options",
        "positional_choice",
        "rest",
    )

    def __init__(
        self,
        name: str,
        help: str,
        options: tuple[Opt, ...] = (),
        *,
        job_id: str | None = None,  # None, "required" or "optional"
        rest: bool = False,  # takes the job's COMMAND words
        positional_choice: tuple[str, ...] | None = None,  # completions SHELL
        conflicts: tuple[tuple[str, str], ...] = (),
        aliases: tuple[str, ...] = (),
    ) -> None:
        self.name, self.help, self.options = name, help, options
        self.job_id, self.rest, self.positional_choice = job_id, rest, positional_choice
        self.conflicts, self.aliases = conflicts, aliases
        self.by_flag = {opt.flag: opt for opt in options}


GLOBAL_OPTIONS = (
    Opt(
        "--root",
        "root",
        STR,
        "Jobs root directory (default: $AGENT_EXEC_ROOT, then XDG data dir).",
        metavar="PATH",
    ),
    Opt("--yaml", "yaml", FLAG, "Print the response as YAML instead of JSON."),
    Opt("--verbose", "verbose", COUNT, "More diagnostics on stderr (-v info, -vv debug)."),
    Opt(
        "--backend",
        "backend",
        STR,
        "Where run/create send jobs: local or ray (default: $AGENT_EXEC_BACKEND, config, local).",
        choices=("local", "ray"),
    ),
    Opt(
        "--ray-address",
        "ray_address",
        STR,
        "Ray Jobs API address (default: $AGENT_EXEC_RAY_ADDRESS, config, http://127.0.0.1:8265).",
    ),
)
#: Global options that take a value, and where they go.
GLOBAL_VALUES = {"--root": "root", "--backend": "backend", "--ray-address": "ray_address"}

_AUTO_GC = (
    Opt("--no-auto-gc", "no_auto_gc", FLAG, "Skip automatic garbage collection.", panel=AUTO_GC),
    Opt(
        "--auto-gc-older-than",
        "auto_gc_older_than",
        STR,
        "Auto-GC retention (30d, 24h, 60m, 3600s).",
        metavar="AGE",
        panel=AUTO_GC,
    ),
    Opt("--auto-gc-max-jobs", "auto_gc_max_jobs", INT, "Auto-GC max-jobs policy.", panel=AUTO_GC),
    Opt(
        "--auto-gc-max-bytes",
        "auto_gc_max_bytes",
        INT,
        "Auto-GC max-bytes policy.",
        metavar="BYTES",
        panel=AUTO_GC,
    ),
)
_OBSERVE = (
    Opt("--wait", "wait", OPTBOOL, "Wait for inline output (default true).", default=True, panel=OBSERVATION),
    Opt(
        "--until",
        "until",
        INT,
        "Maximum seconds to wait for inline output.",
        default=10,
        metavar="SECONDS",
        panel=OBSERVATION,
    ),
    Opt("--forever", "forever", FLAG, "Wait without a deadline.", panel=OBSERVATION),
    Opt("--no-wait", "no_wait", FLAG, "Return immediately after launching.", panel=OBSERVATION),
    Opt(
        "--max-bytes",
        "max_bytes",
        INT,
        "Bytes of each stream's head included inline.",
        default=65536,
        metavar="BYTES",
        panel=OBSERVATION,
    ),
)
_OUTPUT_MATCH = (
    Opt(
        "--output-pattern",
        "output_pattern",
        STR,
        "Emit job.output.matched for lines matching this.",
        metavar="PATTERN",
        panel=NOTIFICATION,
    ),
    Opt(
        "--output-match-type",
        "output_match_type",
        STR,
        "How --output-pattern matches (default contains).",
        choices=("contains", "regex"),
        panel=NOTIFICATION,
    ),
    Opt(
        "--output-stream",
        "output_stream",
        STR,
        "Which stream to match (default either).",
        choices=("stdout", "stderr", "either"),
        panel=NOTIFICATION,
    ),
    Opt(
        "--output-command",
        "output_command",
        STR,
        "Shell command run for each matching line.",
        metavar="SHELL_CMD",
        panel=NOTIFICATION,
    ),
    Opt(
        "--output-file",
        "output_file",
        STR,
        "NDJSON file receiving each match event.",
        metavar="PATH",
        panel=NOTIFICATION,
    ),
)
_DEFINITION = (
    Opt(
        "--timeout",
        "timeout",
        INT,
        "Runtime limit in seconds (0 = none).",
        default=0,
        metavar="SECONDS",
        panel=DEFINITION,
    ),
    Opt(
        "--kill-after",
        "kill_after",
        INT,
        "Seconds between SIGTERM and SIGKILL on timeout.",
        default=0,
        metavar="SECONDS",
        panel=DEFINITION,
    ),
    Opt("--cwd", "cwd", STR, "Working directory of the job.", metavar="DIR", panel=DEFINITION),
    Opt(
        "--env",
        "env",
        MULTI,
        "Set a variable in the job's environment (repeatable).",
        metavar="KEY=VALUE",
        panel=DEFINITION,
    ),
    Opt(
        "--env-file",
        "env_file",
        MULTI,
        "Env file read when the job starts (repeatable).",
        metavar="PATH",
        panel=DEFINITION,
    ),
    Opt("--no-inherit-env", "no_inherit_env", FLAG, "Start from an empty environment.", panel=DEFINITION),
    Opt(
        "--inherit-env",
        "inherit_env",
        FLAG,
        "Inherit the caller's environment (the default).",
        panel=DEFINITION,
    ),
    Opt(
        "--mask",
        "mask",
        MULTI,
        "Show this --env key's value as *** (repeatable).",
        metavar="KEY",
        panel=DEFINITION,
    ),
    Opt(
        "--stdin",
        "stdin",
        STR,
        "Stdin content for the job; '-' reads the caller's stdin.",
        panel=DEFINITION,
    ),
    Opt(
        "--stdin-file", "stdin_file", STR, "File copied as the job's stdin.", metavar="PATH", panel=DEFINITION
    ),
    Opt(
        "--stdin-max-bytes",
        "stdin_max_bytes",
        INT,
        "Size limit for stdin.",
        default=67108864,
        metavar="BYTES",
        panel=DEFINITION,
    ),
    Opt(
        "--tag",
        "tag",
        MULTI,
        "Tag for the job (repeatable).",
        check="tag",
        metavar="TAG",
        panel=DEFINITION,
    ),
    Opt(
        "--progress-every",
        "progress_every",
        INT,
        "Refresh updated_at every N seconds.",
        default=0,
        metavar="SECONDS",
        panel=DEFINITION,
    ),
    Opt(
        "--notify-command",
        "notify_command",
        STR,
        "Shell command run when the job finishes.",
        metavar="SHELL_CMD",
        panel=NOTIFICATION,
    ),
    Opt(
        "--notify-file",
        "notify_file",
        STR,
        "NDJSON file receiving the job.finished event.",
        metavar="PATH",
        panel=NOTIFICATION,
    ),
    *_OUTPUT_MATCH,
    Opt(
        "--config",
        "config",
        STR,
        "Config file (default $XDG_CONFIG_HOME/agent-exec/config.toml).",
        metavar="PATH",
        panel=DEFINITION,
    ),
    Opt(
        "--shell-wrapper",
        "shell_wrapper",
        STR,
        'Wrapper used to launch commands (default "sh -lc").',
        metavar="WRAPPER",
        panel=DEFINITION,
    ),
)
_TAG_OPTION = Opt("--tag", "tag", MULTI, "Tag for the job (repeatable).", check="tag", metavar="TAG")
_DEFINITION_CONFLICTS = (("no_inherit_env", "inherit_env"), ("stdin", "stdin_file"))
_CWD_SCOPE = (
    Opt("--limit", "limit", INT, "Maximum number of jobs (0 = unlimited).", default=50),
    Opt("--cwd", "cwd", STR, "Only jobs started in this directory.", metavar="DIR"),
    Opt("--all", "all", FLAG, "Jobs from every directory."),
    Opt(
        "--tag",
        "tag",
        MULTI,
        "Only jobs with a tag matching this (tag or ns.*).",
        check="tag_pattern",
        metavar="PATTERN",
    ),
)
STATES = ("created", "running", "exited", "killed", "failed", "unknown")

COMMANDS: dict[str, Command] = {
    command.name: command
    for command in (
        Command(
            "run",
            "Launch a job now and return its first output.",
            (
                *_AUTO_GC,
                *_DEFINITION,
                Opt(
                    "--log",
                    "log",
                    STR,
                    "Alternative path of the combined log.",
                    metavar="PATH",
                    panel=DEFINITION,
                ),
                *_OBSERVE,
            ),
            rest=True,
            conflicts=(*_DEFINITION_CONFLICTS, ("until", "forever")),
        ),
        Command(
            "create",
            "Persist a job definition without starting it.",
            _DEFINITION,
            rest=True,
            conflicts=_DEFINITION_CONFLICTS,
        ),
        Command(
            "start",
            "Launch a created job.",
            (*_AUTO_GC, *_OBSERVE),
            job_id="required",
            conflicts=(("until", "forever"),),
        ),
        Command(
            "restart",
            "Relaunch a job in place: stop it if running, clear its logs, start it again.",
            (
                Opt(
                    "--signal",
                    "signal",
                    STR,
                    "Signal for a running instance (KILL follows after 5 s).",
                    default="TERM",
                ),
                *_AUTO_GC,
                *_OBSERVE,
            ),
            job_id="required",
            conflicts=(("until", "forever"),),
        ),
        Command("status", "Show a job's state.", job_id="required"),
        Command(
            "tail",
            "Show the last lines of a job's logs.",
            (
                Opt(
                    "--tail-lines", "tail_lines", INT, "Trailing lines per stream (0 = no limit).", default=50
                ),
                Opt(
                    "--max-bytes",
                    "max_bytes",
                    INT,
                    "Only the last BYTES bytes of each log.",
                    default=65536,
                    metavar="BYTES",
                ),
            ),
            job_id="required",
        ),
        Command(
            "wait",
            "Block until a job finishes (or the deadline passes).",
            (
                Opt(
                    "--poll",
                    "poll",
                    INT,
                    "Poll interval in seconds for created jobs.",
                    default=1,
                    metavar="SECONDS",
                ),
                Opt("--until", "until", INT, "Deadline in seconds.", default=30, metavar="SECONDS"),
                Opt("--forever", "forever", FLAG, "No deadline."),
                Opt(
                    "--max-bytes",
                    "max_bytes",
                    INT,
                    "Bytes of each stream's head included.",
                    default=65536,
                    metavar="BYTES",
                ),
            ),
            job_id="required",
            conflicts=(("until", "forever"),),
        ),
        Command(
            "kill",
            "Send a signal to a running job's process group.",
            (
                Opt(
                    "--signal",
                    "signal",
                    STR,
                    "Signal name or number (TERM, INT, KILL, HUP, 9...).",
                    default="TERM",
                    metavar="SIGNAL",
                ),
                Opt("--no-wait", "no_wait", FLAG, "Do not wait to observe the outcome."),
            ),
            job_id="required",
        ),
        Command(
            "delete",
            "Delete finished jobs.",
            (
                Opt("--all", "all", FLAG, "Every finished job started in the current directory."),
                Opt("--dry-run", "dry_run", FLAG, "Report only."),
            ),
            job_id="optional",
            aliases=("rm",),
        ),
        Command(
            "gc",
            "Garbage-collect old finished jobs.",
            (
                Opt("--older-than", "older_than", STR, "Retention (30d, 24h, 60m, 3600s).", metavar="AGE"),
                Opt("--max-jobs", "max_jobs", INT, "Keep at most N old jobs."),
                Opt("--max-bytes", "max_bytes", INT, "Byte budget for old jobs.", metavar="BYTES"),
                Opt("--dry-run", "dry_run", FLAG, "Report only."),
            ),
        ),
        Command(
            "list",
            "List jobs.",
            (
                *_CWD_SCOPE,
                Opt("--state", "state", STR, "Only jobs in this state.", choices=STATES, metavar="STATE"),
            ),
            conflicts=(("cwd", "all"),),
        ),
        Command("ps", "List running jobs.", _CWD_SCOPE, conflicts=(("cwd", "all"),)),
        Command("tag set", "Replace a job's tags.", (_TAG_OPTION,), job_id="required"),
        Command(
            "notify set",
            "Update a job's notification settings.",
            (
                Opt("--command", "command", STR, "Completion command.", metavar="SHELL_CMD"),
                *_OUTPUT_MATCH,
            ),
            job_id="required",
        ),
        Command("schema", "Print the JSON Schema of every response."),
        Command(
            "completions",
            "Print a shell completion script.",
            positional_choice=("bash", "zsh", "fish", "powershell"),
        ),
        Command(
            "install-skills",
            "Install the agent-exec skill for AI agents (MCP hosts: see 'agent-exec mcp').",
            (
                Opt("--global", "global_", FLAG, "Install under the home directory."),
                Opt("--claude", "claude", FLAG, "Use .claude/ instead of .agents/."),
            ),
        ),
        Command(
            "serve",
            "Serve the job store over HTTP.",
            (
                Opt(
                    "--bind",
                    "bind",
                    STR,
                    "Address to listen on (default 127.0.0.1:19263).",
                    metavar="IP:PORT",
                ),
                Opt(
                    "--port", "port", INT, "Shorthand for --bind 127.0.0.1:PORT.", check="u16", metavar="PORT"
                ),
                Opt("--insecure", "insecure", FLAG, "Allow a non-loopback bind (requires a token)."),
                Opt(
                    "--allow-origin",
                    "allow_origin",
                    STR,
                    "Enable CORS for exactly this origin.",
                    metavar="ORIGIN",
                ),
                Opt("--auth-reads", "auth_reads", FLAG, "Require the token on read endpoints too."),
            ),
            conflicts=(("bind", "port"),),
        ),
        Command("mcp", "Serve the job store to agent hosts over MCP (stdio)."),
    )
}
ALIASES = {alias: command.name for command in COMMANDS.values() for alias in command.aliases}
GROUPS = {"tag": "set", "notify": "set"}


class Invocation:
    """A parsed command line: the subcommand, its parameters and the global options."""

    __slots__ = ("command", "globals", "params", "typed")

    def __init__(
        self, command: str, params: dict[str, Any], globals: dict[str, Any], typed: set[str] | None = None
    ) -> None:
        self.command, self.params, self.globals = command, params, globals
        self.typed = typed if typed is not None else set()


class Decline(Exception):
    """The fast parser will not decide: hand the argv to typer (help, errors, oddities)."""


def _is_short_verbose(token: str) -> bool:
    return len(token) > 1 and token[0] == "-" and set(token[1:]) == {"v"}


def _parse_global(token: str, argv: list[str], index: int, out: dict[str, Any]) -> int | None:
    """Consume a global option at ``argv[index]``; return the next index, or None."""
    if token == "--verbose" or _is_short_verbose(token):
        out["verbose"] += 1 if token == "--verbose" else len(token) - 1
        return index + 1
    if token == "--yaml":
        out["yaml"] = True
        return index + 1
    flag, has_value, inline = token.partition("=")
    dest = GLOBAL_VALUES.get(flag)
    if dest is None:
        return None
    if has_value:
        value, next_index = inline, index + 1
    elif index + 1 < len(argv):
        value, next_index = argv[index + 1], index + 2
    else:
        raise Decline
    if dest == "backend" and value not in ("local", "ray"):
        raise Decline
    out[dest] = value
    return next_index


def _convert(opt: Opt, value: str) -> Any:
    if opt.kind == INT:
        if not value.isascii() or not value.isdigit():
            raise Decline
        number = int(value)
        if opt.check == "u16" and number > 65535:
            raise Decline
        return number
    if opt.choices is not None and value not in opt.choices:
        raise Decline
    if opt.check == "tag" and not is_tag(value):
        raise Decline
    if opt.check == "tag_pattern" and not is_tag_pattern(value):
        raise Decline
    return value


def defaults(command: Command) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for opt in command.options:
        if opt.kind == MULTI:
            params[opt.dest] = []
        elif opt.kind == FLAG:
            params[opt.dest] = False
        else:
            params[opt.dest] = opt.default
    if command.job_id:
        params["job_id"] = None
    if command.rest:
        params["command"] = []
    if command.positional_choice:
        params["shell"] = None
    return params


def parse(argv: list[str]) -> Invocation:
    """Parse a well-formed invocation; raise :class:`Decline` for anything else."""
    globals_: dict[str, Any] = {
        "root": None,
        "yaml": False,
        "verbose": 0,
        "backend": None,
        "ray_address": None,
    }
    index = 0
    while index < len(argv) and argv[index].startswith("-"):
        next_index = _parse_global(argv[index], argv, index, globals_)
        if next_index is None:
            raise Decline
        index = next_index
    if index >= len(argv):
        raise Decline
    name = ALIASES.get(argv[index], argv[index])
    index += 1
    if name in GROUPS:
        if index >= len(argv) or argv[index] != GROUPS[name]:
            raise Decline
        name = f"{name} {argv[index]}"
        index += 1
    command = COMMANDS.get(name)
    if command is None:
        raise Decline
    params = defaults(command)
    typed: set[str] = set()
    positionals: list[str] = []
    options_done = False
    while index < len(argv):
        token = argv[index]
        if options_done or not token.startswith("-") or token == "-":
            if command.rest:
                params["command"] = argv[index:]
                break
            positionals.append(token)
            index += 1
            continue
        if token == "--":
            options_done = True
            index += 1
            if command.rest:
                params["command"] = argv[index:]
                break
            continue
        next_index = _parse_global(token, argv, index, globals_)
        if next_index is not None:
            index = next_index
            continue
        flag, has_value, inline = token.partition("=")
        opt = command.by_flag.get(flag)
        if opt is None:
            raise Decline
        typed.add(opt.dest)
        if opt.kind == FLAG:
            if has_value:
                raise Decline
            params[opt.dest] = True
            index += 1
        elif opt.kind == OPTBOOL:
            if has_value:
                if inline.lower() not in ("true", "false"):
                    raise Decline
                params[opt.dest] = inline.lower() == "true"
                index += 1
            elif index + 1 < len(argv) and argv[index + 1].lower() in ("true", "false"):
                # Any case (upstream rejected `TRUE`, an incidental quirk).
                params[opt.dest] = argv[index + 1].lower() == "true"
                index += 2
            else:
                params[opt.dest] = True
                index += 1
        else:
            if has_value:
                value = inline
                index += 1
            elif index + 1 < len(argv):
                value = argv[index + 1]
                index += 2
            else:
                raise Decline
            converted = _convert(opt, value)
            if opt.kind == MULTI:
                params[opt.dest].append(converted)
            else:
                params[opt.dest] = converted
    for first, second in command.conflicts:
        if first in typed and second in typed:
            raise Decline
    if command.rest and not params["command"]:
        raise Decline
    if command.positional_choice is not None:
        if len(positionals) != 1 or positionals[0] not in command.positional_choice:
            raise Decline
        params["shell"] = positionals[0]
    elif command.job_id is not None:
        if len(positionals) > 1:
            raise Decline
        params["job_id"] = positionals[0] if positionals else None
        if command.job_id == "required" and not positionals:
            raise Decline
        if command.name == "delete" and (
            (positionals and params["all"]) or (not positionals and not params["all"])
        ):
            raise Decline
    elif positionals:
        raise Decline
    return Invocation(name, params, globals_, typed)


def hoist_globals(argv: list[str]) -> list[str]:
    """Move global options found after the subcommand in front of it (for typer), make a
    bare ``--wait`` explicit, and leave a job's COMMAND words untouched."""
    head: list[str] = []
    index = 0
    while index < len(argv) and argv[index].startswith("-") and argv[index] != "--":
        head.append(argv[index])
        if argv[index] in GLOBAL_VALUES and index + 1 < len(argv):
            head.append(argv[index + 1])
            index += 1
        index += 1
    if index >= len(argv):
        return argv
    name = ALIASES.get(argv[index], argv[index])
    words = [argv[index]]
    index += 1
    if name in GROUPS and index < len(argv) and argv[index] == GROUPS[name]:
        words.append(argv[index])
        name = f"{name} {argv[index]}"
        index += 1
    command = COMMANDS.get(name)
    if command is None:
        return argv
    body: list[str] = []
    while index < len(argv):
        token = argv[index]
        if token == "--" or (command.rest and (not token.startswith("-") or token == "-")):
            body.extend(argv[index:])
            break
        if (
            token in ("--yaml", "--verbose")
            or _is_short_verbose(token)
            or ("=" in token and token.partition("=")[0] in GLOBAL_VALUES)
        ):
            head.append(token)
            index += 1
            continue
        if token in GLOBAL_VALUES:
            head.extend(argv[index : index + 2])
            index += 2
            continue
        opt = command.by_flag.get(token.partition("=")[0])
        if opt is not None and opt.kind == OPTBOOL and "=" not in token:
            if index + 1 < len(argv) and argv[index + 1].lower() in ("true", "false"):
                body.append(f"{token}={argv[index + 1].lower()}")
                index += 2
            else:
                body.append(f"{token}=true")
                index += 1
            continue
        body.append(token)
        if opt is not None and opt.kind in (STR, INT, MULTI) and "=" not in token and index + 1 < len(argv):
            body.append(argv[index + 1])
            index += 1
        index += 1
    return [*head, *words, *body]
