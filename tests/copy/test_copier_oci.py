"""The copier between OCI layouts: verbatim indexes, re-copies, shared blobs, filtering, foreign layers,
budgets and unsupported manifests."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest
from copy_images import build_index, build_single, build_windows_index, put_image

from hubmirror._errors import BudgetExhausted, UnsupportedManifest
from hubmirror.copy import Copier, CopyEvents
from hubmirror.media import DOCKER_SCHEMA1, Descriptor, Manifest
from hubmirror.platform import Platform
from hubmirror.store import OCILayoutStore


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


@pytest.mark.parametrize("docker", [False, True], ids=["oci-index", "docker-list"])
async def test_multiarch_copied_byte_for_byte(tmp_path: Path, docker: bool) -> None:
    src, dst = OCILayoutStore(tmp_path / "src"), OCILayoutStore(tmp_path / "dst")
    img = build_index("py", docker=docker)
    await put_image(src, "", "3.12", img)
    events = Recorder()

    res = await Copier(src, dst, events=events).copy("", "3.12", "", ["3.12", "3"])

    assert res.digest == res.source_digest == img.digest and not res.filtered
    assert res.tags == ["3.12", "3"] and res.tags_written == ["3.12", "3"]
    assert res.manifests_copied == len(img.manifests) + 1
    assert res.blobs_copied == len(img.blobs) and res.bytes_copied == sum(map(len, img.blobs.values()))
    assert events.progress == res.bytes_copied
    assert res.source_manifest_gets == 1 + len(img.manifests)
    for tag in ("3.12", "3"):
        assert skopeo("inspect", "--raw", f"oci:{tmp_path / 'dst'}:{tag}") == img.top.data
    # skopeo reads the whole thing back: every child (byte for byte) and every blob (digest-checked).
    # (containers/image treats a list in an OCI layout as an OCI index, so the Docker list itself
    # would be converted on the way out; its children are not.)
    back = tmp_path / "back"
    skopeo(
        "copy", "-q", "--all", *([] if docker else ["--preserve-digests"]), f"oci:{tmp_path / 'dst'}:3", f"dir:{back}"
    )
    if not docker:
        assert (back / "manifest.json").read_bytes() == img.top.data
    for digest, child in img.manifests.items():
        assert (back / f"{digest.split(':')[1]}.manifest.json").read_bytes() == child.data


async def test_unchanged_image_costs_no_get_and_no_upload(tmp_path: Path) -> None:
    src, dst = OCILayoutStore(tmp_path / "src"), OCILayoutStore(tmp_path / "dst")
    img = build_index("node")
    await put_image(src, "", "20", img)
    await Copier(src, dst).copy("", "20", "", ["20"])
    gets, uploads = src.stats.manifest_gets, dst.stats.blob_uploads

    res = await Copier(src, dst).copy("", "20", "", ["20", "lts"])

    assert res.up_to_date and res.source_manifest_gets == 0 and res.source_manifest_heads == 1
    assert src.stats.manifest_gets == gets and dst.stats.blob_uploads == uploads
    assert res.tags_written == ["lts"]  # the missing tag is still written
    assert skopeo("inspect", "--raw", f"oci:{tmp_path / 'dst'}:lts") == img.top.data


async def test_shared_blobs_read_once_across_concurrent_copies(tmp_path: Path) -> None:
    src, dst = OCILayoutStore(tmp_path / "src"), OCILayoutStore(tmp_path / "dst")
    a, b = build_index("app-a"), build_index("app-b")
    await put_image(src, "library/a", "1", a)
    await put_image(src, "library/b", "1", b)
    unique = set(a.blobs) | set(b.blobs)
    shared = set(a.blobs) & set(b.blobs)
    assert len(shared) >= 8  # the per-platform base layers

    copier = Copier(src, dst, concurrency=4)
    ra, rb = await asyncio.gather(
        copier.copy("library/a", "1", "library/a", ["1"]), copier.copy("library/b", "1", "library/b", ["1"])
    )

    assert src.stats.blob_gets == len(unique)
    assert ra.blobs_copied + rb.blobs_copied == len(unique)
    assert ra.blobs_mounted + rb.blobs_mounted == len(shared)
    for repo, img in (("library/a", a), ("library/b", b)):
        assert skopeo("inspect", "--raw", f"oci:{tmp_path / 'dst' / repo}:1") == img.top.data


async def test_platform_filter_writes_valid_index_and_drops_attestations(tmp_path: Path) -> None:
    src, dst = OCILayoutStore(tmp_path / "src"), OCILayoutStore(tmp_path / "dst")
    img = build_index("redis")
    await put_image(src, "", "7", img)
    wanted = [Platform.parse("linux/amd64"), Platform.parse("linux/arm64")]
    copier = Copier(src, dst, platforms=wanted)

    res = await copier.copy("", "7", "", ["7"])

    assert res.filtered and res.source_digest == img.digest and res.digest != img.digest
    raw = skopeo("inspect", "--raw", f"oci:{tmp_path / 'dst'}:7")
    index = json.loads(raw)
    assert index["mediaType"] == img.top.media_type
    kept = [m["digest"] for m in index["manifests"]]
    amd64, arm64 = img.child_for("linux/amd64").digest, img.child_for("linux/arm64/v8").digest
    attests = {m["annotations"]["vnd.docker.reference.digest"] for m in index["manifests"] if "annotations" in m}
    assert kept[:2] == [amd64, arm64] and len(kept) == 4 and attests == {amd64, arm64}
    original = {m["digest"]: m for m in json.loads(img.top.data)["manifests"]}
    assert all(m == original[m["digest"]] for m in index["manifests"])  # descriptors re-emitted verbatim
    assert res.platforms == ["linux/amd64", "linux/arm64/v8"]
    skopeo("copy", "--all", f"oci:{tmp_path / 'dst'}:7", f"oci:{tmp_path / 'back'}:7")
    # s390x and arm/v7 content was never read.
    for p in ("linux/s390x", "linux/arm/v7"):
        assert not await dst.has_blob("", img.child_for(p).layers[-1])

    again = await Copier(src, dst, platforms=wanted).copy("", "7", "", ["7"])
    assert again.up_to_date and again.source_manifest_gets == 0 and again.digest == res.digest

    # All platforms selected: verbatim, same digest.
    every = [Platform.parse(p) for p in ("linux/amd64", "linux/arm64", "linux/arm/v7", "linux/s390x")]
    full = await Copier(src, dst, platforms=every).copy("", "7", "", ["7-full"])
    assert not full.filtered and full.digest == img.digest


async def test_single_image_of_unselected_platform_is_skipped(tmp_path: Path) -> None:
    src, dst = OCILayoutStore(tmp_path / "src"), OCILayoutStore(tmp_path / "dst")
    await put_image(src, "", "v1", build_single("tool", "linux/arm64/v8"))
    res = await Copier(src, dst, platforms=[Platform.parse("linux/amd64")]).copy("", "v1", "", ["v1"])
    assert res.skipped is not None and "linux/arm64/v8" in res.skipped and "linux/amd64" in res.skipped
    assert res.tags == [] and await dst.list_tags("") == []

    ok = await Copier(src, dst, platforms=[Platform.parse("linux/arm64")]).copy("", "v1", "", ["v1"])
    assert ok.skipped is None and await dst.list_tags("") == ["v1"]


async def test_foreign_layers_are_not_downloaded(tmp_path: Path) -> None:
    src, dst = OCILayoutStore(tmp_path / "src"), OCILayoutStore(tmp_path / "dst")
    img = build_windows_index("nanoserver")
    await put_image(src, "", "ltsc2019", img)
    res = await Copier(src, dst).copy("", "ltsc2019", "", ["ltsc2019"])
    assert res.foreign_layers == img.foreign and res.digest == img.digest
    assert src.stats.blob_gets == len(img.blobs)  # the foreign layer is not among them
    assert skopeo("inspect", "--raw", f"oci:{tmp_path / 'dst'}:ltsc2019") == img.top.data


class Budget:
    def __init__(self, n: int) -> None:
        self.left = n

    async def acquire(self, n: int = 1) -> None:
        if self.left < n:
            raise BudgetExhausted("pull budget spent")
        self.left -= n


async def test_budget_exhausted_aborts_without_tags(tmp_path: Path) -> None:
    src, dst = OCILayoutStore(tmp_path / "src"), OCILayoutStore(tmp_path / "dst")
    img = build_index("golang")
    await put_image(src, "", "1.22", img)
    with pytest.raises(BudgetExhausted):
        await Copier(src, dst, budget=Budget(3)).copy("", "1.22", "", ["1.22"])
    assert await dst.list_tags("") == []

    budget = Budget(100)
    res = await Copier(src, dst, budget=budget).copy("", "1.22", "", ["1.22"])
    assert 100 - budget.left == res.source_manifest_gets == 1 + len(img.manifests)
    assert skopeo("inspect", "--raw", f"oci:{tmp_path / 'dst'}:1.22") == img.top.data


async def test_schema1_is_unsupported(tmp_path: Path) -> None:
    src, dst = OCILayoutStore(tmp_path / "src"), OCILayoutStore(tmp_path / "dst")
    s1 = Manifest(json.dumps({"schemaVersion": 1, "name": "library/docker", "tag": "1.0"}).encode(), DOCKER_SCHEMA1)
    with pytest.raises(UnsupportedManifest, match="schema 1"):
        await Copier(src, dst).copy("", "1.0", "", ["1.0"], manifest=s1)
    assert await dst.list_tags("") == []


async def test_retag_puts_same_bytes_without_source(tmp_path: Path) -> None:
    src, dst = OCILayoutStore(tmp_path / "src"), OCILayoutStore(tmp_path / "dst")
    img = build_index("php")
    await put_image(src, "", "8", img)
    copier = Copier(src, dst)
    await copier.copy("", "8", "", ["8"])
    gets, heads = src.stats.manifest_gets, src.stats.manifest_heads
    assert await copier.retag("", img.top, ["8.3", "latest"]) == ["8.3", "latest"]
    assert (src.stats.manifest_gets, src.stats.manifest_heads) == (gets, heads)
    assert await dst.list_tags("") == ["8", "8.3", "latest"]


async def test_children_already_in_destination_are_not_fetched(tmp_path: Path) -> None:
    src, dst = OCILayoutStore(tmp_path / "src"), OCILayoutStore(tmp_path / "dst")
    img = build_index("ruby")
    await put_image(src, "", "3", img)
    await Copier(src, dst, platforms=[Platform.parse("linux/amd64")]).copy("", "3", "", ["3-amd64"])
    gets = src.stats.manifest_gets

    res = await Copier(src, dst).copy("", "3", "", ["3"])

    # the amd64 image and its attestation were already there: only the index and 6 others are fetched
    assert res.manifests_skipped == 2 and res.source_manifest_gets == 1 + len(img.manifests) - 2
    assert src.stats.manifest_gets - gets == res.source_manifest_gets
    assert skopeo("inspect", "--raw", f"oci:{tmp_path / 'dst'}:3") == img.top.data
