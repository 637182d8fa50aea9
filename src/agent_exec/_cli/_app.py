"""The typer application, generated from the grammar table in ``_grammar.py``.

It is used when the fast parser declines an argv: ``--help``, ``--version``, shell
completion, and every malformed invocation (typer/click print the usage error on stderr
and exit 2). Well-formed invocations it accepts run exactly the same command code.
"""

from __future__ import annotations

import enum
import inspect
from typing import Annotated, Any

import typer

from . import _grammar as grammar
from ._help import HelpCommand, HelpGroup, option_settings

VERSION_TEXT = "agent-exec 0.2.3"


def _choice_enum(opt: grammar.Opt) -> type[enum.Enum]:
    assert opt.choices is not None
    return enum.Enum(f"Choice_{opt.dest}", {value: value for value in opt.choices}, type=str)  # type: ignore[return-value]


def _check_tags(kind: str) -> Any:
    def check(values: list[str] | None) -> list[str] | None:
        for value in values or []:
            ok = grammar.is_tag(value) if kind == "tag" else grammar.is_tag_pattern(value)
            if not ok:
                expected = "letters, digits and '-' in dot-separated segments"
                if kind == "tag_pattern":
                    expected += ", optionally ending in '.*'"
                raise typer.BadParameter(f"invalid tag {value!r}: expected {expected}")
        return values

    return check


def _parameter(opt: grammar.Opt) -> inspect.Parameter:
    annotation: Any
    default: Any = opt.default
    shown = option_settings(opt)
    if opt.kind == grammar.FLAG:
        annotation = Annotated[bool, typer.Option(opt.flag, **shown)]
        default = False
    elif opt.kind == grammar.INT:
        maximum = 65535 if opt.check == "u16" else None
        annotation = Annotated[int | None, typer.Option(opt.flag, min=0, max=maximum, **shown)]
    elif opt.kind == grammar.MULTI:
        callback = _check_tags(opt.check) if opt.check else None
        annotation = Annotated[list[str] | None, typer.Option(opt.flag, callback=callback, **shown)]
        default = None
    elif opt.kind == grammar.OPTBOOL:
        choice = enum.Enum("Choice_wait", {"true": "true", "false": "false"}, type=str)  # type: ignore[misc]
        annotation = Annotated[choice | None, typer.Option(opt.flag, **shown)]  # type: ignore[valid-type]
        default = None
    elif opt.choices is not None:
        annotation = Annotated[_choice_enum(opt) | None, typer.Option(opt.flag, **shown)]  # type: ignore[misc]
    else:
        annotation = Annotated[str | None, typer.Option(opt.flag, **shown)]
    return inspect.Parameter(opt.dest, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def _normalise(command: grammar.Command, kwargs: dict[str, Any]) -> dict[str, Any]:
    params = grammar.defaults(command)
    for key, value in kwargs.items():
        if isinstance(value, enum.Enum):
            value = value.value
        if key == "wait":
            value = True if value is None else value == "true"
        elif value is None and isinstance(params.get(key), list):
            value = []
        elif value is None and key in params:
            value = params[key]
        elif isinstance(value, tuple):
            value = list(value)
        params[key] = value
    return params


def _make_callback(command: grammar.Command) -> Any:
    def callback(ctx: typer.Context, **kwargs: Any) -> None:
        for first, second in command.conflicts:
            sources = [ctx.get_parameter_source(name) for name in (first, second)]
            if all(source is not None and source.name == "COMMANDLINE" for source in sources):
                raise typer.BadParameter(
                    f"--{first.replace('_', '-')} cannot be used with --{second.replace('_', '-')}"
                )
        params = _normalise(command, kwargs)
        if command.name == "delete" and bool(params["job_id"]) == bool(params["all"]):
            raise typer.BadParameter("give either JOB_ID or --all")
        from . import execute

        raise typer.Exit(execute(grammar.Invocation(command.name, params, ctx.obj)))

    parameters = [
        inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context),
        *(_parameter(opt) for opt in command.options),
    ]
    if command.job_id is not None:
        required = command.job_id == "required"
        parameters.append(
            inspect.Parameter(
                "job_id",
                inspect.Parameter.KEYWORD_ONLY,
                default=... if required else None,
                annotation=Annotated[
                    str | None, typer.Argument(metavar="JOB_ID", help="Job id or unique prefix.")
                ],
            )
        )
    if command.rest:
        parameters.append(
            inspect.Parameter(
                "command",
                inspect.Parameter.KEYWORD_ONLY,
                default=...,
                annotation=Annotated[
                    list[str],
                    typer.Argument(
                        metavar="CMD...",
                        help="The command: one word is a shell string; several are run as argv.",
                    ),
                ],
            )
        )
    if command.positional_choice is not None:
        shells = enum.Enum("Shell", {name: name for name in command.positional_choice}, type=str)  # type: ignore[misc]
        argument = typer.Argument(metavar="SHELL", help=f"One of: {', '.join(command.positional_choice)}.")
        parameters.append(
            inspect.Parameter(
                "shell",
                inspect.Parameter.KEYWORD_ONLY,
                default=...,
                annotation=Annotated[shells, argument],  # type: ignore[valid-type]
            )
        )
    callback.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    callback.__name__ = command.name.replace(" ", "_").replace("-", "_")
    callback.__doc__ = command.help
    return callback


