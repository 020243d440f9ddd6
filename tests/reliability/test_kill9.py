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

import asyncio
import json
import os
import random
import signal
import sqlite3
import subprocess
import threading
import time
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TypeVar

import pytest
from aiohttp import web
from test_sync_support import NAMESPACE, Env, blob_files, get_manifest, has_blob, head_digest, list_tags, many_library

from _auth import PASSWORD, USER
from hubmirror.digest import is_digest, sha256
from hubmirror.state import State
from hubmirror.testing import images as img
from hubmirror.testing import layout as oci
from hubmirror.testing.hub import _classify
from hubmirror.testing.malicious import MaliciousRegistry

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

    # The state equals the destination, which is what was seeded; every tag is hubmirror's (none was pushed
    # by a killed run and then adopted as foreign by the next), and no push is left unsettled.
    dest_tags = dest.tags()
    with State.open(env.state_path) as state:
        records = [r for r in state.tags() if r.dest_repo.endswith(f"/{REPO}")]
        assert state.intents() == []
    recorded = {r.tag: r.dest_digest for r in records}
    assert recorded == dest_tags
    assert [r.tag for r in records if not r.created_by_hubmirror] == []
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


# -- a kill between a tag's push and its record (issue 14, item 4) ----------------------------------------


class TagPutHold(MaliciousRegistry):
    """A destination registry that stores each tag PUT at once but holds its answer while `holding`: the
    client has pushed the tag and not yet heard so, the moment a crash must not separate push and record."""

    def __init__(self, *args: object, only: Callable[[str], bool] = lambda _tag: True, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.holding = True
        self.only = only  # the tags whose PUT is held
        self.held: list[str] = []  # tags stored whose answer is being held

    async def _forward(self, request: web.Request) -> tuple[int, dict[str, str], bytes]:
        out = await super()._forward(request)
        kind, _, ref = _classify(request.path)
        held = self.holding and self.only(ref)
        if request.method == "PUT" and kind == "manifest" and not is_digest(ref) and out[0] < 300 and held:
            with self._lock:
                self.held.append(ref)
            for _ in range(600):  # until released (or 30 s: a client that never died is the test's failure)
                if not self.holding:
                    break
                await asyncio.sleep(0.05)
        return out


def unrecorded(state_path: Path, dest_tags: dict[str, str]) -> list[str]:
    """Destination tags of `REPO` the state file knows nothing of: neither a record nor a push it began
    (read as SQLite, as any reader of the file would)."""
    conn = sqlite3.connect(state_path)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        known = set(conn.execute("SELECT dest_repo, tag, dest_digest FROM tags"))
        if "tag_intents" in tables:
            known |= set(conn.execute("SELECT dest_repo, tag, dest_digest FROM tag_intents"))
    finally:
        conn.close()
    mine = {(t, d) for repo, t, d in known if repo.endswith(f"/{REPO}")}
    return sorted(t for t, d in dest_tags.items() if (t, d) not in mine)


def test_kill_9_between_a_tag_push_and_its_record_leaves_the_tag_hubmirrors_and_prunable(env: Env) -> None:
    """The destination has stored a tag, the sync has not heard back: kill -9. The state knows the push (an
    intent); the next run records the tag as hubmirror's, so prune deletes it once it leaves the selection
    (before the fix it was adopted as foreign and kept for ever)."""
    env.commit(many_library(2))
    seeded = seeded_tags(env.seed(repos=[REPO]))
    with TagPutHold(env.make_registry(), users={USER: PASSWORD}, allow_push=True) as dest:
        port = dest.host.rsplit(":", 1)[1]
        creds = {f"HUBMIRROR_127_0_0_1_{port}_USERNAME": USER, f"HUBMIRROR_127_0_0_1_{port}_PASSWORD": PASSWORD}
        args = env.cli_args("--images", REPO, "--concurrency", "1", dest=f"{dest.host}/{NAMESPACE}")
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env.cli_env(creds))
        try:
            deadline = time.monotonic() + 60
            while not dest.held and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)  # a poll of the destination, not a timing assumption
            assert dest.held, proc.stderr.read().decode() if proc.poll() is not None and proc.stderr else "no tag PUT"
            tag = dest.held[0]
            assert head_digest(dest.upstream, f"{NAMESPACE}/{REPO}", tag) == seeded[tag]  # pushed
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        finally:
            dest.holding = False
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stderr:
                proc.stderr.close()

        def dest_tags() -> dict[str, str]:
            repo = f"{NAMESPACE}/{REPO}"
            return {t: sha256(get_manifest(dest.upstream, repo, t)) for t in list_tags(dest.upstream, repo)}

        assert tag in dest_tags()
        assert unrecorded(env.state_path, dest_tags()) == [], "a pushed tag the state does not know"

        final = subprocess.run(args, capture_output=True, text=True, env=env.cli_env(creds), timeout=120, check=False)
        assert final.returncode == 0, final.stderr
        with State.open(env.state_path) as state:
            records = {r.tag: r for r in state.tags() if r.dest_repo.endswith(f"/{REPO}")}
            assert state.intents() == []
        assert {t: r.dest_digest for t, r in records.items()} == dest_tags() == seeded
        assert all(r.created_by_hubmirror for r in records.values()), [t for t, r in records.items()]

        # The tag whose record the kill cut off leaves the selection: prune deletes it like any other.
        entry = tag.split(".")[0]
        entry_text = f"\nTags: {entry}.0, {entry}\nArchitectures: amd64, arm64v8\nDirectory: {entry}\n"
        env.commit({REPO: many_library(2)[REPO].replace(entry_text, "")})
        gone = {f"{entry}.0", entry}
        pruned = subprocess.run(
            [*args, "--prune", "--max-delete", "10"],
            capture_output=True,
            text=True,
            env=env.cli_env(creds),
            timeout=120,
            check=False,
        )
        assert pruned.returncode == 0, pruned.stderr
        assert set(dest_tags()) == set(seeded) - gone


