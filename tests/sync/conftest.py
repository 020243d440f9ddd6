"""Fixtures of the sync tests: `env` (a Hub emulator, a destination registry, a library repo, a state file)."""

from test_sync_support import env_fixture  # noqa: F401  (registers the `env` fixture for tests/sync)
