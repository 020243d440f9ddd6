"""Build small but realistic images (multi-arch indexes with attestations, shared base layers, Windows
foreign layers) and write them into any `Store`, for the copier tests."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from hubmirror.digest import sha256
from hubmirror.media import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    Manifest,
)
from hubmirror.store import Store

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
IN_TOTO = "application/vnd.in-toto+json"

PLATFORMS = ("linux/amd64", "linux/arm64/v8", "linux/arm/v7", "linux/s390x")


@dataclass
class Image:
    """A built image: the top manifest, child manifests by digest and blobs by digest."""

    top: Manifest
    manifests: dict[str, Manifest] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    foreign: list[str] = field(default_factory=list)

    @property
    def digest(self) -> str:
        return self.top.digest

    def child_for(self, platform: str) -> Manifest:
        for c in self.top.children:
            if c.platform is not None and str(c.platform) == platform:
                return self.manifests[c.digest]
        raise KeyError(platform)


def _blob(img: Image, data: bytes, media_type: str) -> dict[str, object]:
    d = sha256(data)
    img.blobs[d] = data
    return {"mediaType": media_type, "digest": d, "size": len(data)}


def _layer_bytes(seed: str, size: int) -> bytes:
    rnd = random.Random(seed)
    return rnd.randbytes(size)


def _platform_obj(platform: str) -> dict[str, str]:
    parts = platform.split("/")
    obj = {"architecture": parts[1], "os": parts[0]}
    if len(parts) == 3:
        obj["variant"] = parts[2]
    return obj


def _image_manifest(
    img: Image,
    platform: str,
    *,
    docker: bool,
    name: str,
    base_layers: int,
    own_layers: int,
    layer_size: int,
    foreign: bool = False,
) -> Manifest:
    layer_type = DOCKER_LAYER if docker else OCI_LAYER
    layers: list[dict[str, object]] = []
    if foreign:
        fdata = _layer_bytes(f"foreign/{platform}", 4096)
        fd = sha256(fdata)
        img.foreign.append(fd)
        layers.append(
            {
                "mediaType": FOREIGN_LAYER,
                "digest": fd,
                "size": len(fdata),
                "urls": [f"https://mcr.microsoft.com/v2/windows/servercore/blobs/{fd}"],
            }
        )
    for i in range(base_layers):
        layers.append(_blob(img, _layer_bytes(f"base/{platform}/{i}", layer_size), layer_type))
    for i in range(own_layers):
        layers.append(_blob(img, _layer_bytes(f"{name}/{platform}/{i}", layer_size), layer_type))
    config = {
        **_platform_obj(platform),
        "config": {"Env": [f"IMAGE={name}"]},
        "rootfs": {"type": "layers", "diff_ids": [str(layer["digest"]) for layer in layers]},
    }
    if foreign:
        config["os.version"] = "10.0.17763.1234"
    cfg = _blob(img, json.dumps(config).encode(), DOCKER_CONFIG if docker else OCI_CONFIG)
    mt = DOCKER_MANIFEST if docker else OCI_MANIFEST
    data = json.dumps({"schemaVersion": 2, "mediaType": mt, "config": cfg, "layers": layers}, indent=3).encode()
    m = Manifest(data, mt)
    img.manifests[m.digest] = m
    return m


def _attestation(img: Image, name: str, subject: Manifest) -> Manifest:
    statement = json.dumps(
        {
            "_type": "https://in-toto.io/Statement/v0.1",
            "subject": [{"name": name, "digest": {"sha256": subject.digest[7:]}}],
        }
    ).encode()
    layer = _blob(img, statement, IN_TOTO)
    layer["annotations"] = {"in-toto.io/predicate-type": "https://spdx.dev/Document"}
    cfg = _blob(img, b"{}", OCI_CONFIG)
    data = json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cfg, "layers": [layer]}, indent=2
    ).encode()
    m = Manifest(data, OCI_MANIFEST)
    img.manifests[m.digest] = m
    return m


def build_index(
    name: str,
    platforms: tuple[str, ...] = PLATFORMS,
    *,
    docker: bool = False,
    attestations: bool = True,
    base_layers: int = 2,
    own_layers: int = 1,
    layer_size: int = 20_000,
) -> Image:
    """A multi-arch image: an OCI index (or Docker manifest list) over *platforms*, each followed by
    its attestation manifest (``unknown/unknown``) when *attestations*. Base layers depend only on the
    platform, so two images built with different *name* share them."""
    img = Image(Manifest(b"{}", OCI_INDEX))
    entries: list[dict[str, object]] = []
    for platform in platforms:
        m = _image_manifest(
            img,
            platform,
            docker=docker,
            name=name,
            base_layers=base_layers,
            own_layers=own_layers,
            layer_size=layer_size,
        )
        entries.append(
            {"mediaType": m.media_type, "digest": m.digest, "size": m.size, "platform": _platform_obj(platform)}
        )
    if attestations and not docker:
        for entry in list(entries):
            subject = img.manifests[str(entry["digest"])]
            a = _attestation(img, name, subject)
            entries.append(
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": a.digest,
                    "size": a.size,
                    "annotations": {
                        "vnd.docker.reference.digest": subject.digest,
                        "vnd.docker.reference.type": "attestation-manifest",
                    },
                    "platform": {"architecture": "unknown", "os": "unknown"},
                }
            )
    mt = DOCKER_LIST if docker else OCI_INDEX
    data = json.dumps({"schemaVersion": 2, "mediaType": mt, "manifests": entries}, indent=3).encode()
    img.top = Manifest(data, mt)
    return img


def build_single(name: str, platform: str = "linux/amd64", *, docker: bool = False, foreign: bool = False) -> Image:
    """A single-platform image manifest (no index); *foreign* adds a Windows foreign base layer."""
    img = Image(Manifest(b"{}", OCI_MANIFEST))
    img.top = _image_manifest(
        img, platform, docker=docker, name=name, base_layers=1, own_layers=1, layer_size=10_000, foreign=foreign
    )
    return img


def build_windows_index(name: str) -> Image:
    """A Docker manifest list with one Windows image (foreign base layer) and one Linux image."""
    img = Image(Manifest(b"{}", DOCKER_LIST))
    win = _image_manifest(
        img, "windows/amd64", docker=True, name=name, base_layers=0, own_layers=1, layer_size=5000, foreign=True
    )
    lin = _image_manifest(img, "linux/amd64", docker=True, name=name, base_layers=1, own_layers=1, layer_size=5000)
    entries = [
        {
            "mediaType": DOCKER_MANIFEST,
            "digest": win.digest,
            "size": win.size,
            "platform": {"architecture": "amd64", "os": "windows", "os.version": "10.0.17763.1234"},
        },
        {
            "mediaType": DOCKER_MANIFEST,
            "digest": lin.digest,
            "size": lin.size,
            "platform": _platform_obj("linux/amd64"),
        },
    ]
    data = json.dumps({"schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": entries}, indent=3).encode()
    img.top = Manifest(data, DOCKER_LIST)
    return img


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def put_image(store: Store, repo: str, tag: str, img: Image) -> None:
    """Write *img* into *store* in push order: blobs, children by digest, top by tag."""
    for d, data in img.blobs.items():
        desc = Descriptor("application/octet-stream", d, len(data))
        if not await store.has_blob(repo, desc):
            await store.put_blob(repo, desc, _once(data))
    for m in img.manifests.values():
        if m.digest != img.top.digest:
            await store.put_manifest(repo, m.digest, m)
    await store.put_manifest(repo, tag, img.top)
