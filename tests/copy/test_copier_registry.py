"""The copier against real registries: the Docker Hub emulator (token auth, CDN redirects, faults) as
source, an htpasswd registry and OCI layouts as destinations, checked with skopeo."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from _auth import PASSWORD, USER
from hubmirror._errors import BudgetExhausted, HubmirrorError, QuotaExceeded
from hubmirror.copy import Copier
from hubmirror.media import Descriptor, Manifest
from hubmirror.platform import Platform
from hubmirror.registry.credentials import Credentials
from hubmirror.registry.options import ClientOptions
from hubmirror.registry.retry import RetryPolicy
from hubmirror.state import State
from hubmirror.store import OCILayoutStore
from hubmirror.store.registry import RegistryStore
from hubmirror.sync.claim import BlobClaims
from hubmirror.testing import layout as oci_layout
from hubmirror.testing.hub import HubEmulator
from hubmirror.testing.images import base_layer, index, manifest_list, push, put
from hubmirror.testing.registry import Registry

FAST_RETRY = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05)
OCI_PLATFORMS = ("linux/amd64", "linux/arm64/v8", "linux/ppc64le", "linux/s390x", "windows/amd64")


def skopeo(*args: str) -> bytes:
    return subprocess.run(["skopeo", "--insecure-policy", *args], check=True, capture_output=True, timeout=180).stdout


def creds(reg: Registry) -> list[str]:
    return ["--tls-verify=false", f"--creds={USER}:{PASSWORD}"]


def _temp_files(root: Path) -> list[Path]:
    return list(root.rglob(".tmp-*"))


def _temp_files_settled(root: Path, wait: float = 15.0) -> list[Path]:
    """Temp files left once file work already handed to threads has ended: a cancelled ``to_thread``
    await leaves its thread running to completion (a staged write then renames its temp file), and
    ``asyncio.run`` waits for those threads before a process exits."""
    deadline = time.monotonic() + wait
    while (left := _temp_files(root)) and time.monotonic() < deadline:
        time.sleep(0.05)  # the threads run on; nothing on this loop is needed for them to finish
    return left


@pytest.fixture
async def hub_store(hub: HubEmulator) -> AsyncIterator[RegistryStore]:
    store = RegistryStore(hub.host, ClientOptions(anonymous=True, retry=FAST_RETRY))
    yield store
    await store.close()


@pytest.fixture
async def auth_store(auth_registry: Registry) -> AsyncIterator[RegistryStore]:
    store = RegistryStore(auth_registry.host, ClientOptions(credentials=Credentials(USER, PASSWORD)))
    yield store
    await store.close()


async def _seed(hub: HubEmulator, kind: str) -> tuple[Manifest, dict[str, Manifest], list[str]]:
    """Push an OCI index (5 platforms incl. Windows, plus attestations) or a Docker manifest list
    (4 platforms) to the emulator as library/app:1.0; (top, children by digest, blob digests).
    The list goes in through hubmirror's own `RegistryStore`, the index over the test pusher's HTTP."""
    if kind == "oci":
        img = await push(hub.upstream, "library/app", index("py", OCI_PLATFORMS), ["1.0"])
    else:
        upstream = RegistryStore(hub.upstream.host)
        try:
            lst = manifest_list("node", ("linux/amd64", "linux/arm/v7", "linux/arm64/v8", "linux/386"))
            img = await put(upstream, "library/app", lst, ["1.0"])
        finally:
            await upstream.close()
    return img.manifest, {c.digest: c.manifest for c in img.children}, img.blob_digests


@pytest.mark.parametrize("kind", ["oci", "docker"])
async def test_multiarch_from_hub_to_auth_registry_and_oci(
    kind: str,
    hub: HubEmulator,
    hub_store: RegistryStore,
    auth_store: RegistryStore,
    auth_registry: Registry,
    repo_name: str,
    tmp_path: Path,
) -> None:
    top, children, blobs = await _seed(hub, kind)
    hub.reset_counts()

    res = await Copier(hub_store, auth_store).copy("library/app", "1.0", repo_name, ["1.0", "1"])
    assert res.digest == res.source_digest == top.digest and res.tags_written == ["1.0", "1"]
    assert res.source_manifest_gets == hub.manifest_gets() == 1 + len(children)
    assert res.blobs_copied == len(blobs)
    assert not hub.cdn_saw_authorization

    ref = f"docker://{auth_registry.host}/{repo_name}:1"
    assert skopeo("inspect", "--raw", *creds(auth_registry), ref) == top.data
    back = tmp_path / "back"
    skopeo("copy", "-q", "--all", "--preserve-digests", "--src-tls-verify=false",
           f"--src-creds={USER}:{PASSWORD}", ref, f"dir:{back}")  # fmt: skip
    assert (back / "manifest.json").read_bytes() == top.data
    for digest, child in children.items():
        assert (back / f"{digest.split(':')[1]}.manifest.json").read_bytes() == child.data
    for blob in blobs:
        assert (back / blob.split(":")[1]).exists()

    # Straight from the Hub into an OCI layout.
    layout = tmp_path / "layout"
    res2 = await Copier(hub_store, OCILayoutStore(layout)).copy("library/app", "1.0", "", ["1.0"])
    assert res2.digest == top.digest
    assert oci_layout.tags(layout) == {"1.0": top.digest} and oci_layout.mislabelled(layout) == []
    assert oci_layout.read_manifest(layout, top.digest) == top.data
    oci_layout.check_complete(layout, top.digest)
    if kind == "oci":  # skopeo 1.9 only resolves OCI-typed entries
        assert skopeo("inspect", "--raw", f"oci:{layout}:1.0") == top.data


async def test_unchanged_image_costs_no_get_and_no_upload(
    hub: HubEmulator, hub_store: RegistryStore, auth_store: RegistryStore, repo_name: str
) -> None:
    img = await push(hub.upstream, "library/redis", index("redis", OCI_PLATFORMS[:3]), ["7"])
    await Copier(hub_store, auth_store).copy("library/redis", "7", repo_name, ["7"])
    hub.reset_counts()
    uploads = auth_store.stats.blob_uploads

    res = await Copier(hub_store, auth_store).copy("library/redis", "7", repo_name, ["7"])

    assert res.up_to_date and res.digest == img.digest and res.tags_written == []
    assert hub.manifest_gets() == 0 and hub.manifest_heads() == 1 and hub.blob_gets() == 0
    assert auth_store.stats.blob_uploads == uploads


async def test_shared_base_layers_read_once(
    hub: HubEmulator, hub_store: RegistryStore, auth_store: RegistryStore, repo_name: str
) -> None:
    base = [base_layer("debian-bookworm", 50_000), base_layer("debian-extra", 30_000)]
    plats = ("linux/amd64", "linux/arm64/v8", "linux/s390x")
    a = await push(hub.upstream, "library/a", index("a", plats, base=base), ["1"])
    b = await push(hub.upstream, "library/b", index("b", plats, base=base), ["1"])
    shared = set(a.blob_digests) & set(b.blob_digests)
    assert {x.digest for x in base} <= shared
    hub.reset_counts()

    copier = Copier(hub_store, auth_store, concurrency=4)
    ra, rb = await asyncio.gather(
        copier.copy("library/a", "1", f"{repo_name}/a", ["1"]), copier.copy("library/b", "1", f"{repo_name}/b", ["1"])
    )

    for d in set(a.blob_digests) | set(b.blob_digests):
        assert hub.cdn_gets(d) == 1, d
    assert ra.blobs_mounted + rb.blobs_mounted == len(shared)
    assert (await auth_store.head_manifest(f"{repo_name}/b", "1")) is not None


class NoMounts(RegistryStore):
    """A destination whose registry refuses cross-repository mounts (answers 202: upload the blob)."""

    async def mount_blob(self, repo: str, desc: Descriptor, from_repo: str) -> bool:
        return False


async def _in_flight(st: State, run: int, digests: list[str]) -> None:
    """Return once one of *digests* is being transferred under a claim (as the state says)."""

    async def claimed() -> bool:
        return any([await st.run(st.blob_in_flight, run, d, now=time.time()) for d in digests])

    async with asyncio.timeout(60):
        while not await claimed():  # noqa: ASYNC110 (the state is polled: no event to wait on)
            await asyncio.sleep(0.05)


@pytest.mark.parametrize("mounts", [True, False])
async def test_copiers_sharing_a_ledger_download_a_shared_blob_once(
    mounts: bool,
    hub: HubEmulator,
    hub_store: RegistryStore,
    auth_registry: Registry,
    repo_name: str,
    tmp_path: Path,
) -> None:
    """Two Copiers (two workers) with a `BlobLedger` on one state: the one that claims a shared base layer
    downloads it; the other waits and mounts it from the first one's repository, or, where the registry
    refuses the mount, downloads it itself."""
    base = [base_layer("debian-bookworm", 50_000)]
    plats = ("linux/amd64", "linux/arm64/v8")
    a = await push(hub.upstream, "library/a", index("a", plats, base=base), ["1"])
    b = await push(hub.upstream, "library/b", index("b", plats, base=base), ["1"])
    shared = set(a.blob_digests) & set(b.blob_digests)
    assert base[0].digest in shared
    hub.reset_counts()
    hub.set_delay(3600)  # downloads held until both copies are under way
    dest_a = RegistryStore(auth_registry.host, ClientOptions(credentials=Credentials(USER, PASSWORD)))
    kind = RegistryStore if mounts else NoMounts
    dest_b = kind(auth_registry.host, ClientOptions(credentials=Credentials(USER, PASSWORD)))
    with State.open(tmp_path / "state.db") as st:
        run, _ = st.join_run("job", [], "a", commit=None, lease=30, now=time.time())
        ledgers = [BlobClaims(st, run, w, lease=30, poll=0.05) for w in ("a", "b")]
        copy_a = asyncio.create_task(
            Copier(hub_store, dest_a, ledger=ledgers[0]).copy("library/a", "1", f"{repo_name}/a", ["1"])
        )
        await _in_flight(st, run, [base[0].digest])  # a claimed the base layer
        copy_b = asyncio.create_task(
            Copier(hub_store, dest_b, ledger=ledgers[1]).copy("library/b", "1", f"{repo_name}/b", ["1"])
        )
        await _in_flight(st, run, sorted(set(b.blob_digests) - shared))  # b is placing its blobs
        hub.set_delay(0)
        ra, rb = await asyncio.wait_for(asyncio.gather(copy_a, copy_b), 120)
        holders = st.blob_holders(run, base[0].digest)
    for repo, pushed in ((f"{repo_name}/a", a), (f"{repo_name}/b", b)):
        for d in pushed.blob_digests:
            assert await dest_a.has_blob(repo, Descriptor("application/octet-stream", d, 0)), (repo, d)
    await dest_a.close()
    await dest_b.close()

    assert hub.cdn_gets(base[0].digest) == (1 if mounts else 2)
    for d in set(a.blob_digests) ^ set(b.blob_digests):
        assert hub.cdn_gets(d) == 1, d
    assert ra.blobs_copied == len(a.blob_digests) and ra.blobs_mounted == 0
    assert rb.blobs_mounted == (len(shared) if mounts else 0)
    assert rb.blobs_copied == len(b.blob_digests) - rb.blobs_mounted
    assert holders == [f"{repo_name}/a", f"{repo_name}/b"]
    for repo, pushed in ((f"{repo_name}/a", a), (f"{repo_name}/b", b)):
        ref = f"docker://{auth_registry.host}/{repo}:1"
        assert skopeo("inspect", "--raw", *creds(auth_registry), ref) == pushed.manifest.data


async def test_faults_on_source_are_survived_and_content_verified(
    hub: HubEmulator, hub_store: RegistryStore, auth_store: RegistryStore, auth_registry: Registry, repo_name: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    img = await push(hub.upstream, "library/flaky", index("flaky", OCI_PLATFORMS[:4], layers=(9000,) * 6), ["x"])
    hub.reset_counts()
    hub.set_faults(0.10, seed=7)  # resets, truncations, flipped bytes and 500s on manifests and blobs

    res = await Copier(hub_store, auth_store).copy("library/flaky", "x", repo_name, ["x"])
    hub.set_faults(0)

    assert res.digest == img.digest
    extra_gets = (hub.cdn_gets() - len(img.blob_digests)) + (hub.manifest_gets() - 1 - len(img.children))
    assert extra_gets >= 3  # faults really happened and were retried
    ref = f"docker://{auth_registry.host}/{repo_name}:x"
    back = tmp_path / "back"  # skopeo verifies every digest it copies
    skopeo("copy", "-q", "--all", "--preserve-digests", "--src-tls-verify=false",
           f"--src-creds={USER}:{PASSWORD}", ref, f"dir:{back}")  # fmt: skip
    assert (back / "manifest.json").read_bytes() == img.manifest.data
    assert {p.name for p in back.iterdir()} >= {d.split(":")[1] for d in img.blob_digests}


async def test_persistent_fault_fails_without_tag(
    hub: HubEmulator, hub_store: RegistryStore, auth_store: RegistryStore, repo_name: str, tmp_path: Path
) -> None:
    img = await push(hub.upstream, "library/broken", index("broken", OCI_PLATFORMS[:3]), ["x"])
    bad = img.images[1].layers[-1].digest
    hub.fail_always(f"/blobs/{bad}")

    with pytest.raises(HubmirrorError) as err:
        await Copier(hub_store, auth_store).copy("library/broken", "x", repo_name, ["x"])
    assert bad in str(err.value)
    assert await auth_store.head_manifest(repo_name, "x") is None
    assert await auth_store.list_tags(repo_name) == []

    oci = OCILayoutStore(tmp_path)
    with pytest.raises(HubmirrorError):
        await Copier(hub_store, oci).copy("library/broken", "x", "", ["x"])
    assert await oci.list_tags("") == []
    assert _temp_files_settled(tmp_path) == []  # interrupted uploads left nothing behind


async def test_one_index_reached_by_two_copies_is_fetched_once(
    hub: HubEmulator, hub_store: RegistryStore, auth_store: RegistryStore, repo_name: str
) -> None:
    """The same digest through two tag groups (an entry's and a SharedTag group's), at once or one after
    the other in a run: one GET of the index, one of each child."""
    img = await push(hub.upstream, "library/s", index("s", OCI_PLATFORMS[:3]), ["1.0", "latest"])
    hub.reset_counts()
    copier = Copier(hub_store, auth_store)
    await asyncio.gather(
        copier.copy("library/s", img.digest, repo_name, ["1.0"], platforms=None),
        copier.copy("library/s", img.digest, repo_name, ["latest"], platforms=None),
    )
    await copier.copy("library/s", img.digest, repo_name, ["1"], platforms=[Platform.parse("linux/amd64")])
    gets = [r.ref for r in hub.records if r.method == "GET" and r.kind == "manifest" and r.status == 200]
    assert sorted(gets) == sorted([img.digest, *(c.digest for c in img.children)])
    fetched = copier.fetched_index("library/s", img.digest)
    assert fetched is not None and fetched.data == img.manifest.data


async def test_quota_exceeded_aborts_without_tags(
    hub: HubEmulator, hub_store: RegistryStore, auth_store: RegistryStore, repo_name: str
) -> None:
    await push(hub.upstream, "library/q", index("q", OCI_PLATFORMS[:3]), ["x"])
    hub.set_limit(100, remaining=3)
    with pytest.raises(QuotaExceeded):
        await Copier(hub_store, auth_store).copy("library/q", "x", repo_name, ["x"])
    assert await auth_store.list_tags(repo_name) == []


class Gate:
    """A `PullGate` granting *n* pulls."""

    def __init__(self, n: int) -> None:
        self.left = n

    async def acquire(self, n: int = 1) -> None:
        if self.left < n:
            raise BudgetExhausted("pull budget spent")
        self.left -= n


async def test_the_source_store_asks_its_pull_gate_before_every_manifest_get(
    hub: HubEmulator, auth_store: RegistryStore, repo_name: str, tmp_path: Path
) -> None:
    img = await push(hub.upstream, "library/g", index("g", OCI_PLATFORMS[:3]), ["1"])
    hub.reset_counts()
    short = RegistryStore(hub.host, ClientOptions(anonymous=True, retry=FAST_RETRY), pull_gate=Gate(3))
    try:
        with pytest.raises(BudgetExhausted):
            await Copier(short, auth_store).copy("library/g", "1", repo_name, ["1"])
    finally:
        await short.close()
    assert hub.manifest_gets() == 3  # what the gate granted, not one more
    assert await auth_store.list_tags(repo_name) == []

    gate = Gate(100)
    store = RegistryStore(hub.host, ClientOptions(anonymous=True, retry=FAST_RETRY), pull_gate=gate)
    try:
        res = await Copier(store, OCILayoutStore(tmp_path / "dst")).copy("library/g", "1", "", ["1"])
        assert 100 - gate.left == res.source_manifest_gets == 1 + len(img.children)
        # A HEAD answered without a digest falls back to GET: that is a pull too.
        hub.send_head_digest(False)
        hub.reset_counts()
        assert (await store.head_manifest("library/g", "1")) == img.manifest.descriptor()
        assert hub.manifest_gets() == 1 and 100 - gate.left == res.source_manifest_gets + 1
    finally:
        await store.close()
    assert skopeo("inspect", "--raw", f"oci:{tmp_path / 'dst'}:1") == img.manifest.data


async def test_platform_filter_on_registry(
    hub: HubEmulator, hub_store: RegistryStore, auth_store: RegistryStore, auth_registry: Registry, repo_name: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    img = await push(hub.upstream, "library/f", index("f", OCI_PLATFORMS), ["1"])
    wanted = [Platform.parse("linux/arm64"), Platform.parse("windows/amd64")]
    res = await Copier(hub_store, auth_store, platforms=wanted).copy("library/f", "1", repo_name, ["1"])

    assert res.filtered and res.source_digest == img.digest
    raw = skopeo("inspect", "--raw", *creds(auth_registry), f"docker://{auth_registry.host}/{repo_name}:1")
    got = json.loads(raw)
    keep = {img.image("linux/arm64").digest, img.image("windows/amd64").digest}
    assert [m["digest"] for m in got["manifests"][:2]] == [c.digest for c in img.images if c.digest in keep]
    assert {m["annotations"]["vnd.docker.reference.digest"] for m in got["manifests"][2:]} == keep
    assert len(got["manifests"]) == 4
    skopeo("copy", "-q", "--all", "--preserve-digests", "--src-tls-verify=false", f"--src-creds={USER}:{PASSWORD}",
           f"docker://{auth_registry.host}/{repo_name}:1", f"dir:{tmp_path / 'back'}")  # fmt: skip
    assert (tmp_path / "back" / "manifest.json").read_bytes() == raw
    hub.reset_counts()
    again = await Copier(hub_store, auth_store, platforms=wanted).copy("library/f", "1", repo_name, ["1"])
    assert again.up_to_date and hub.manifest_gets() == 0


async def test_foreign_layers_not_downloaded(
    hub: HubEmulator, hub_store: RegistryStore, auth_store: RegistryStore, repo_name: str
) -> None:
    img = await push(
        hub.upstream,
        "library/win",
        manifest_list("win", ("windows/amd64", "linux/amd64"), foreign_windows=True),
        ["ltsc"],
    )
    foreign = [layer.digest for c in img.images for layer in c.layers if layer.is_foreign]
    assert foreign
    hub.reset_counts()
    res = await Copier(hub_store, auth_store).copy("library/win", "ltsc", repo_name, ["ltsc"])
    assert res.foreign_layers == foreign and res.digest == img.digest
    assert all(hub.blob_gets(d) == 0 for d in foreign)
