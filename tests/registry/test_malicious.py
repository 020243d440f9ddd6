"""`hubmirror copy` from (and `sync --prune` into) a registry that lies: `hubmirror.testing.malicious`.

Each test runs the command line as a user does and checks one clear line, exit 1, nothing written to
the destination, and no hang (every subprocess has a timeout).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from _auth import PASSWORD, USER
from hubmirror._errors import RegistryError
from hubmirror.digest import verified
from hubmirror.registry.client import RegistryClient
from hubmirror.registry.credentials import Credentials
from hubmirror.testing.images import OCI_MANIFEST, Image, image, push, push_sync
from hubmirror.testing.malicious import ENDLESS_LIMIT, STALL_LIMIT, MaliciousRegistry
from hubmirror.testing.registry import Registry

HUBMIRROR = str(Path(sys.executable).parent / "hubmirror")
LAYER = 1 << 20


@pytest.fixture
def mal(make_registry: Callable[..., Registry]) -> Iterator[MaliciousRegistry]:
    with MaliciousRegistry(make_registry(), users={USER: PASSWORD}) as m:
        yield m


def copy(src: str, dst: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("HUBMIRROR_")}
    full_env.update(env or {})
    return subprocess.run(
        [HUBMIRROR, "copy", src, dst, *args], capture_output=True, text=True, timeout=300, env=full_env, check=False
    )


def seed(mal: MaliciousRegistry, repo: str = "library/app", tag: str = "1") -> Image:
    return push_sync(mal.upstream, repo, image(repo, layers=[LAYER, 4096]), [tag])


def one_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    """The run failed with exit 1 and one error line holding every needle, and no traceback."""
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if all(n in line for n in needles)]
    assert lines, proc.stderr
    return lines[0]


def dest_empty(reg: Registry, repo: str, *blobs: str) -> None:
    """*repo* has no tag in *reg*, and none of *blobs* was stored."""
    try:
        with urllib.request.urlopen(f"{reg.url}/v2/{repo}/tags/list", timeout=30) as r:
            assert not json.load(r).get("tags")
    except urllib.error.HTTPError as e:
        assert e.code == 404
    for digest in blobs:
        req = urllib.request.Request(f"{reg.url}/v2/{repo}/blobs/{digest}", method="HEAD")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=30)
        assert err.value.code == 404


# -- blobs ------------------------------------------------------------------------------------------


def test_source_blob_with_wrong_bytes_is_named_as_the_source_fault(
    mal: MaliciousRegistry, registry: Registry, repo_name: str
) -> None:
    img = seed(mal)
    bad = img.layers[0].digest
    mal.blob_fault(bad, "flip")

    proc = copy(f"{mal.host}/library/app:1", f"{registry.host}/{repo_name}:1")

    line = one_error(proc, f"blob {bad} from {mal.host}/library/app does not match its digest")
    assert "upload" not in line and "Connection" not in line
    dest_empty(registry, repo_name, bad)


def test_endless_source_blob_stops_at_its_size(mal: MaliciousRegistry, registry: Registry, repo_name: str) -> None:
    img = seed(mal)
    bad = img.layers[0].digest
    mal.blob_fault(bad, "endless")

    proc = copy(f"{mal.host}/library/app:1", f"{registry.host}/{repo_name}:1")

    one_error(proc, f"blob {bad} from {mal.host}/library/app", f"more than the expected {LAYER} bytes")
    assert mal.endless_bytes_sent < ENDLESS_LIMIT  # the client hung up, the server did not give up
    dest_empty(registry, repo_name, bad)


@pytest.mark.parametrize("fault", ["truncate", "short"])
def test_truncated_source_blob_fails_naming_the_source(
    mal: MaliciousRegistry, registry: Registry, repo_name: str, fault: str
) -> None:
    img = seed(mal)
    bad = img.layers[0].digest
    mal.blob_fault(bad, fault)  # type: ignore[arg-type]

    proc = copy(f"{mal.host}/library/app:1", f"{registry.host}/{repo_name}:1")

    needle = "download interrupted" if fault == "truncate" else f"expected {LAYER}"
    one_error(proc, bad, mal.host, needle)
    dest_empty(registry, repo_name, bad)


async def test_a_stalled_source_blob_is_resumed_after_the_read_timeout(mal: MaliciousRegistry) -> None:
    """Half of the blob, then silence on an open connection: after the read timeout (aiohttp's sock_read,
    watched per download rather than per chunk) the client closes it and GETs the rest with Range."""
    img = seed(mal)
    layer = img.layers[0]
    mal.blob_fault(layer.digest, "stall")
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=1.0)
    started = time.monotonic()
    async with RegistryClient(mal.host, credentials=Credentials(USER, PASSWORD), timeout=timeout) as c:
        async with c.open_blob("library/app", layer.digest) as chunks:
            data = b"".join([chunk async for chunk in verified(chunks, layer.digest, layer.size)])
        assert c.stats.retries == 1
    # The client gave up on the silent connection itself (the server stays silent for STALL_LIMIT seconds).
    assert time.monotonic() - started < STALL_LIMIT / 2
    assert hashlib.sha256(data).hexdigest() == layer.digest.split(":", 1)[1]
    resumes = [r for r in mal.records if (r.method, r.kind, r.ref, r.status) == ("GET", "blob", layer.digest, 206)]
    assert len(resumes) == 1  # the rest came with Range (the stalled GET is recorded when its handler ends)


async def test_a_stalled_blob_not_to_be_resumed_there_is_read_on_elsewhere_from_the_byte_reached(
    mal: MaliciousRegistry,
) -> None:
    """What a content mirror's download does (`open_blob(resumes=0, stall=…)`): the stall is raised naming the
    byte reached, and `open_blob(offset=…)` reads the rest with Range; the whole verifies."""
    img = seed(mal)
    layer = img.layers[0]
    mal.blob_fault(layer.digest, "stall")
    got = bytearray()
    async with RegistryClient(mal.host, credentials=Credentials(USER, PASSWORD)) as c:
        started = time.monotonic()
        with pytest.raises(RegistryError, match=r"interrupted at byte \d+ \(0 resumes\)"):
            async with c.open_blob("library/app", layer.digest, resumes=0, stall=0.5) as chunks:
                async for chunk in chunks:
                    got += chunk
        assert time.monotonic() - started < STALL_LIMIT / 4
        assert 0 < len(got) < layer.size
        async with c.open_blob("library/app", layer.digest, offset=len(got)) as chunks:
            data = b"".join([chunk async for chunk in chunks])
    assert hashlib.sha256(bytes(got) + data).hexdigest() == layer.digest.split(":", 1)[1]
    ranged = [r for r in mal.records if (r.method, r.kind, r.ref, r.status) == ("GET", "blob", layer.digest, 206)]
    assert len(ranged) == 1


async def test_a_crawling_blob_is_sent_at_its_speed_from_any_byte(mal: MaliciousRegistry) -> None:
    img = seed(mal)
    layer = img.layers[1]  # 4 KiB
    mal.blob_fault(layer.digest, "crawl")
    mal.set_crawl_speed(8 * 1024)
    async with RegistryClient(mal.host, credentials=Credentials(USER, PASSWORD)) as c:
        started = time.monotonic()
        async with c.open_blob("library/app", layer.digest, offset=1024) as chunks:
            data = b"".join([chunk async for chunk in chunks])
        took = time.monotonic() - started
    assert len(data) == layer.size - 1024
    assert 0.25 <= took < 5  # 3 KiB at 8 KiB/s, in quarter-second pieces


async def test_a_mirror_far_slower_than_the_source_is_handed_over_though_above_its_own_floor(
    mal: MaliciousRegistry, registry: Registry, repo_name: str
) -> None:
    """ "A rate far below the other sources" (issue 14 item 10): a mirror at 16 KiB/s is above its own
    ``min_speed`` (1 KiB/s here) but far (`SLOWER_THAN_OTHERS` times) below the source seen so far: given up."""
    from hubmirror.media import Descriptor
    from hubmirror.registry.options import ClientOptions
    from hubmirror.store.mirrored import ContentMirror, MirroredStore, mirror_options
    from hubmirror.store.registry import RegistryStore

    app = seed(mal, repo_name)  # the mirror holds it (1 MiB and 4 KiB layers) and crawls on every blob
    mal.all_blobs_fault("crawl")
    mal.set_crawl_speed(16 * 1024)
    big = image("big", layers=[2 * LAYER])  # only the source has it: its download teaches the source's speed
    await push(registry, repo_name, app, ["1"])
    await push(registry, repo_name, big, ["big"])
    mirror = ContentMirror(
        RegistryStore(mal.host, mirror_options(ClientOptions(anonymous=True))), stall_timeout=1.0, min_speed=1024
    )
    store = MirroredStore(RegistryStore(registry.host), [mirror])
    try:
        for blob in (big.layers[0], app.layers[0]):
            started = time.monotonic()
            desc = Descriptor(blob.media_type, blob.digest, blob.size)
            async with store.open_blob(repo_name, desc) as chunks:
                data = b"".join([c async for c in verified(chunks, blob.digest, blob.size)])
            assert len(data) == blob.size
            assert time.monotonic() - started < 10  # not a minute at 16 KiB/s
    finally:
        await store.close()
    assert (mirror.stats.interrupted, mirror.stats.errors, mirror.stats.dropped) == (1, 1, None)
    assert 0 < mirror.stats.bytes < LAYER  # what it sent before it was given up stayed in the blob


def test_blob_redirect_to_another_host_carries_no_authorization(
    make_registry: Callable[..., Registry], registry: Registry, repo_name: str, tmp_path: Path
) -> None:
    with MaliciousRegistry(make_registry(), users={USER: PASSWORD}, cdn_hostname="localhost") as m:
        img = seed(m)
        env = {f"HUBMIRROR_127_0_0_1_{m.host.rsplit(':', 1)[1]}_{k}": v for k, v in (("USERNAME", USER),)}
        env[f"HUBMIRROR_127_0_0_1_{m.host.rsplit(':', 1)[1]}_PASSWORD"] = PASSWORD
        proc = copy(f"{m.host}/library/app:1", f"{registry.host}/{repo_name}:1", env=env)
        assert proc.returncode == 0, proc.stderr
        assert m.cdn_gets() == len(img.blob_digests)  # every blob came through the redirect
        assert not m.cdn_saw_authorization
        assert any(r.user == USER for r in m.records)  # the registry itself did get the credentials


# -- manifests --------------------------------------------------------------------------------------


def test_top_manifest_is_fetched_by_the_head_digest_and_verified(
    mal: MaliciousRegistry, registry: Registry, repo_name: str
) -> None:
    """The GET by tag would answer other bytes, without Docker-Content-Digest: they must not be copied."""
    img = seed(mal)
    other = push_sync(mal.upstream, "library/app", image("other", layers=[2048]), ["other"])
    mal.omit_digest_header()
    mal.serve_manifest("library/app", "1", other.manifest.data, OCI_MANIFEST, methods=("GET",))

    proc = copy(f"{mal.host}/library/app:1", f"{registry.host}/{repo_name}:1", "--json")

    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["digest"] == img.digest
    with urllib.request.urlopen(
        urllib.request.Request(f"{registry.url}/v2/{repo_name}/manifests/1", headers={"Accept": OCI_MANIFEST})
    ) as r:
        assert r.read() == img.manifest.data
    assert f"/v2/library/app/manifests/{img.digest}" in mal.paths


def test_manifest_bytes_not_matching_the_digest_are_refused(
    mal: MaliciousRegistry, registry: Registry, repo_name: str
) -> None:
    img = seed(mal)
    other = image("other", layers=[2048])
    mal.serve_manifest("library/app", img.digest, other.manifest.data, OCI_MANIFEST, methods=("GET",))

    proc = copy(f"{mal.host}/library/app:1", f"{registry.host}/{repo_name}:1")

    one_error(proc, img.digest, "library/app")
    dest_empty(registry, repo_name, *img.blob_digests)


def test_oversized_manifest_is_refused(mal: MaliciousRegistry, registry: Registry, repo_name: str) -> None:
    img = seed(mal)
    mal.oversized_manifest("library/app", img.digest)

    proc = copy(f"{mal.host}/library/app:1", f"{registry.host}/{repo_name}:1")

    one_error(proc, "library/app", "byte cap")
    dest_empty(registry, repo_name)


@pytest.mark.parametrize("bad", ["sha256:../../../v2/other/manifests/latest", "sha256:ABC", "md5:0123"])
def test_invalid_digest_in_a_manifest_never_reaches_the_destination(
    mal: MaliciousRegistry, make_registry: Callable[..., Registry], repo_name: str, bad: str
) -> None:
    img = seed(mal)
    doc = json.loads(img.manifest.data)
    doc["layers"][0]["digest"] = bad
    data = json.dumps(doc).encode()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    mal.serve_manifest("library/app", "1", data, OCI_MANIFEST, digest_header=digest)
    mal.serve_manifest("library/app", digest, data, OCI_MANIFEST, digest_header=digest)
    with MaliciousRegistry(make_registry(), users={USER: PASSWORD}, allow_push=True) as dest:
        port = dest.host.rsplit(":", 1)[1]
        env = {f"HUBMIRROR_127_0_0_1_{port}_USERNAME": USER, f"HUBMIRROR_127_0_0_1_{port}_PASSWORD": PASSWORD}
        proc = copy(f"{mal.host}/library/app:1", f"{dest.host}/{repo_name}:1", env=env)

        one_error(proc, "invalid digest", bad)
        assert not [p for p in dest.paths if "/blobs/" in p or bad.split(":", 1)[1] in p]
        assert not [r for r in dest.records if r.method in ("PUT", "POST", "PATCH")]  # nothing written
        assert not [p for p in mal.paths if bad.split(":", 1)[1] in p]  # not even asked of the source


def test_sha512_reference_is_verified_with_sha512(mal: MaliciousRegistry, registry: Registry, repo_name: str) -> None:
    img = seed(mal)
    ref = "sha512:" + hashlib.sha512(img.manifest.data).hexdigest()
    mal.serve_manifest("library/app", ref, img.manifest.data, OCI_MANIFEST, digest_header=ref)

    proc = copy(f"{mal.host}/library/app@{ref}", f"{registry.host}/{repo_name}:1", "--json")

    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["source_digest"] == ref and doc["digest"] == img.digest
    # …and bytes that do not hash to it are still refused
    mal.serve_manifest("library/app", ref, image("other").manifest.data, OCI_MANIFEST, digest_header=ref)
    bad = copy(f"{mal.host}/library/app@{ref}", f"{registry.host}/{repo_name}:2")
    one_error(bad, ref)
