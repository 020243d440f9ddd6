"""Fixtures of the reliability suite: the sync tests' `env` (Hub emulator, destination registry, library
repository, state file) from tests/sync/test_sync_support.py."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "sync"))

from test_sync_support import env_fixture  # noqa: F401  (registers the `env` fixture here)
