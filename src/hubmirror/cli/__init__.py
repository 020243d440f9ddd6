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


def _build_app() -> Typer:
    from . import copy, demo, library, login, serve, status, sync  # noqa: F401  (each registers its commands)
    from ._app import app

    return app


def main() -> None:
    """The console script ``hubmirror``."""
    if sys.argv[1:] in (["--version"], ["version"]):  # answered before typer is imported
        from .. import __version__

        print(__version__)
        return
    _build_app()()


def __getattr__(name: str) -> Any:
    if name == "app":
        return _build_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["app", "main"]
