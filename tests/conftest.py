"""Shared fixtures: a private jobs root per test and a CLI runner that runs agent-exec the
way a user does (a subprocess, stdout parsed as one JSON document)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def doc(self) -> dict[str, Any]:
        """The single JSON document on stdout (fails the test if there is not exactly one)."""
        lines = self.stdout.rstrip("\n").split("\n")  # not splitlines(): U+2028 may be in a string
        assert len(lines) == 1, f"expected one JSON line, got {self.stdout!r} (stderr {self.stderr!r})"
        return orjson.loads(lines[0])  # type: ignore[no-any-return]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "jobs"


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """An environment that keeps the user's home, config and jobs root out of the test."""
    env = dict(os.environ)
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), XDG_DATA_HOME=str(home / ".data"))
    env.pop("AGENT_EXEC_ROOT", None)
    env.pop("COMPLETE", None)
    return env


Cli = Callable[..., CliResult]


@pytest.fixture
def cli(root: Path, cli_env: dict[str, str], tmp_path: Path) -> Cli:
    """``cli("run", "--", "echo", "hi")`` runs ``agent-exec --root <tmp> run -- echo hi``."""

    def run(
        *args: str,
        input: bytes | None = None,
        use_root: bool = True,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 60,
    ) -> CliResult:
        argv = [sys.executable, "-m", "agent_exec"]
        if use_root:
            argv += ["--root", str(root)]
        proc = subprocess.run(
            [*argv, *args],
            input=input if input is not None else b"",
            capture_output=True,
            cwd=cwd or tmp_path,
            env=env or cli_env,
            timeout=timeout,
        )
        return CliResult(proc.returncode, proc.stdout.decode(), proc.stderr.decode())

    return run


def poll_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns something truthy, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def py(code: str) -> list[str]:
    """A job command that runs Python code (argv mode: no shell quoting involved)."""
    return [sys.executable, "-c", code]
