"""Helpers for the library tests: small git repositories built with `git`, and locating the history bundle."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from hubmirror.testing.official import git, make_library_repo

REPO_ROOT = Path(__file__).resolve().parents[2]


def bundle_path() -> Path | None:
    """The official-images history bundle ($HUBMIRROR_LIBRARY_BUNDLE or <repo>/../shared/data/…), or None."""
    env = os.environ.get("HUBMIRROR_LIBRARY_BUNDLE")
    path = Path(env) if env else REPO_ROOT.parent / "shared" / "data" / "official-images-library.bundle"
    return path if path.is_file() else None


class LibRepo:
    """A throw-away official-images-like git repository (branch ``main``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True)
        git(path, "init", "-q", "-b", "main")

    def commit(self, files: dict[str, str | None], message: str = "change") -> str:
        """Write (or delete, for None) ``library/<name>`` files and commit; return the commit id."""
        return make_library_repo(self.path, files, message=message)


def git_dir_cmd(git_dir: Path, *args: str) -> str:
    """Run git against a bare repository (for independent re-counts in tests)."""
    return subprocess.run(["git", "--git-dir", str(git_dir), *args], check=True, capture_output=True, text=True).stdout
