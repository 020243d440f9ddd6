"""The copier between OCI layouts: verbatim indexes, re-copies, shared blobs, filtering, foreign layers,
budgets and unsupported manifests."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from hubmirror._errors import UnsupportedManifest
from hubmirror.copy import Copier, CopyEvents
from hubmirror.media import DOCKER_SCHEMA1, Descriptor, Manifest
from hubmirror.platform import Platform
from hubmirror.store import OCILayoutStore
from hubmirror.testing import layout
from hubmirror.testing.images import Blob, Format, Index, base_layer, image, index, manifest_list, put

PLATFORMS = ("linux/amd64", "linux/arm64/v8", "linux/arm/v7", "linux/s390x")


def skopeo(*args: str) -> bytes:
    return subprocess.run(["skopeo", *args], check=True, capture_output=True, timeout=120).stdout


class Recorder(CopyEvents):
    def __init__(self) -> None:
        self.blobs: list[tuple[str, str]] = []
        self.progress = 0

    def blob_progress(self, desc: Descriptor, nbytes: int) -> None:
        self.progress += nbytes

    def blob_done(self, desc: Descriptor, how: str) -> None:
        self.blobs.append((desc.digest, how))


def build(name: str, *, docker: bool = False) -> Index:
    """An index (or Docker list) over `PLATFORMS`, with attestations if OCI, on a debian base: two
    layers that depend only on the platform, so images built with different *name* share them."""
    fmt: Format = "docker" if docker else "oci"

    def debian(platform: Platform) -> list[Blob]:
        return [base_layer(f"debian-{i}/{platform}", 20_000, fmt=fmt) for i in range(2)]

    return index(name, PLATFORMS, fmt=fmt, base=debian, layers=(20_000,))


@pytest.mark.parametrize("docker", [False, True], ids=["oci-index", "docker-list"])
async def test_multiarch_copied_byte_for_byte(tmp_path: Path, docker: bool) -> None:
    src, dst = OCILayoutStore(tmp_path / "src"), OCILayoutStore(tmp_path / "dst")
    img = await put(src, "", build("py", docker=docker), ["3.12"])
    events = Recorder()

    res = await Copier(src, dst, events=events).copy("", "3.12", "", ["3.12", "3"])

    assert res.digest == res.source_digest == img.digest and not res.filtered
    assert res.tags == ["3.12", "3"] and res.tags_written == ["3.12", "3"]
    assert res.manifests_copied == len(img.children) + 1
    assert res.blobs_copied == len(img.blob_digests)
    assert res.bytes_copied == sum(b.size for b in img.blobs if not b.is_foreign)
    assert events.progress == res.bytes_copied
    assert res.source_manifest_gets == 1 + len(img.children)
    assert layout.mislabelled(tmp_path / "dst") == []  # a Docker list is listed as one
    assert layout.tags(tmp_path / "dst") == {"3.12": img.digest, "3": img.digest}
    layout.check_complete(tmp_path / "dst", img.digest)
    for child in img.children:
        assert layout.read_manifest(tmp_path / "dst", child.digest) == child.manifest.data
    if docker:
        return  # skopeo 1.9 only resolves OCI-typed entries: see test_oci_consumers for containerd
    # skopeo reads the whole thing back: every child (byte for byte) and every blob (digest-checked).
    for tag in ("3.12", "3"):
        assert skopeo("inspect", "--raw", f"oci:{tmp_path / 'dst'}:{tag}") == img.manifest.data
    back = tmp_path / "back"
    skopeo("copy", "-q", "--all", "--preserve-digests", f"oci:{tmp_path / 'dst'}:3", f"dir:{back}")
    assert (back / "manifest.json").read_bytes() == img.manifest.data
    for child in img.children:
        assert (back / f"{child.digest.split(':')[1]}.manifest.json").read_bytes() == child.manifest.data


async def test_unchanged_image_costs_no_get_and_no_upload(tmp_path: Path) -> None:
    src, dst = OCILayoutStore(tmp_path / "src"), OCILayoutStore(tmp_path / "dst")
    img = await put(src, "", build("node"), ["20"])
    await Copier(src, dst).copy("", "20", "", ["20"])
    gets, uploads = src.stats.manifest_gets, dst.stats.blob_uploads

    res = await Copier(src, dst).copy("", "20", "", ["20", "lts"])

    assert res.up_to_date and res.source_manifest_gets == 0 and res.source_manifest_heads == 1
    assert src.stats.manifest_gets == gets and dst.stats.blob_uploads == uploads
    assert res.tags_written == ["lts"]  # the missing tag is still written
    assert skopeo("inspect", "--raw", f"oci:{tmp_path / 'dst'}:lts") == img.manifest.data


async def test_shared_blobs_read_once_across_concurrent_copies(tmp_path: Path) -> None:
    src, dst = OCILayoutStore(tmp_path / "src"), OCILayoutStore(tmp_path / "dst")
    a = await put(src, "library/a", build("app-a"), ["1"])
    b = await put(src, "library/b", build("app-b"), ["1"])
    unique = set(a.blob_digests) | set(b.blob_digests)
    shared = set(a.blob_digests) & set(b.blob_digests)
    assert len(shared) >= 8  # the per-platform base layers

    copier = Copier(src, dst, concurrency=4)
    ra, rb = await asyncio.gather(
        copier.copy("library/a", "1", "library/a", ["1"]), copier.copy("library/b", "1", "library/b", ["1"])
    )

    assert src.stats.blob_gets == len(unique)
    assert ra.blobs_copied + rb.blobs_copied == len(unique)
    assert ra.blobs_mounted + rb.blobs_mounted == len(shared)
    for repo, img in (("library/a", a), ("library/b", b)):
        assert skopeo("inspect", "--raw", f"oci:{tmp_path / 'dst' / repo}:1") == img.manifest.data


async def test_platform_filter_writes_valid_index_and_drops_attestations(tmp_path: Path) -> None:
    src, dst = OCILayoutStore(tmp_path / "src"), OCILayoutStore(tmp_path / "dst")
    img = await put(src, "", build("redis"), ["7"])
    wanted = [Platform.parse("linux/amd64"), Platform.parse("linux/arm64")]
    copier = Copier(src, dst, platforms=wanted)

    res = await copier.copy("", "7", "", ["7"])

    assert res.filtered and res.source_digest == img.digest and res.digest != img.digest
    raw = skopeo("inspect", "--raw", f"oci:{tmp_path / 'dst'}:7")
    got = json.loads(raw)
    assert got["mediaType"] == img.media_type
    kept = [m["digest"] for m in got["manifests"]]
    amd64, arm64 = img.image("linux/amd64").digest, img.image("linux/arm64/v8").digest
    attests = {m["annotations"]["vnd.docker.reference.digest"] for m in got["manifests"] if "annotations" in m}
    assert kept[:2] == [amd64, arm64] and len(kept) == 4 and attests == {amd64, arm64}
    original = {m["digest"]: m for m in json.loads(img.manifest.data)["manifests"]}
    assert all(m == original[m["digest"]] for m in got["manifests"])  # descriptors re-emitted verbatim
    assert res.platforms == ["linux/amd64", "linux/arm64/v8"]
    skopeo("copy", "--all", f"oci:{tmp_path / 'dst'}:7", f"oci:{tmp_path / 'back'}:7")
    # s390x and arm/v7 content was never read.
    for p in ("linux/s390x", "linux/arm/v7"):
        assert not await dst.has_blob("", img.image(p).manifest.layers[-1])

    again = await Copier(src, dst, platforms=wanted).copy("", "7", "", ["7"])
    assert again.up_to_date and again.source_manifest_gets == 0 and again.digest == res.digest

    # All platforms selected: verbatim, same digest.
    every = [Platform.parse(p) for p in ("linux/amd64", "linux/arm64", "linux/arm/v7", "linux/s390x")]
    full = await Copier(src, dst, platforms=every).copy("", "7", "", ["7-full"])
    assert not full.filtered and full.digest == img.digest


async def test_single_image_of_unselected_platform_is_skipped(tmp_path: Path) -> None:
    src, dst = OCILayoutStore(tmp_path / "src"), OCILayoutStore(tmp_path / "dst")
    await put(src, "", image("tool", "linux/arm64/v8"), ["v1"])
    res = await Copier(src, dst, platforms=[Platform.parse("linux/amd64")]).copy("", "v1", "", ["v1"])
    assert res.skipped is not None and "linux/arm64/v8" in res.skipped and "linux/amd64" in res.skipped
    assert res.tags == [] and await dst.list_tags("") == []

    ok = await Copier(src, dst, platforms=[Platform.parse("linux/arm64")]).copy("", "v1", "", ["v1"])
    assert ok.skipped is None and await dst.list_tags("") == ["v1"]


async def test_foreign_layers_are_not_downloaded(tmp_path: Path) -> None:
    src, dst = OCILayoutStore(tmp_path / "src"), OCILayoutStore(tmp_path / "dst")
    windows_and_linux = manifest_list("nanoserver", ("windows/amd64", "linux/amd64"), foreign_windows=True)
    img = await put(src, "", windows_and_linux, ["ltsc2019"])
    foreign = [b.digest for b in img.blobs if b.is_foreign]
    assert len(foreign) == 1
    res = await Copier(src, dst).copy("", "ltsc2019", "", ["ltsc2019"])
    assert res.foreign_layers == foreign and res.digest == img.digest
    assert src.stats.blob_gets == len(img.blob_digests)  # the foreign layer is not among them
    assert layout.tags(tmp_path / "dst") == {"ltsc2019": img.digest} and layout.mislabelled(tmp_path / "dst") == []
    layout.check_complete(tmp_path / "dst", img.digest)  # foreign layers aside


async def test_schema1_is_unsupported(tmp_path: Path) -> None:
    src, dst = OCILayoutStore(tmp_path / "src"), OCILayoutStore(tmp_path / "dst")
    s1 = Manifest(json.dumps({"schemaVersion": 1, "name": "library/docker", "tag": "1.0"}).encode(), DOCKER_SCHEMA1)
    with pytest.raises(UnsupportedManifest, match="schema 1"):
        await Copier(src, dst).copy("", "1.0", "", ["1.0"], manifest=s1)
    assert await dst.list_tags("") == []


async def test_retag_puts_same_bytes_without_source(tmp_path: Path) -> None:
    src, dst = OCILayoutStore(tmp_path / "src"), OCILayoutStore(tmp_path / "dst")
    img = await put(src, "", build("php"), ["8"])
    copier = Copier(src, dst)
    await copier.copy("", "8", "", ["8"])
    gets, heads = src.stats.manifest_gets, src.stats.manifest_heads
    assert await copier.retag("", img.manifest, ["8.3", "latest"]) == ["8.3", "latest"]
    assert (src.stats.manifest_gets, src.stats.manifest_heads) == (gets, heads)
    assert await dst.list_tags("") == ["8", "8.3", "latest"]


async def test_children_already_in_destination_are_not_fetched(tmp_path: Path) -> None:
    src, dst = OCILayoutStore(tmp_path / "src"), OCILayoutStore(tmp_path / "dst")
    img = await put(src, "", build("ruby"), ["3"])
    await Copier(src, dst, platforms=[Platform.parse("linux/amd64")]).copy("", "3", "", ["3-amd64"])
    gets = src.stats.manifest_gets

    res = await Copier(src, dst).copy("", "3", "", ["3"])

    # the amd64 image and its attestation were already there: only the index and 6 others are fetched
    assert res.manifests_skipped == 2 and res.source_manifest_gets == 1 + len(img.children) - 2
    assert src.stats.manifest_gets - gets == res.source_manifest_gets
    assert skopeo("inspect", "--raw", f"oci:{tmp_path / 'dst'}:3") == img.manifest.data
