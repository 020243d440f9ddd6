"""kill -9 at random moments of ``hubmirror sync`` (issue 8: reliability suite, findings 7 and the crash
half of 6), into a registry and into an OCI layout.

The library has official-image shapes (8 platforms, an attestation manifest each). Twenty runs of the
same sync are each killed with SIGKILL at a random moment: when the destination holds a random number
of the objects the sync will store (drawn from a seeded RNG, so a failure can be replayed with the
same ``HUBMIRROR_KILL_SEED``), plus a random few milliseconds, so kills land between and inside blob
writes. All the while a sampler thread checks that no destination tag ever points at a partial image
(the tagged manifest, every child manifest and every blob stored). A final run must then succeed and
leave the state equal to the destination (every recorded tag present with its recorded digest, and no
other) and no temporary files.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TypeVar

import pytest
from test_sync_support import NAMESPACE, Env, blob_files, get_manifest, has_blob, head_digest, list_tags, many_library

from hubmirror.digest import sha256
from hubmirror.state import State
from hubmirror.testing import layout as oci

KILLS = 20
SEED = int(os.environ.get("HUBMIRROR_KILL_SEED", "20261130"))
ENTRIES = 3
ARCHES = "amd64, arm32v5, arm32v7, arm64v8, i386, mips64le, ppc64le, s390x"
REPO = "many"
T = TypeVar("T")


@dataclass
class Destination:
    """What the sampler and the kill schedule look at: a registry or an OCI layout root."""

    arg: str  # --dest
    tags: Callable[[], dict[str, str]]  # tag -> digest of the synced repository
    check: Callable[[str, set[str]], None]  # assert a digest is complete (memo of complete digests)
    stored: Callable[[], int]  # objects (blobs and manifests) stored so far
    temp_files: Callable[[], list[Path]]


def _settled_read(read: Callable[[], T]) -> T:
    """*read* of the registry, tried again on a 5xx: Distribution's filesystem driver rewrites a link
    file in place, so a read racing a write can get an empty link (500). Not a partial image."""
    for attempt in range(5):
        try:
            return read()
        except urllib.error.HTTPError as e:
            if e.code < 500 or attempt == 4:
                raise
            time.sleep(0.05)  # let the registry finish its write
    raise AssertionError("unreachable")


def registry_destination(env: Env) -> Destination:
    repo = f"{NAMESPACE}/{REPO}"

    def tags() -> dict[str, str]:
        out = {}
        for tag in _settled_read(lambda: list_tags(env.dest, repo)):
            try:
                out[tag] = sha256(_settled_read(partial(get_manifest, env.dest, repo, tag)))
            except urllib.error.HTTPError as e:
                # Distribution lists a tag's directory a moment before its link is written: until
                # then the tag does not resolve at all, which is no partial image.
                if e.code != 404:
                    raise
        return out

    def check(digest: str, complete: set[str]) -> None:
        if digest in complete:
            return
        stored = _settled_read(lambda: head_digest(env.dest, repo, digest))
        assert stored == digest, f"{repo}@{digest} is not stored"
        m = json.loads(_settled_read(lambda: get_manifest(env.dest, repo, digest)))
        for child in m.get("manifests", []):
            check(child["digest"], complete)
        for blob in [m["config"], *m["layers"]] if "config" in m else []:
            present = _settled_read(partial(has_blob, env.dest, repo, blob["digest"]))
            assert present, f"{repo}@{digest} lacks blob {blob['digest']}"
        complete.add(digest)

    return Destination(env.dest_prefix, tags, check, lambda: blob_files(env.dest), lambda: [])


def layout_destination(env: Env) -> Destination:
    root = env.root / "oci"
    lay = root / REPO

    def stored() -> int:
        d = lay / "blobs" / "sha256"
        try:
            return sum(1 for e in os.scandir(d) if not e.name.startswith("."))
        except FileNotFoundError:
            return 0

    return Destination(
        f"oci:{root}",
        lambda: oci.tags(lay),
        lambda digest, complete: oci.check_complete(lay, digest, complete),
        stored,
        lambda: oci.temp_files(root),
    )


@dataclass(eq=False)
class Sampler(threading.Thread):
    """Checks, over and over until stopped, that every tag of the destination resolves to a complete image."""

    dest: Destination
    violations: list[str] = field(default_factory=list)
    rounds: int = 0
    _halt: threading.Event = field(default_factory=threading.Event)
    _complete: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        super().__init__(daemon=True)

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                for tag, digest in self.dest.tags().items():
                    try:
                        self.dest.check(digest, self._complete)
                    except AssertionError as e:
                        self.violations.append(f"tag {tag} -> {digest}: {e}")
            except Exception as e:  # reported by the test, not lost in the thread
                self.violations.append(f"sampler: {type(e).__name__}: {e}")
            self.rounds += 1
            time.sleep(0.02)  # let the sync run; the sampler is not a timing assumption

    def stop(self) -> None:
        self._halt.set()
        self.join(60)


def seeded_tags(seeded: dict[str, str]) -> dict[str, str]:
    """tag → digest of repository `REPO`, from `Env.seed`'s ``repo:tag`` → digest."""
    return {key.partition(":")[2]: digest for key, digest in seeded.items() if key.partition(":")[0] == REPO}


