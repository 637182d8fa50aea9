"""``--help`` a person reads: the grammar's metavars (``SECONDS``, ``PATH``, ``CMD...``)
instead of type placeholders (``<int range>``, ``<list[str]>``), and a command's options
grouped in the sections the grammar names (``run``: definition, observation,
notification, auto-GC).

Plain click formatting (no rich): help is read in terminals, pipes and agent transcripts
alike, and box drawing helps none of them.
"""

from __future__ import annotations

from typing import Any

import typer.core

from . import _grammar as grammar

Record = tuple[str, str]


def _record(param: Any) -> Record | None:
    """One help line: names and metavar, then the help text and the default."""
    if getattr(param, "hidden", False):
        return None
    metavar = param.metavar or (param.name or "").upper()
    text = getattr(param, "help", None) or ""
    if param.param_type_name == "argument":
        return metavar, text
    names = ", ".join(sorted([*param.opts, *param.secondary_opts], key=lambda name: name.startswith("--")))
    valued = not param.is_flag and not param.count
    if valued:
        names += f" {metavar}"
    default = param.default
    shown = valued and param.show_default is not False and default not in (None, [], ())
    if shown and not callable(default) and not hasattr(default, "value"):
        text += f"  [default: {default}]"
    return names, text


def _sections(command: Any, ctx: Any) -> list[tuple[str, list[Record]]]:
    """Arguments first, then the grammar's panels in their order, then plain options."""
    sections: dict[str, list[Record]] = {}
    for param in command.get_params(ctx):
        record = _record(param)
        if record is None:
            continue
        if param.param_type_name == "argument":
            title = "Arguments"
        else:
            title = getattr(param, "rich_help_panel", None) or "Options"
        sections.setdefault(title, []).append(record)
    panels = [title for title in sections if title not in ("Arguments", "Options")]
    if len(panels) == 1:  # one section of options reads better as plain "Options"
        sections["Options"] = [*sections.pop(panels[0]), *sections.get("Options", [])]
    order = ["Arguments", *grammar.PANELS, *sorted(sections), "Options"]
    return [(title, sections[title]) for title in dict.fromkeys(order) if title in sections]


def _format(command: Any, ctx: Any, formatter: Any) -> None:
    for title, records in _sections(command, ctx):
        with formatter.section(title):
            formatter.write_dl(records)


class HelpCommand(typer.core.TyperCommand):
    """A subcommand whose help uses the grammar's metavars and sections."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = ["[OPTIONS]"]
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                name = param.metavar or (param.name or "").upper()
                pieces.append(name if param.required else f"[{name}]")
        return pieces

    def format_options(self, ctx: Any, formatter: Any) -> None:
        _format(self, ctx, formatter)


class HelpGroup(typer.core.TyperGroup):
    """The top-level app (and ``tag``/``notify``): the same option format, then commands."""

    def format_options(self, ctx: Any, formatter: Any) -> None:
        _format(self, ctx, formatter)
        self.format_commands(ctx, formatter)


def option_settings(opt: grammar.Opt) -> dict[str, Any]:
    """``typer.Option`` keyword arguments that carry an option's help presentation."""
    text = opt.help
    if opt.choices and opt.metavar != "|".join(opt.choices):
        text += f" One of: {', '.join(opt.choices)}."
    settings: dict[str, Any] = {"help": text}
    if opt.metavar is not None:
        settings["metavar"] = opt.metavar
    if opt.panel is not None:
        settings["rich_help_panel"] = opt.panel
    return settings
