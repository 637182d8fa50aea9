"""``--help`` a person reads: metavars instead of type placeholders, ``run``'s options in
sections, for every command of the grammar (new commands included)."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from agent_exec._cli._app import build_app
from agent_exec._cli._grammar import COMMANDS
from conftest import Cli

PLACEHOLDER = re.compile(r"<[a-z_\[\]| ]+>")  # <str>, <list[str]>, <int range>


@pytest.mark.parametrize("words", [[], *(name.split() for name in sorted(COMMANDS))], ids=" ".join)
def test_help_has_no_type_placeholders(words: list[str]) -> None:
    # In-process (typer's runner) to keep this quick; the subprocess test below runs the real CLI.
    result = CliRunner().invoke(build_app(), [*words, "--help"], prog_name="agent-exec")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage: agent-exec"), result.output
    assert not PLACEHOLDER.findall(result.output), result.output
    for name in [opt.flag for opt in COMMANDS[" ".join(words)].options] if words else ["--root"]:
        assert name in result.output


def test_run_help_groups_options_and_names_their_values(cli: Cli) -> None:
    result = cli("run", "--help")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert text.splitlines()[0] == "Usage: agent-exec run [OPTIONS] CMD..."
    sections = [
        line[:-1] for line in text.splitlines() if line and not line[0].isspace() and line.endswith(":")
    ]
    assert sections == ["Arguments", "Definition", "Observation", "Notification", "Auto-GC", "Options"]
    for shown in ("--timeout SECONDS", "--env KEY=VALUE", "--cwd DIR", "--wait [true|false]", "--log PATH"):
        assert shown in text
    observation = text.split("Observation:")[1].split("Notification:")[0]
    assert "--until SECONDS" in observation and "--timeout" not in observation