def expected_objects(env: Env) -> int:
    """How many blobs and manifests the sync stores (one repository, so registry and layout agree)."""
    digests: set[str] = set()
    for ix in env.indexes(REPO).values():
        digests |= {ix.digest, *(c.digest for c in ix.children), *ix.blob_digests}
    return len(digests)


def run_and_kill(env: Env, dest: Destination, target: int, extra_delay: float) -> tuple[int | None, int]:
    """Start the sync; kill -9 it once the destination holds *target* objects (plus *extra_delay* s).
    Returns (exit code if it ended by itself else None, objects stored when it was killed)."""
    proc = subprocess.Popen(
        env.cli_args("--images", REPO, dest=dest.arg),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env.cli_env(),
    )
    try:
        deadline = time.monotonic() + 120
        while dest.stored() < target and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)  # a poll of the destination's storage, not a timing assumption
        time.sleep(extra_delay)
        if proc.poll() is not None:
            assert proc.returncode == 0, proc.stderr.read().decode() if proc.stderr else ""
            return proc.returncode, dest.stored()
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        return None, dest.stored()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


@pytest.mark.parametrize("kind", ["registry", "oci"])
def test_kill_9_at_20_random_moments_never_exposes_a_partial_image(env: Env, kind: str) -> None:
    env.commit(many_library(ENTRIES, ARCHES))
    seeded = env.seed(repos=[REPO])
    dest = registry_destination(env) if kind == "registry" else layout_destination(env)
    total = expected_objects(env)
    rng = random.Random(f"{SEED}/{kind}")
    targets = sorted(rng.sample(range(1, int(total * 0.8)), KILLS))

    sampler = Sampler(dest)
    sampler.start()
    kills, stored = 0, 0
    try:
        for target in targets:
            ended, stored = run_and_kill(env, dest, max(target, stored + 1), rng.uniform(0, 0.02))
            kills += ended is None
        final = env.cli("--images", REPO, dest=dest.arg)
    finally:
        sampler.stop()

    assert sampler.violations == [], "\n".join(sampler.violations[:20])
    assert sampler.rounds > KILLS
    assert kills == KILLS, f"only {kills} of {KILLS} runs were killed before they finished ({stored}/{total} stored)"
    assert final.returncode == 0, final.stderr

    # The state equals the destination, which is what was seeded.
    dest_tags = dest.tags()
    with State.open(env.state_path) as state:
        recorded = {r.tag: r.dest_digest for r in state.tags() if r.dest_repo.endswith(f"/{REPO}")}
    assert recorded == dest_tags
    assert dest_tags == seeded_tags(seeded)
    complete: set[str] = set()
    for digest in set(dest_tags.values()):
        dest.check(digest, complete)
    assert dest.temp_files() == []


def test_kill_9_while_writing_blobs_into_an_oci_layout_leaves_no_temp_files_after_the_next_run(env: Env) -> None:
    """Finding 7: each of three runs is killed while it has a blob's temp file open in the layout;
    the next (successful) run removes them all, and every tag is complete."""
    env.commit(many_library(4))
    seeded = env.seed(repos=[REPO], layer_size=3 << 20)
    root = env.root / "oci"
    args = env.cli_args("--images", REPO, dest=f"oci:{root}")

    left_behind = 0
    for _ in range(3):
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env.cli_env())
        try:
            deadline = time.monotonic() + 60
            while not oci.temp_files(root) and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.001)  # a poll of the layout, not a timing assumption
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        left_behind = max(left_behind, len(oci.temp_files(root)))
    assert left_behind > 0, "no run was caught writing a blob: make the layers bigger"

    rerun = env.cli("--images", REPO, dest=f"oci:{root}")

    assert rerun.returncode == 0, rerun.stderr
    assert oci.temp_files(root) == []
    tags = oci.tags(root / REPO)
    assert tags == seeded_tags(seeded)
    for digest in set(tags.values()):
        oci.check_complete(root / REPO, digest)
