"""Blobs shared between workers (issue 15 item 2): from the command line, with a real PostgreSQL server, the
Hub emulator and a real destination registry. Three workers copy repositories that all share a base layer
(as official images share debian's): the base layer is downloaded once for the whole run and every other
repository gets it by a cross-repository mount, whichever worker copies it."""

from __future__ import annotations

from test_sync_support import _HEAD, Env, has_blob, manifests_of
from test_workers import copied_by, dest_blobs, hold_until_joined, log_of, reports, start_workers, wait_all

from hubmirror.state import State
from hubmirror.testing import images as img
from hubmirror.testing.official import BASES
from hubmirror.testing.postgres import PostgresServer

#: Six repositories whose images all have the debian base layer (`repository_indexes` picks a repository's
#: base by its name).
NAMES = [n for n in (f"s{i}" for i in range(1, 40)) if BASES[sum(map(ord, n)) % len(BASES)] == "debian"][:6]
BASE = img.base_layer("debian", 4096).digest


def shared_library() -> dict[str, str]:
    """The NAMES repositories, each with two entries of two platforms (own layers, one base for all)."""
    files = {"pyish": "", "tiny": ""}
    for r, name in enumerate(NAMES, 1):
        text = _HEAD.format(name=name) + f"GitCommit: {r:040x}\n"
        for i in (2, 1):
            text += f"\nTags: {i}.0, {i}\nArchitectures: amd64, arm64v8\nDirectory: {i}\n"
        files[name] = text
    return files


def test_three_workers_download_a_shared_base_layer_once(env: Env, postgres: PostgresServer) -> None:
    assert len(NAMES) == 6
    env.commit(shared_library())
    env.seed()
    env.hub.set_delay(3600)  # blob downloads wait until the three have joined: they meet on the base layer
    where = postgres.new_database()

    workers = start_workers(env, where, 3)
    hold_until_joined(env, where, 3, then=0.1)
    codes = wait_all(workers, timeout=240)

    assert codes == [0, 0, 0], [log_of(env, i) for i in range(3)]
    manifests: set[str] = set()
    for name in NAMES:  # every tag right
        indexes = env.indexes(name)
        assert sorted(env.dest_tags(name)) == sorted(indexes)
        for tag, ix in indexes.items():
            assert env.dest_digest(name, tag) == ix.digest, f"{name}:{tag}"
            manifests |= manifests_of(ix)
    assert env.hub.manifest_gets() == len(manifests)  # the minimum: each manifest once, all workers

    pairs = dest_blobs(env, NAMES)
    unique = {blob for _, blob in pairs}
    assert {(name, BASE) for name in NAMES} <= pairs  # every repository has the base layer
    assert all(has_blob(env.dest, f"mirror/{repo}", blob) for repo, blob in pairs)  # every (repo, blob) present
    # Every blob downloaded once in the whole run: the base layer too, though six repositories need it.
    assert env.hub.blob_gets(BASE) == 1
    assert env.hub.blob_gets() == len(unique), {b: env.hub.blob_gets(b) for b in unique if env.hub.blob_gets(b) != 1}
    reps = reports(workers)
    assert len(reps) == 3
    copied = sum(r["totals"]["blobs_copied"] for r in reps)
    mounted = sum(r["totals"]["blobs_mounted"] for r in reps)
    assert copied == len(unique)  # uploaded once to the destination
    assert mounted == len(pairs) - len(unique)  # the other repositories got them by a mount
    shared = {blob for blob in unique if sum(1 for _, b in pairs if b == blob) > 1}
    assert BASE in shared, shared
    by_worker = [set(copied_by(r)) for r in reps]
    assert sum(1 for c in by_worker if c) >= 2, by_worker  # the work was spread
    assert sum(len(c) for c in by_worker) == len(set().union(*by_worker)) == len(NAMES)  # each by one worker
    with State.open(where) as st:
        runs = st.runs()
        assert [r.status for r in runs] == ["completed"]
        assert st.blob_holders(runs[0].id, BASE) == []  # the run's blobs went with it
    for rep in reps:
        assert rep["run"]["workers"] == 3 and rep["run"]["status"] == "completed"
        assert rep["run"]["totals"]["blobs_copied"] == len(unique)
    assert sum(1 for rep in reps if rep["run"]["closer"]) == 1

    # The next run of the three: nothing to pull, nothing to upload.
    env.hub.reset_counts()
    again = start_workers(env, where, 3)
    assert wait_all(again, timeout=240) == [0, 0, 0]
    assert env.hub.manifest_gets() == 0 and env.hub.blob_gets() == 0
    assert sum(r["totals"]["blobs_copied"] + r["totals"]["blobs_mounted"] for r in reports(again)) == 0
