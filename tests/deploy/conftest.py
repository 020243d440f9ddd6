"""Fixtures of the deployment tests: the sync tests' `env` (a Hub emulator, a destination registry, a library
repo) for running what a deployment runs, and `as_user`, which runs it as a non-root user."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sync"))

from test_sync_support import env_fixture  # noqa: F401  (registers the `env` fixture here)
