"""Developer sessions: ``nox`` runs tests, lint and typecheck; ``nox -s bench`` the benchmarks.

Each session installs what it needs into its own virtualenv, so a session passing does not
depend on the state of the developer's ``.venv``. Extra arguments go to the tool:
``nox -s tests -- -m faults -x``, ``nox -s bench -- --quick``.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = ["3.11"]
SOURCES = ["src", "tests", "benchmarks", "noxfile.py"]


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The test suite against a regular (non-editable) install, as users get it."""
    session.install(".[test]")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff lint and format checks (configuration in pyproject.toml)."""
    session.install("ruff")
    session.run("ruff", "check", *SOURCES)
    session.run("ruff", "format", "--check", *SOURCES)


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict (per pyproject.toml) on the package, with its dependencies' stubs."""
    session.install(".", "mypy", "types-PyYAML")
    session.run("mypy", "src/agent_exec", *session.posargs)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Every benchmarks/bench_*.py against an installed package (not editable, byte-compiled)."""
    session.install(".")
    session.run("python", "benchmarks/run_all.py", *session.posargs)
