"""The ``hubmirror`` command line: thin wrappers that parse flags and call the library.

This module stays import-light: ``hubmirror --version`` answers without loading typer, and the Typer
``app`` (with every command registered) is built on first use (`main`, or ``from hubmirror.cli import app``).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typer import Typer

    app: Typer


#: The command modules; each registers the command (or group) of its name on import.
_COMMANDS = ("copy", "demo", "library", "login", "serve", "status", "sync")


def _build_app(command: str | None = None) -> Typer:
    """The Typer app with every command, or with only *command* when one is being run: typer then builds
    the click command of that one alone (~25 ms less start-up for ``hubmirror sync``)."""
    import importlib

    for name in (command,) if command in _COMMANDS else _COMMANDS:
        importlib.import_module(f"{__name__}.{name}")
    from ._app import app

    return app


def main() -> None:
    """The console script ``hubmirror``."""
    if sys.argv[1:] in (["--version"], ["version"]):  # answered before typer is imported
        from .. import __version__

        print(__version__)
        return
    _build_app(sys.argv[1] if len(sys.argv) > 1 else None)()


def __getattr__(name: str) -> Any:
    if name == "app":
        return _build_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["app", "main"]
