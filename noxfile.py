#!/usr/bin/env python3
# /// script
# dependencies = ["nox>=2025.2.9"]
# ///
"""Developer tasks: ``nox -s lint``, ``nox -s tests``, ``nox -s slow`` (each in a fresh venv)."""

from __future__ import annotations

import nox

nox.needs_version = ">=2025.2.9"
nox.options.default_venv_backend = "venv"  # pip: it takes the CPU torch wheel (see README)


@nox.session
def lint(session: nox.Session) -> None:
    """Run ruff (lint and format), mypy and the import contract."""
    session.install("-e", ".[dev]")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("bash", ".ci/static", env={"VENV_BIN": f"{session.virtualenv.location}/bin"}, external=True)


@nox.session
def tests(session: nox.Session) -> None:
    """Run the default test suite (the README's test command)."""
    session.install("-e", ".[dev]")
    session.run("pytest", *session.posargs)


@nox.session(default=False)
def slow(session: nox.Session) -> None:
    """Run the slow tests (full-size demos through the command line)."""
    session.install("-e", ".[dev]")
    session.run("pytest", "-m", "slow", *session.posargs)


if __name__ == "__main__":
    nox.main()