def _print_version(value: bool) -> None:
    if value:
        print(VERSION_TEXT)
        raise typer.Exit(0)


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="agent-exec",
        cls=HelpGroup,
        add_completion=False,
        help="Non-interactive job runner for AI agents: every call prints one JSON document.",
        context_settings={"help_option_names": ["-h", "--help"]},
        rich_markup_mode=None,
        pretty_exceptions_enable=False,
    )

    @app.callback()
    def main(
        ctx: typer.Context,
        root: Annotated[
            str | None, typer.Option("--root", **option_settings(grammar.GLOBAL_OPTIONS[0]))
        ] = None,
        yaml: Annotated[bool, typer.Option("--yaml", help=grammar.GLOBAL_OPTIONS[1].help)] = False,
        verbose: Annotated[
            int, typer.Option("--verbose", "-v", count=True, help=grammar.GLOBAL_OPTIONS[2].help)
        ] = 0,
        backend: Annotated[str | None, typer.Option("--backend", help=grammar.GLOBAL_OPTIONS[3].help)] = None,
        ray_address: Annotated[
            str | None, typer.Option("--ray-address", help=grammar.GLOBAL_OPTIONS[4].help)
        ] = None,
        _version: Annotated[
            bool,
            typer.Option(
                "--version", "-V", callback=_print_version, is_eager=True, help="Print the version."
            ),
        ] = False,
    ) -> None:
        if backend is not None and backend not in ("local", "ray"):
            raise typer.BadParameter(f"{backend!r} is not one of 'local', 'ray'", param_hint="'--backend'")
        ctx.obj = {
            "root": root,
            "yaml": yaml,
            "verbose": verbose,
            "backend": backend,
            "ray_address": ray_address,
        }

    groups: dict[str, typer.Typer] = {}
    for command in grammar.COMMANDS.values():
        callback = _make_callback(command)
        settings: dict[str, Any] = {"help_option_names": ["-h", "--help"]}
        if command.rest:
            settings["allow_interspersed_args"] = False
        target = app
        name = command.name
        if " " in name:
            group, name = name.split(" ", 1)
            if group not in groups:
                groups[group] = typer.Typer(
                    cls=HelpGroup, help=f"{group.capitalize()} commands.", no_args_is_help=False
                )
                app.add_typer(groups[group], name=group)
            target = groups[group]
        target.command(name, cls=HelpCommand, help=command.help, context_settings=settings)(callback)
        for alias in command.aliases:
            target.command(
                alias, cls=HelpCommand, help=f"Alias of {name}.", context_settings=settings, hidden=False
            )(callback)
    return app


def run_typer(argv: list[str]) -> None:
    """Run the typer app on ``argv`` (exits the process)."""
    build_app()(args=argv, prog_name="agent-exec")
