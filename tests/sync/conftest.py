"""Fixtures of the sync tests: `env` (a Hub emulator, a destination registry, a library repo, a state file) and
`where` (a new state of each backend)."""

from pathlib import Path

import pytest
from test_sync_support import env_fixture  # noqa: F401  (registers the `env` fixture for tests/sync)

from hubmirror.testing.postgres import PostgresServer


@pytest.fixture(params=["sqlite", "postgresql"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, empty state of each backend: a SQLite file (in a folder yet to be made), or a database on the
    tests' PostgreSQL server."""
    if request.param == "sqlite":
        return str(tmp_path / "nested" / "state.db")
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.new_database()
