"""How hubmirror writes amounts of bytes, the same in ``sync``, ``status`` and the status page: decimal units
(kB, MB, GB: powers of 1000, as registries and ``docker images`` show sizes)."""

from __future__ import annotations

from rich.filesize import decimal


def size_text(n: object) -> str:
    """``5.0 kB``, ``52.0 MB``, ``1 byte``; ``–`` for something that is not a number (a missing value)."""
    if isinstance(n, bool) or not isinstance(n, int | float):
        return "–"
    return decimal(int(n))


__all__ = ["size_text"]
