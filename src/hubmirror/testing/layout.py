"""Read an OCI image layout directly (no hubmirror store code), to check what a writer left there.

For tests and the reliability sampler: which tags ``index.json`` lists, whether a tag resolves to a
complete image (every child manifest and blob present, each manifest's bytes matching its digest),
whether each descriptor's media type is that of the bytes it points to, and which temporary files
are lying around.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

REF_NAME = "org.opencontainers.image.ref.name"
TMP_PREFIX = ".tmp-"


def index_entries(layout: Path) -> list[dict[str, Any]]:
    """The ``manifests`` of *layout*'s ``index.json`` ([] when there is none yet)."""
    try:
        data = (layout / "index.json").read_bytes()
    except FileNotFoundError:
        return []
    entries = json.loads(data).get("manifests") or []
    return [e for e in entries if isinstance(e, dict)]


def tags(layout: Path) -> dict[str, str]:
    """tag → digest, from ``index.json``."""
    out: dict[str, str] = {}
    for e in index_entries(layout):
        name = (e.get("annotations") or {}).get(REF_NAME)
        if isinstance(name, str):
            out[name] = str(e["digest"])
    return out


def blob_path(layout: Path, digest: str) -> Path:
    algo, _, hexpart = digest.partition(":")
    return layout / "blobs" / algo / hexpart


def read_manifest(layout: Path, digest: str) -> bytes:
    """The bytes of manifest *digest*, checked against the digest (AssertionError if they differ)."""
    data = blob_path(layout, digest).read_bytes()
    got = "sha256:" + hashlib.sha256(data).hexdigest()
    assert got == digest, f"{layout}: blob {digest} holds content hashing to {got}"
    return data


def check_complete(layout: Path, digest: str, known_complete: set[str] | None = None) -> None:
    """Assert that manifest *digest* and everything it references are stored in *layout*.

    Digests found complete are added to *known_complete* and not walked again (content in a layout is
    only ever added, so once complete stays complete).
    """
    if known_complete is not None and digest in known_complete:
        return
    path = blob_path(layout, digest)
    assert path.is_file(), f"{layout}: manifest {digest} is not stored"
    m = json.loads(read_manifest(layout, digest))
    if "manifests" in m:
        for child in m["manifests"]:
            check_complete(layout, child["digest"], known_complete)
    else:
        for blob in [m["config"], *m.get("layers", [])]:
            if blob.get("urls"):
                continue  # a foreign layer, fetched from its URL
            p = blob_path(layout, blob["digest"])
            assert p.is_file(), f"{layout}: manifest {digest} references blob {blob['digest']}, which is not stored"
            assert p.stat().st_size == blob["size"], f"{layout}: blob {blob['digest']} has the wrong size"
    if known_complete is not None:
        known_complete.add(digest)


def mislabelled(layout: Path) -> list[str]:
    """Entries of ``index.json`` whose ``mediaType`` is not the one in the bytes they point to."""
    bad = []
    for e in index_entries(layout):
        actual = json.loads(blob_path(layout, e["digest"]).read_bytes()).get("mediaType")
        if actual != e.get("mediaType"):
            bad.append(f"{e['digest']}: listed as {e.get('mediaType')}, stored as {actual}")
    return bad


def temp_files(root: Path) -> list[Path]:
    """Every ``.tmp-*`` file under *root* (all layouts beneath it)."""
    return sorted(p for p in root.rglob(f"{TMP_PREFIX}*") if p.is_file())
