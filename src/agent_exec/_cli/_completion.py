"""Shell completion: registration scripts and the dynamic ``COMPLETE=<shell>`` protocol.

The scripts follow upstream's (clap_complete "env") protocol, so registrations made for
agent-exec 0.2.3 keep working: at completion time the shell runs the same executable as
``COMPLETE=<shell> agent-exec -- <word0> <word1> ...`` (bash also passes the cursor's word
index in ``_CLAP_COMPLETE_INDEX`` and the output separator in ``_CLAP_IFS``), and the
program prints the candidates instead of running a command.

The candidates come from click's completion machinery applied to the typer application
generated from the grammar table (``_app.build_app``), so commands, options and choices
can never drift from what the parser accepts. On top of it this module adds what click
cannot know: job ids from the store (filtered by state per command, and by the current
directory as ``list`` does), signal names, and file/directory names, computed here so
every shell gets the same candidates.

Nothing but candidates is ever printed in completion mode: any failure yields none.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

SHELLS = ("bash", "zsh", "fish", "powershell")
PROGRAM = "agent-exec"
SIGNALS = ("TERM", "INT", "KILL", "HUP", "USR1", "USR2")

ALL_STATES: frozenset[str] | None = None
#: Job-id candidates per command (extras.md §2.3); ``None`` = every job.
JOB_ID_STATES: dict[str, frozenset[str] | None] = {
    "status": ALL_STATES,
    "tail": ALL_STATES,
    "tag set": ALL_STATES,
    "notify set": ALL_STATES,
    "start": frozenset({"created"}),
    "restart": ALL_STATES,
    "wait": frozenset({"created", "running"}),
    "kill": frozenset({"running"}),
    "delete": frozenset({"exited", "killed", "failed"}),
}
DIR_OPTIONS = frozenset({"root", "cwd"})
FILE_OPTIONS = frozenset({"env_file", "stdin_file", "config", "log", "notify_file", "output_file"})


# -- registration scripts ----------------------------------------------------------------


def completer_argv() -> list[str]:
    """How the shell should call this very program back (absolute, not looked up in PATH)."""
    argv0 = sys.argv[0] if sys.argv else ""
    if not argv0 or argv0 in ("-c", "-m") or os.path.basename(argv0) == "__main__.py":
        return [sys.executable, "-m", "agent_exec"]
    if os.sep not in argv0:
        import shutil

        argv0 = shutil.which(argv0) or argv0
    return [os.path.abspath(argv0)]


def _fish_quote(word: str) -> str:
    return "'" + word.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _pwsh_quote(word: str) -> str:
    return "'" + word.replace("'", "''") + "'"


def registration_script(shell: str, completer: list[str] | None = None) -> str:
    """The script that registers dynamic completion for ``agent-exec`` in ``shell``."""
    argv = completer or completer_argv()
    name = PROGRAM.replace("-", "_")
    if shell == "bash":
        return f"""\
_clap_complete_{name}() {{
    local IFS=$'\\013'
    local _CLAP_COMPLETE_INDEX=${{COMP_CWORD}}
    local _CLAP_COMPLETE_COMP_TYPE=${{COMP_TYPE}}
    if compopt +o nospace 2> /dev/null; then
        local _CLAP_COMPLETE_SPACE=false
    else
        local _CLAP_COMPLETE_SPACE=true
    fi
    COMPREPLY=( $( \\
        _CLAP_IFS="$IFS" \\
        _CLAP_COMPLETE_INDEX="$_CLAP_COMPLETE_INDEX" \\
        _CLAP_COMPLETE_COMP_TYPE="$_CLAP_COMPLETE_COMP_TYPE" \\
        COMPLETE="bash" \\
        {shlex.join(argv)} -- "${{COMP_WORDS[@]}}" 2>/dev/null \\
    ) )
    if [[ $? != 0 ]]; then
        unset COMPREPLY
    elif [[ $_CLAP_COMPLETE_SPACE == false ]] && [[ "${{COMPREPLY-}}" =~ [=/:]$ ]]; then
        compopt -o nospace
    fi
}}
if [[ "${{BASH_VERSINFO[0]}}" -eq 4 && "${{BASH_VERSINFO[1]}}" -ge 4 || "${{BASH_VERSINFO[0]}}" -gt 4 ]]; then
    complete -o nospace -o bashdefault -o nosort -F _clap_complete_{name} {PROGRAM}
else
    complete -o nospace -o bashdefault -F _clap_complete_{name} {PROGRAM}
fi
"""
    if shell == "zsh":
        return f"""\
