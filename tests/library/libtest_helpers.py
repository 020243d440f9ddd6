"""Helpers for the library tests: small git repositories built with `git`, and locating the history bundle."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from hubmirror.testing.official import make_library_repo

REPO_ROOT = Path(__file__).resolve().parents[2]


def bundle_path() -> Path | None:
    """The official-images history bundle ($HUBMIRROR_LIBRARY_BUNDLE or <repo>/../shared/data/…), or None."""
    env = os.environ.get("HUBMIRROR_LIBRARY_BUNDLE")
    path = Path(env) if env else REPO_ROOT.parent / "shared" / "data" / "official-images-library.bundle"
    return path if path.is_file() else None


def git(cwd: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
        "GIT_CONFIG_GLOBAL": os.devnull,
    }
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


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
