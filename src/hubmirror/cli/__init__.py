"""The ``hubmirror`` command line: thin wrappers that parse flags and call the library.

This module stays import-light: ``hubmirror --version`` answers without loading typer, and the Typer
``app`` (with every command registered) is built on first use (`main`, or ``from hubmirror.cli import app``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from typer import Typer

    app: Typer


#: The command modules; each registers the command (or group) of its name on import.
_COMMANDS = ("check", "copy", "demo", "library", "login", "serve", "status", "sync", "verify")


def _build_app(command: str | None = None) -> Typer:
    """The Typer app with every command, or with only *command* when one is being run: typer then builds
    the click command of that one alone (~25 ms less start-up for ``hubmirror sync``)."""
    import importlib

    for name in (command,) if command in _COMMANDS else _COMMANDS:
        importlib.import_module(f"{__name__}.{name}")
    from ._app import app

    return app


def main() -> None:
    """The command line (``console`` is the console script)."""
    if sys.argv[1:] in (["--version"], ["version"]):  # answered before typer is imported
        from .. import __version__

        print(__version__)
        return
    _build_app(sys.argv[1] if len(sys.argv) > 1 else None)()


def console() -> None:
    """The console script ``hubmirror``: `main`, then (for a command that finished) the process ends
    without the interpreter's teardown. `main` itself ends the usual way, for callers in Python."""
    command = sys.argv[1] if len(sys.argv) > 1 else None
    fast = command not in _SERVICES and sys.getprofile() is None and sys.gettrace() is None
    try:
        main()  # typer ends with SystemExit (its exit code)
    except SystemExit as done:
        if not fast:
            raise
        _exit_now(done.code)
    if fast:
        _exit_now(0)


#: Commands that run servers or child processes: they leave the interpreter the usual way.
_SERVICES = frozenset({"serve", "demo"})


def _exit_now(code: object) -> NoReturn:
    """End a finished command without the interpreter's teardown (freeing every module and object: ~0.1 s,
    a tenth of a no-op sync). Everything the command wrote is closed by then (state, report, metrics);
    the output streams and logging are flushed here. Not under a profiler or debugger, whose results are
    written at exit."""
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # sys.exit("message"): printed, exit status 1
        print(code, file=sys.stderr)
        status = 1
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)


def __getattr__(name: str) -> Any:
    if name == "app":
        return _build_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["app", "console", "main"]
