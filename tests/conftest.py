"""Fixtures shared by all tests: real registries on loopback, started once per session or per test."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from _auth import PASSWORD, USER
from hubmirror._errors import HubmirrorError
from hubmirror.testing.containerd import Containerd, start_containerd
from hubmirror.testing.hub import HubEmulator
from hubmirror.testing.postgres import PostgresServer, start_postgres
from hubmirror.testing.postgres import available as postgres_available
from hubmirror.testing.registry import Registry, start_registry

__all__ = ["PASSWORD", "USER"]


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """One plain-HTTP registry without auth, shared by the session; use `repo_name` for isolation."""
    reg = start_registry(tmp_path_factory.mktemp("registry"))
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """One registry with htpasswd (Basic) auth, user `USER` / `PASSWORD`."""
    reg = start_registry(tmp_path_factory.mktemp("auth-registry"), username=USER, password=PASSWORD)
    yield reg
    reg.stop()


@pytest.fixture
def make_registry(tmp_path: Path) -> Iterator[Callable[..., Registry]]:
    """Start fresh registries for one test (stopped at its end)."""
    started: list[Registry] = []
    counter = itertools.count()

    def make(**kwargs: object) -> Registry:
        reg = start_registry(tmp_path / f"registry-{next(counter)}", **kwargs)  # type: ignore[arg-type]
        started.append(reg)
        return reg

    yield make
    for reg in started:
        reg.stop()


@pytest.fixture
def repo_name() -> str:
    """A repository name no other test uses."""
    return f"test/{uuid.uuid4().hex[:10]}"


# -- Docker Hub emulator (hubmirror.testing.hub) ------------------------------------------------------


@pytest.fixture
def hub(make_registry: Callable[..., Registry]) -> Iterator[HubEmulator]:
    """A Docker Hub emulator in front of a fresh registry (counters and quota are this test's own).

    Anonymous pulls, plus user `USER` / `PASSWORD` on the token endpoint; quota 100 per 6 h. Seed
    content with ``hubmirror.testing.images.push_sync(hub.upstream, "library/x", index(...), ["tag"])``.
    """
    with HubEmulator(make_registry(), users={USER: PASSWORD}) as emulator:
        yield emulator


# -- PostgreSQL (hubmirror.testing.postgres) ------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A real PostgreSQL server for the session (one per xdist worker); `PostgresServer.new_database` gives
    each test its own database. Skips where PostgreSQL cannot run, except in CI (``CI`` set), where the
    install step provides it and a skip would hide the PostgreSQL backend's tests."""
    why = postgres_available()
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    with start_postgres(tmp_path_factory.mktemp("postgres")) as server:
        yield server


# -- containerd (hubmirror.testing.containerd) ---------------------------------------------------------


@pytest.fixture(scope="session")
def containerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Containerd]:
    """A private containerd daemon for the session (own root, state and socket); `Containerd.ctr` runs
    ctr against it. Skips the test, with the reason, when containerd cannot start here."""
    if shutil.which("containerd") is None or shutil.which("ctr") is None:
        pytest.skip("containerd/ctr are not installed (scripts/install installs Debian's containerd)")
    with contextlib.ExitStack() as stack:
        try:
            daemon = stack.enter_context(start_containerd(tmp_path_factory.mktemp("containerd")))
        except HubmirrorError as e:
            pytest.skip(f"containerd cannot run here: {e}")
        yield daemon
