"""The ``hubmirror`` command line: thin wrappers that parse flags and call the library.

This module stays import-light: ``hubmirror --version`` answers without loading typer, and the Typer
``app`` (with every command registered) is built on first use (`main`, or ``from hubmirror.cli import app``).
"""

from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typer import Typer

    app: Typer


def _build_app() -> Typer:
    from . import copy, demo, library, login, serve, status, sync  # noqa: F401  (each registers its commands)
    from ._app import app

    return app


#: Commands that talk to registries (they import aiohttp).
_NETWORK_COMMANDS = frozenset({"sync", "copy", "serve", "login", "demo"})


def main() -> None:
    """The console script ``hubmirror``."""
    if sys.argv[1:] in (["--version"], ["version"]):  # answered before typer is imported
        from .. import __version__

        print(__version__)
        return
    if len(sys.argv) > 1 and sys.argv[1] in _NETWORK_COMMANDS and "--help" not in sys.argv:
        _preload_aiohttp()
    _build_app()()


def _preload_aiohttp() -> None:
    """Import aiohttp in a thread while typer builds the command line. Its import loads the system's CA
    certificates twice (~60 ms of OpenSSL work that releases the GIL), which then overlaps with the rest
    of start-up. A failure here is left to the command's own import of aiohttp to report."""
    import threading

    def load() -> None:
        with contextlib.suppress(BaseException):
            import aiohttp  # noqa: F401

    threading.Thread(target=load, name="hubmirror-preload", daemon=True).start()


def __getattr__(name: str) -> Any:
    if name == "app":
        return _build_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["app", "main"]