#compdef {PROGRAM}
function _clap_dynamic_completer_{name}() {{
    local _CLAP_COMPLETE_INDEX=$(expr $CURRENT - 1)
    local _CLAP_IFS=$'\\n'

    local completions=("${{(@f)$( \\
        _CLAP_IFS="$_CLAP_IFS" \\
        _CLAP_COMPLETE_INDEX="$_CLAP_COMPLETE_INDEX" \\
        COMPLETE="zsh" \\
        {shlex.join(argv)} -- "${{words[@]}}" 2>/dev/null \\
    )}}")

    if [[ -n $completions ]]; then
        _describe 'values' completions
    fi
}}

compdef _clap_dynamic_completer_{name} {PROGRAM}
"""
    if shell == "fish":
        command = " ".join(_fish_quote(word) for word in argv)
        return (
            f"complete --keep-order --exclusive --command {PROGRAM} --arguments "
            f'"(COMPLETE=fish {command} -- (commandline --current-process --tokenize --cut-at-cursor) '
            f'(commandline --current-token))"\n'
        )
    if shell == "powershell":
        command = " ".join(_pwsh_quote(word) for word in argv)
        return f"""\
Register-ArgumentCompleter -Native -CommandName {PROGRAM} -ScriptBlock {{
    param($wordToComplete, $commandAst, $cursorPosition)

    $prev = $env:COMPLETE;
    $env:COMPLETE = "powershell";
    $words = @($commandAst.CommandElements | Where-Object {{ $_.Extent.StartOffset -lt $cursorPosition }} |
        ForEach-Object {{ $_.Extent.Text }});
    if ($wordToComplete -eq "") {{ $words += "" }}
    $results = & {command} -- @words;
    if ($null -eq $prev) {{
        Remove-Item Env:\\COMPLETE;
    }} else {{
        $env:COMPLETE = $prev;
    }}
    $results | ForEach-Object {{
        $split = $_.Split("`t");
        $cmd = $split[0];
        if ($split.Length -eq 2) {{ $help = $split[1] }} else {{ $help = $split[0] }}
        [System.Management.Automation.CompletionResult]::new($cmd, $cmd, 'ParameterValue', $help)
    }}
}};
"""
    raise ValueError(f"unsupported shell {shell!r}")


def print_completion_script(shell: str) -> int:
    """``agent-exec completions <shell>``: print the registration script (not JSON)."""
    if shell not in SHELLS:
        sys.stderr.write(
            f"error: invalid value '{shell}' for '<SHELL>'\n  [possible values: {', '.join(SHELLS)}]\n"
        )
        return 2
    sys.stdout.write(registration_script(shell))
    sys.stdout.flush()
    return 0


# -- candidates --------------------------------------------------------------------------


class Candidate:
    """One completion value and the description shells that support one show beside it."""

    __slots__ = ("help", "value")

    def __init__(self, value: str, help: str | None = None) -> None:
        self.value, self.help = value, help

    def __repr__(self) -> str:
        return f"Candidate({self.value!r}, {self.help!r})"


def _root_from_tokens(tokens: Iterable[str]) -> str | None:
    previous = None
    for token in tokens:
        if previous == "--root":
            return token
        if token.startswith("--root="):
            return token[len("--root=") :]
        previous = token
    return None


def completion_root(words: list[str]) -> Path:
    """``--root`` from ``COMP_LINE``, else from the words, else the normal resolution."""
    from .._paths import resolve_root

    given = _root_from_tokens(os.environ.get("COMP_LINE", "").split())
    if given is None:
        given = _root_from_tokens(words)
    return resolve_root(given)


def _read_json(path: Path) -> Any:
    import orjson

    try:
        with open(path, "rb") as file:
            return orjson.loads(file.read(1 << 20))
    except (OSError, ValueError):
        return None


def job_candidates(root: Path, states: frozenset[str] | None) -> list[Candidate]:
    """Jobs of ``root`` started from the current directory, in the allowed states.

    Read-only on purpose: unlike ``status``, completion never repairs a stale state.
    """
    from .._paths import META_FILE, STATE_FILE, canonical_cwd, iter_job_dirs

    cwd = canonical_cwd()
    found: list[tuple[str, str, str | None]] = []
    for entry in iter_job_dirs(root):
        job_dir = Path(entry.path)
        meta = _read_json(job_dir / META_FILE)
        if not isinstance(meta, dict) or meta.get("cwd") != cwd:
            continue
        state = _read_json(job_dir / STATE_FILE)
        job = state.get("job") if isinstance(state, dict) else None
        status = job.get("status") if isinstance(job, dict) else None
        status = status if isinstance(status, str) else None
        if states is not None and status not in states:
            continue
        created = meta.get("created_at")
        found.append((created if isinstance(created, str) else "", entry.name, status))
    found.sort(reverse=True)  # newest first
    return [Candidate(name, status) for _, name, status in found]


def path_candidates(incomplete: str, *, directories_only: bool) -> list[Candidate]:
    """File or directory names completing ``incomplete`` (directories end in ``/``)."""
    head, _, prefix = incomplete.rpartition("/")
    base = head + "/" if head or incomplete.startswith("/") else ""
    directory = os.path.expanduser(base) if base else "."
    try:
        entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
    except OSError:
        return []
    result = []
    for entry in entries:
        if not entry.name.startswith(prefix) or (entry.name.startswith(".") and not prefix.startswith(".")):
            continue
        try:
            is_dir = entry.is_dir()
        except OSError:
            is_dir = False
        if is_dir:
            result.append(Candidate(base + entry.name + "/"))
        elif not directories_only:
            result.append(Candidate(base + entry.name))
    return result


def _install_completers(command: Any, path: str, words: list[str]) -> None:
    """Attach the store-aware completers to the click parameters of the generated app."""
    from .._cli._grammar import ALIASES

    canonical = ALIASES.get(path, path)
    for param in getattr(command, "params", []):
        completer: Callable[[str], list[Candidate]] | None = None
        if param.name == "job_id" and canonical in JOB_ID_STATES:
            states = JOB_ID_STATES[canonical]

            def completer(incomplete: str, states: frozenset[str] | None = states) -> list[Candidate]:
                return job_candidates(completion_root(words), states)

        elif param.name == "signal":

            def completer(incomplete: str) -> list[Candidate]:
                return [Candidate(name) for name in SIGNALS]

        elif param.name in DIR_OPTIONS or param.name in FILE_OPTIONS:
            directories_only = param.name in DIR_OPTIONS

            def completer(incomplete: str, directories_only: bool = directories_only) -> list[Candidate]:
                return path_candidates(incomplete, directories_only=directories_only)

        if completer is not None:
            param._custom_shell_complete = _click_adapter(completer)
    for name, sub in (getattr(command, "commands", None) or {}).items():
        _install_completers(sub, f"{path} {name}".strip(), words)


def _click_adapter(completer: Callable[[str], list[Candidate]]) -> Any:
    from typer._click.shell_completion import CompletionItem

    def complete(ctx: Any, param: Any, incomplete: str) -> list[Any]:
        return [CompletionItem(c.value, help=c.help) for c in completer(incomplete)]

    return complete


def candidates(words: list[str], index: int) -> list[Candidate]:
    """Candidates for ``words[index]`` (``words[0]`` is the program name), prefix-filtered."""
    import typer.main
    from typer._click.shell_completion import _resolve_context, _resolve_incomplete

    from ._app import build_app

    words = list(words) + [""] * (index + 1 - len(words))
    incomplete = words[index]
    # --version/--help are eager and would print while the context is being resolved.
    args = [word for word in words[1:index] if word not in ("--version", "-V", "--help", "-h")]
    command = typer.main.get_command(build_app())
    _install_completers(command, "", words)
    ctx = _resolve_context(command, {}, PROGRAM, args)
    obj, incomplete = _resolve_incomplete(ctx, args, incomplete)
    items = obj.shell_complete(ctx, incomplete)
    return [Candidate(str(item.value), item.help) for item in items if str(item.value).startswith(incomplete)]


def format_candidates(shell: str, items: list[Candidate]) -> str:
    """Candidates in the format the registration script of ``shell`` expects."""
    if shell == "bash":
        separator = os.environ.get("_CLAP_IFS") or "\n"
        return separator.join(item.value for item in items)
    lines = []
    for item in items:
        help_text = " ".join((item.help or "").split())
        if shell == "zsh":
            value = item.value.replace("\\", "\\\\").replace(":", "\\:")
            lines.append(f"{value}:{help_text}" if help_text else value)
        else:
            lines.append(f"{item.value}\t{help_text}" if help_text else item.value)
    return "\n".join(lines)


def complete_from_env(args: list[str]) -> int:
    """``COMPLETE=<shell> agent-exec [...] -- <words...>``: print candidates, run nothing."""
    shell = os.environ.get("COMPLETE", "")
    if shell in ("", "0"):
        os.environ.pop("COMPLETE", None)
        from . import main

        main(args)
        return 0
    if shell not in SHELLS:
        expected = ", ".join(SHELLS)
        sys.stderr.write(f"error: unknown shell '{shell}' in COMPLETE, expected one of: {expected}\n")
        return 2
    if "--" not in args or args.index("--") == len(args) - 1:
        sys.stdout.write(registration_script(shell))
        return 0
    words = args[args.index("--") + 1 :]
    index = len(words) - 1
    raw_index = os.environ.get("_CLAP_COMPLETE_INDEX")
    if raw_index is not None and raw_index.isdigit():
        index = int(raw_index)
    try:
        items = candidates(words, max(index, 1))
    except Exception:  # completion must never print a traceback into the shell
        items = []
    text = format_candidates(shell, items)
    if text:
        sys.stdout.write(text + "\n")
    sys.stdout.flush()
    return 0
