"""The OCI layout store: layout files, atomic blob writes, tags in index.json, mounts, untagging."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hubmirror._errors import DigestMismatch, NotFound, StoreError
from hubmirror.digest import sha256
from hubmirror.media import Descriptor
from hubmirror.store import OCILayoutStore, open_location
from hubmirror.store.ocidir import LOCK_FILE, _machine
from hubmirror.testing.images import index, put, run_sync


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for p in parts:
        yield p


async def _failing(*parts: bytes) -> AsyncIterator[bytes]:
    for p in parts:
        yield p
    raise ConnectionResetError("source went away")


def _stray_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(".") and p.name != LOCK_FILE and p.is_file()]


async def test_layout_files_and_tag_in_index(tmp_path: Path) -> None:
    store = OCILayoutStore(tmp_path / "lay")
    img = await put(store, "", index("alpha"), ["1.0"])

    assert json.loads((tmp_path / "lay" / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index_json = json.loads((tmp_path / "lay" / "index.json").read_text())
    assert index_json["manifests"] == [
        {
            "mediaType": img.media_type,
            "digest": img.digest,
            "size": img.size,
            "annotations": {"org.opencontainers.image.ref.name": "1.0"},
        }
    ]
    blob = tmp_path / "lay" / "blobs" / "sha256" / img.digest.split(":")[1]
    assert blob.read_bytes() == img.manifest.data
    assert await store.list_tags("") == ["1.0"]
    got = await store.get_manifest("", "1.0")
    assert got.data == img.manifest.data and got.media_type == img.media_type
    head = await store.head_manifest("", "1.0")
    assert head is not None and head.digest == img.digest
    assert _stray_files(tmp_path / "lay") == []


async def test_retag_replaces_entry_and_untag(tmp_path: Path) -> None:
    store = OCILayoutStore(tmp_path)
    a, b = index("a"), index("b")
    await put(store, "", a, ["latest"])
    await put(store, "", b, ["latest"])
    await put(store, "", a, ["old"])
    assert await store.list_tags("") == ["latest", "old"]
    assert (await store.get_manifest("", "latest")).digest == b.digest

    await store.delete_manifest("", "old")
    assert await store.list_tags("") == ["latest"]
    assert await store.head_manifest("", "old") is None
    with pytest.raises(NotFound, match="old"):
        await store.delete_manifest("", "old")


async def test_blob_mismatch_and_interrupted_stream_leave_nothing(tmp_path: Path) -> None:
    store = OCILayoutStore(tmp_path)
    data = b"hello layer" * 1000
    desc = Descriptor("application/octet-stream", sha256(data), len(data))

    with pytest.raises(DigestMismatch):
        await store.put_blob("", desc, _chunks(data[:-1] + b"X"))
    with pytest.raises(ConnectionResetError):
        await store.put_blob("", desc, _failing(data[:100]))
    assert not await store.has_blob("", desc)
    assert _stray_files(tmp_path / "blobs") == []

    await store.put_blob("", desc, _chunks(data[:5000], data[5000:]))
    assert await store.has_blob("", desc)
    async with store.open_blob("", desc) as chunks:
        assert b"".join([c async for c in chunks]) == data


async def test_manifest_with_missing_content_is_refused(tmp_path: Path) -> None:
    store = OCILayoutStore(tmp_path)
    img = index("x")
    with pytest.raises(StoreError, match="not stored"):
        await store.put_manifest("", "v1", img.manifest)
    assert await store.list_tags("") == []


async def test_sub_repositories_and_mount(tmp_path: Path) -> None:
    store = OCILayoutStore(tmp_path)
    img = await put(store, "library/one", index("x", ("linux/amd64",), attestations=False), ["v1"])
    assert (tmp_path / "library" / "one" / "index.json").exists()
    assert not (tmp_path / "index.json").exists()

    cfg = img.image("linux/amd64").manifest.config
    assert cfg is not None
    assert not await store.has_blob("library/two", cfg)
    assert await store.mount_blob("library/two", cfg, "library/one")
    assert await store.has_blob("library/two", cfg)
    missing = Descriptor("x", sha256(b"nope"), 4)
    assert not await store.mount_blob("library/two", missing, "library/one")
    with pytest.raises(StoreError, match="invalid repository"):
        store.layout("../escape")


def test_open_location_oci(tmp_path: Path) -> None:
    store, repo, ref = open_location(f"oci:{tmp_path}:v1.2")
    assert isinstance(store, OCILayoutStore) and store.root == tmp_path and repo == "" and ref == "v1.2"
    store, repo, ref = open_location(f"oci:{tmp_path}")
    assert isinstance(store, OCILayoutStore) and store.root == tmp_path and ref is None


def test_first_write_removes_temp_files_of_gone_writers_only(tmp_path: Path) -> None:
    """Temp files of a dead process, of a pid since reused, and long-untouched ones of another machine
    or an older hubmirror go; a live writer's (another process, or recent foreign ones) stay."""
    blobs = tmp_path / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (tmp_path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    other = "deadbeef" if _machine() != "deadbeef" else "beefdead"
    hour_ago, days_ago = time.time() - 3600 * 2, time.time() - 3600 * 48

    def tmp(name: str, mtime: float | None = None, where: Path = blobs) -> Path:
        p = where / name
        p.write_bytes(b"partial")
        if mtime is not None:
            os.utime(p, (mtime, mtime))
        return p

    try:
        keep = [
            tmp(f".tmp-{_machine()}.{live.pid}-0123456789abcdef-1"),  # a live writer
            tmp(f".tmp-{other}.{dead.pid}-0123456789abcdef-2"),  # another machine, recently written
            tmp(".tmp-0123456789abcdef-3"),  # an older hubmirror, recently written
        ]
        gone = [
            tmp(f".tmp-{_machine()}.{dead.pid}-0123456789abcdef-4"),  # a dead writer
            tmp(f".tmp-{_machine()}.{dead.pid}-index.json-5", where=tmp_path),
            tmp(f".tmp-{_machine()}.{live.pid}-0123456789abcdef-6", hour_ago),  # before `live` started: pid reused
            tmp(f".tmp-{other}.1-0123456789abcdef-7", days_ago),
            tmp(".tmp-0123456789abcdef-8", hour_ago),
        ]
        store = OCILayoutStore(tmp_path)
        run_sync(store.list_tags(""))  # reading removes nothing
        assert all(p.exists() for p in keep + gone)

        run_sync(put(store, "", index("x", ("linux/amd64",)), ["v1"]))

        assert [p for p in keep if not p.exists()] == []
        assert [p for p in gone if p.exists()] == []
    finally:
        live.kill()
        live.wait()
