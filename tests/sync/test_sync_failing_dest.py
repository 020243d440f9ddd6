"""A destination that fails every write must not burn the pull quota (issue 14, item 11), from the command
line: the Hub emulator as the source, the malicious registry in front of a real ``docker-registry`` as the
destination, answering 507 (Insufficient Storage, a full disk) to every blob upload.

The run stops pulling after the destination failed the same way a few times, says so in one line, and
keeps what it fetched; the run after it (the destination still full) pulls nothing again, and once the
destination takes writes, every manifest has been pulled once in all.
"""

from __future__ import annotations

import errno
import subprocess
from collections import Counter
from collections.abc import Iterator

import pytest
from test_sync_support import NAMESPACE, Env, env_fixture, many_library  # noqa: F401  (the `env` fixture)

from _auth import PASSWORD, USER
from hubmirror._errors import AuthError, NotFound, RegistryError, StoreError
from hubmirror.state import State
from hubmirror.testing.malicious import MaliciousRegistry

ENTRIES = 12
#: `hubmirror.sync.breaker.FAILURE_LIMIT`: failures of one kind in a row that stop the pulls.
FAILURE_LIMIT = 3


def uploads(method: str, path: str) -> bool:
    """Blob uploads (start, chunks, commit): what a full disk refuses."""
    return method in ("POST", "PATCH", "PUT") and "/blobs/uploads" in path


@pytest.fixture
def full(env: Env) -> Iterator[MaliciousRegistry]:
    with MaliciousRegistry(env.make_registry(), users={USER: PASSWORD}, allow_push=True) as dest:
        dest.fail_always(uploads, 507)
        yield dest


def run(env: Env, dest: MaliciousRegistry, *args: str) -> subprocess.CompletedProcess[str]:
    port = dest.host.rsplit(":", 1)[1]
    creds = {f"HUBMIRROR_127_0_0_1_{port}_USERNAME": USER, f"HUBMIRROR_127_0_0_1_{port}_PASSWORD": PASSWORD}
    return subprocess.run(
        env.cli_args("--images", "many", "--concurrency", "2", *args, dest=f"{dest.host}/{NAMESPACE}"),
        capture_output=True,
        text=True,
        env=env.cli_env(creds),
        timeout=120,
        check=False,
    )


def pulls(env: Env) -> list[str]:
    """The digests of every manifest GET the emulator served (what Docker Hub counts), in order."""
    return [r.ref for r in env.hub.records if r.method == "GET" and r.kind == "manifest" and r.status == 200]


def test_a_full_destination_stops_the_pulls_and_the_next_runs_pull_nothing_twice(
    env: Env, full: MaliciousRegistry
) -> None:
    env.commit(many_library(ENTRIES))
    env.seed(repos=["many"])
    manifests = {d for ix in env.indexes("many").values() for d in (ix.digest, *(c.digest for c in ix.children))}
    assert len(manifests) == ENTRIES * 5  # an index, 2 images, 2 attestations each

    first = run(env, full)

    assert first.returncode == 1, first.stderr
    assert "Traceback" not in first.stderr
    [line] = [ln for ln in first.stderr.splitlines() if "failing" in ln and ln.startswith("error:")]
    spent = len(pulls(env))
    assert f"destination {full.host}/{NAMESPACE} failing:" in line and "507" in line, line
    assert f"stopped after {FAILURE_LIMIT} failures, {spent} pulls spent, nothing more pulled" in line, line
    # The items in flight when it stopped (--concurrency 2), not the 60 manifests of all 12.
    assert spent <= (FAILURE_LIMIT + 2) * 5, spent
    with State.open(env.state_path) as state:
        assert state.tags() == []  # nothing stored, nothing recorded
        assert len(state.deferred()) == ENTRIES  # every image taken first by the next run
        assert all(state.kept_manifest(d) is not None for d in set(pulls(env)))  # fetched, not stored: kept

    still_full = run(env, full)

    assert still_full.returncode == 1, still_full.stderr
    again = pulls(env)[spent:]
    assert set(again).isdisjoint(pulls(env)[:spent]), "the run after it pulled again what the first one fetched"
    assert len(again) <= (FAILURE_LIMIT + 2) * 5, len(again)  # it stopped early too

    full.fail_always(None)  # room again
    done = run(env, full)

    assert done.returncode == 0, done.stderr
    fetched = Counter(pulls(env))
    assert set(fetched) == manifests
    assert max(fetched.values()) == 1, [d for d, n in fetched.items() if n > 1]  # no pull spent twice
    with State.open(env.state_path) as state:
        assert len(state.tags()) == ENTRIES * 2 and state.deferred() == []
        assert all(state.kept_manifest(d) is None for d in manifests)  # done: nothing kept any more


def test_the_same_failure_in_a_row_trips_once_and_other_failures_do_not() -> None:
    """What counts as "the destination failing the same way": full disks, 5xx, refused credentials, an
    unreachable registry; not a missing manifest or one bad image."""
    from hubmirror.sync import breaker as b
    from hubmirror.sync.breaker import DestinationBreaker, Tripped, failure_kind

    assert b.FAILURE_LIMIT == FAILURE_LIMIT
    full = StoreError("oci:/srv/mirror: cannot write")
    full.__context__ = OSError(errno.ENOSPC, "No space left on device")
    assert failure_kind(full) == "ENOSPC"
    assert failure_kind(OSError(errno.EDQUOT, "Disk quota exceeded")) == "EDQUOT"
    assert failure_kind(RegistryError("x", status=507)) == "HTTP 507"
    assert failure_kind(RegistryError("x", status=503)) == "HTTP 503"
    assert failure_kind(AuthError("x", status=401)) == "auth 401"
    assert failure_kind(RegistryError("x", status=None)) == "unreachable"
    assert failure_kind(NotFound("x", status=404)) is None
    assert failure_kind(RegistryError("manifest invalid", status=400)) is None

    trips: list[Tripped] = []
    breaker = DestinationBreaker(trips.append, limit=3)
    breaker.failed(RegistryError("a", status=500))
    breaker.failed(RegistryError("b", status=500))
    breaker.wrote()  # a write went through: not "in a row"
    breaker.failed(RegistryError("c", status=500))
    breaker.failed(full)
    breaker.failed(RegistryError("d", status=404))  # says nothing of the destination as a whole
    breaker.failed(full)
    assert trips == []
    breaker.failed(full)
    breaker.failed(full)
    assert trips == [Tripped("ENOSPC", str(full), 3)]
