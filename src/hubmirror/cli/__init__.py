"""The ``hubmirror`` command line: thin wrappers that parse flags and call the library."""

from __future__ import annotations

from . import copy as _copy  # noqa: F401  (registers commands)
from . import demo as _demo  # noqa: F401
from . import library as _library  # noqa: F401
from . import login as _login  # noqa: F401
from . import status as _status  # noqa: F401
from . import sync as _sync  # noqa: F401
from ._app import app


def main() -> None:
    app()


__all__ = ["app", "main"]
