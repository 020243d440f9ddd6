"""Fixtures for the library tests: small git repositories built with `git`, and the real history bundle."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from libtest_helpers import LibRepo, bundle_path

from hubmirror.library import LibrarySource


@pytest.fixture
def make_lib_repo(tmp_path: Path) -> Callable[[str], LibRepo]:
    def make(name: str = "oi") -> LibRepo:
        return LibRepo(tmp_path / name)

    return make


@pytest.fixture(scope="session")
def history_bundle() -> Path:
    path = bundle_path()
    if path is None:
        pytest.skip("official-images history bundle not available (set HUBMIRROR_LIBRARY_BUNDLE)")
    return path


@pytest.fixture(scope="session")
def history(history_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> LibrarySource:
    """The bundle opened as a LibrarySource (cloned once per session into a temporary cache)."""
    return asyncio.run(LibrarySource.open(str(history_bundle), tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def history_git_dir(history: LibrarySource) -> Path:
    return history.git_dir
