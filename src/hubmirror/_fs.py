"""Checks of files hubmirror reads or writes, giving one clear reason instead of a traceback."""

from __future__ import annotations

import os
from pathlib import Path


def output_problem(path: Path, *, directory: bool = False) -> str | None:
    """Why *path* cannot be created or overwritten as a file (as a directory with *directory*), or None if
    it looks writable.

    Checked before a run does any work, so that a report, metrics or state file that cannot be written
    stops the run at once rather than after the destination was changed. Permission bits are checked with
    `os.access` (which also sees a read-only file system); a path under a regular file is refused for
    everyone, root included.
    """
    if directory:
        if path.is_dir():
            return f"{path} is not writable" if not os.access(path, os.W_OK | os.X_OK) else None
        if path.exists():
            return f"{path} is not a directory"
    elif path.is_dir():
        return f"{path} is a directory"
    for parent in path.parents:
        if parent.is_dir():
            if not os.access(parent, os.W_OK | os.X_OK):
                return f"{parent} is not writable"
            break
        if parent.exists():
            return f"{parent} is not a directory"
        # missing (created later, like mkdir -p) or under a file (found further up): look further up
    if path.exists() and not os.access(path, os.W_OK):
        return f"{path} is not writable"
    return None


def decode_text(data: bytes, name: str) -> str:
    """*data* as UTF-8; else ValueError naming *name* and the line of the first bad byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ValueError(f"{name}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x}, line {line})") from None
