"""Media types, descriptors and manifests: the content model shared by stores and the copier.

A `Manifest` keeps the exact bytes it was received as; hubmirror never re-serialises a manifest it
copies verbatim, so digests stay valid.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from ._errors import UnsupportedManifest
from .digest import is_digest, sha256
from .platform import Platform

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
IMAGE_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
MANIFEST_TYPES = INDEX_TYPES | IMAGE_TYPES
SCHEMA1_TYPES = frozenset({DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED})

#: Sent on every manifest GET and HEAD (reference §D.3): all four modern types.
ACCEPT = ", ".join([OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST])

FOREIGN_LAYER_TYPES = frozenset(
    {
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    }
)

#: Manifests larger than this are refused (reference §D.11).
MAX_MANIFEST_SIZE = 4 * 1024 * 1024

ATTESTATION_REF_TYPE = "vnd.docker.reference.type"
ATTESTATION_REF_DIGEST = "vnd.docker.reference.digest"


@dataclass(frozen=True)
class Descriptor:
    """A content descriptor: what a manifest says about a blob or a child manifest."""

    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    urls: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Descriptor:
        return cls(
            media_type=str(obj.get("mediaType", "")),
            digest=str(obj["digest"]),
            size=int(obj.get("size", 0)),
            platform=Platform.from_json(obj.get("platform")),
            annotations=dict(obj.get("annotations") or {}),
            urls=tuple(obj.get("urls") or ()),
        )

    @property
    def is_foreign(self) -> bool:
        """A Windows foreign / non-distributable layer: not stored on the source registry."""
        return bool(self.urls) or self.media_type in FOREIGN_LAYER_TYPES

    @property
    def is_attestation(self) -> bool:
        """A BuildKit attestation manifest (``unknown/unknown`` with a reference annotation)."""
        return self.annotations.get(ATTESTATION_REF_TYPE) == "attestation-manifest" or bool(
            self.platform and self.platform.is_unknown
        )

    @property
    def attests(self) -> str | None:
        """The digest of the image manifest this attestation describes, if any."""
        return self.annotations.get(ATTESTATION_REF_DIGEST)


@dataclass(frozen=True)
class Manifest:
    """A manifest's exact bytes and media type. The digest is computed from the bytes."""

    data: bytes
    media_type: str

    @cached_property
    def digest(self) -> str:
        return sha256(self.data)

    @property
    def size(self) -> int:
        return len(self.data)

    @cached_property
    def json(self) -> dict[str, Any]:
        try:
            obj = json.loads(self.data)
        except ValueError as e:
            raise UnsupportedManifest(f"manifest {self.digest} is not valid JSON: {e}") from None
        if not isinstance(obj, dict):
            raise UnsupportedManifest(f"manifest {self.digest} is not a JSON object")
        return obj

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES

    def descriptor(self, platform: Platform | None = None) -> Descriptor:
        return Descriptor(self.media_type, self.digest, self.size, platform)

    @property
    def children(self) -> list[Descriptor]:
        """The child manifests of an index, in order (empty for an image manifest)."""
        if not self.is_index:
            return []
        return [Descriptor.from_json(m) for m in self.json.get("manifests") or []]

    @property
    def config(self) -> Descriptor | None:
        cfg = self.json.get("config") if not self.is_index else None
        return Descriptor.from_json(cfg) if cfg else None

    @property
    def layers(self) -> list[Descriptor]:
        if self.is_index:
            return []
        return [Descriptor.from_json(m) for m in self.json.get("layers") or []]

    @property
    def blobs(self) -> list[Descriptor]:
        """Config then layers of an image manifest (empty for an index)."""
        cfg = self.config
        return ([cfg] if cfg else []) + self.layers

    @property
    def subject(self) -> Descriptor | None:
        sub = self.json.get("subject")
        return Descriptor.from_json(sub) if sub else None

    def check_supported(self) -> None:
        """Raise `UnsupportedManifest` for schema 1 or an unknown media type."""
        if self.media_type in SCHEMA1_TYPES:
            raise UnsupportedManifest(f"manifest {self.digest} is Docker schema 1, which is not copied")
        if self.media_type not in MANIFEST_TYPES:
            raise UnsupportedManifest(f"manifest {self.digest} has unsupported media type {self.media_type!r}")
        self.check_descriptors()

    def check_descriptors(self) -> None:
        """Raise `UnsupportedManifest` unless every descriptor (children, config, layers) is well formed.

        Digests come from the source: they are checked here, on arrival, before any of them is used in
        a request (or a path) of the destination.
        """
        try:
            descriptors = self.children + self.blobs
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as e:
            raise UnsupportedManifest(
                f"manifest {self.digest} has a malformed descriptor ({type(e).__name__}: {e})"
            ) from None
        for d in descriptors:
            if not is_digest(d.digest):
                raise UnsupportedManifest(f"manifest {self.digest} lists an invalid digest {d.digest[:100]!r}")
            if d.size < 0:
                raise UnsupportedManifest(f"manifest {self.digest} gives {d.digest} a negative size ({d.size})")


def detect_media_type(data: bytes, declared: str | None = None) -> str:
    """The media type of manifest *data*: its ``mediaType`` field, else *declared*, else by shape."""
    try:
        obj = json.loads(data)
    except ValueError:
        return declared or ""
    if isinstance(obj, dict):
        mt = obj.get("mediaType")
        if isinstance(mt, str) and mt:
            return mt
        if declared and declared not in ("application/json", "application/octet-stream", "text/plain"):
            return declared
        if "manifests" in obj:
            return OCI_INDEX
        if "config" in obj:
            return OCI_MANIFEST
        if obj.get("schemaVersion") == 1:
            return DOCKER_SCHEMA1
    return declared or ""