def test_a_push_left_unrecorded_is_settled_by_the_next_run(env: Env) -> None:
    """Intents a killed run left: one whose tag holds the intended digest becomes hubmirror's record, one
    whose push never happened (the tag holds something else, or nothing) is dropped."""
    env.commit(many_library(2))
    seeded = seeded_tags(env.seed(repos=[REPO]))
    first = env.cli("--images", REPO)
    assert first.returncode == 0, first.stderr
    key = env.key(REPO)
    with State.open(env.state_path) as state:
        pushed = state.tag(key, "2.0")
        assert pushed is not None
        state.forget_tag(key, "2.0")  # as if the process died between the push and the record
        state.intend_tag(pushed)
        ghost = replace(pushed, tag="3.0", dest_digest=seeded["1.0"])  # begun, never pushed
        state.intend_tag(ghost)
        wrong = replace(pushed, tag="1.0", dest_digest=seeded["2.0"])  # 1.0 holds another digest
        state.intend_tag(wrong)
        assert len(state.intents()) == 3

    again = env.cli("--images", REPO)

    assert again.returncode == 0, again.stderr
    with State.open(env.state_path) as state:
        assert state.intents() == []
        rec = state.tag(key, "2.0")
        assert rec is not None and rec.created_by_hubmirror and rec.dest_digest == seeded["2.0"]
        assert state.tag(key, "3.0") is None
        one = state.tag(key, "1.0")
        assert one is not None and one.dest_digest == seeded["1.0"]
    assert "up to date" in " ".join(again.stderr.split())


def test_kill_9_between_a_signature_tag_push_and_its_record_leaves_it_hubmirrors(env: Env) -> None:
    """The same for the cosign tag that follows an image: pushed, killed before its record, settled by the
    next run as hubmirror's (so it leaves with its image)."""
    env.commit(many_library(1))
    image = seeded_tags(env.seed(repos=[REPO]))["1.0"]
    sig_tag = img.cosign_tag(image)
    img.push_sync(env.hub.upstream, f"library/{REPO}", img.cosign_signature(image), [sig_tag])
    with TagPutHold(
        env.make_registry(), users={USER: PASSWORD}, allow_push=True, only=lambda tag: tag == sig_tag
    ) as dest:
        port = dest.host.rsplit(":", 1)[1]
        creds = {f"HUBMIRROR_127_0_0_1_{port}_USERNAME": USER, f"HUBMIRROR_127_0_0_1_{port}_PASSWORD": PASSWORD}
        args = env.cli_args("--images", REPO, dest=f"{dest.host}/{NAMESPACE}")
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env.cli_env(creds))
        try:
            deadline = time.monotonic() + 60
            while not dest.held and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)  # a poll of the destination, not a timing assumption
            assert dest.held == [sig_tag], proc.poll()
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        finally:
            dest.holding = False
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert sig_tag in list_tags(dest.upstream, f"{NAMESPACE}/{REPO}")

        final = subprocess.run(args, capture_output=True, text=True, env=env.cli_env(creds), timeout=120, check=False)

        assert final.returncode == 0, final.stderr
        with State.open(env.state_path) as state:
            rec = state.tag(f"{dest.host}/{NAMESPACE}/{REPO}", sig_tag)
            assert rec is not None and rec.created_by_hubmirror, rec
            assert state.intents() == []
