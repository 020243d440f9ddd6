"""Build realistic images in memory from a seed and write them to a registry or any `Store`.

Everything is deterministic: the same seed (and ``generation``) gives the same bytes and digests, a
new ``generation`` is a "rebuild" (new top layers and config, same base layers). Builders return
value objects (`Blob`, `Image`, `Index`) that carry every digest and size, so tests can assert on
what a copy should produce. The pusher is deliberately independent of hubmirror's own registry
client: it speaks the distribution API directly with aiohttp (Basic or bearer-token auth). `put`
writes the same output into any `hubmirror.store.Store` (a registry or an OCI layout) through the
Store protocol instead. Both write in the order a registry requires (reference §D.7): blobs,
child manifests by digest, then the top manifest by digest and tags.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import hashlib
import io
import json
import random
import re
import tarfile
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar
from urllib.parse import urljoin

import aiohttp

from .._errors import AuthError, RegistryError
from ..media import (
    ATTESTATION_REF_DIGEST,
    ATTESTATION_REF_TYPE,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    Manifest,
)
from ..platform import Platform
from ..store import Store

Seed = int | str
Format = Literal["oci", "docker"]

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
OCI_NONDISTRIBUTABLE_LAYER = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
IN_TOTO = "application/vnd.in-toto+json"

#: The platforms of a typical official image, in Hub's order.
PLATFORMS = (
    "linux/amd64",
    "linux/arm/v7",
    "linux/arm64/v8",
    "linux/386",
    "linux/ppc64le",
    "linux/s390x",
    "windows/amd64",
)
WINDOWS_VERSION = "10.0.20348.2340"
_CREATED = "2024-01-{day:02d}T00:00:00Z"


def _seed_bytes(seed: Seed, *parts: object) -> bytes:
    return hashlib.sha256("/".join(str(p) for p in (seed, *parts)).encode()).digest()


def random_bytes(seed: Seed, size: int) -> bytes:
    """*size* deterministic pseudo-random bytes for *seed*."""
    return random.Random(_seed_bytes(seed)).randbytes(size)


def _dump(obj: Any) -> bytes:
    # Indented like docker's own manifests: a client that re-serialises JSON changes the digest.
    return json.dumps(obj, indent=3).encode()


# -- value objects --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Blob:
    """A config or layer. ``data`` is None for a streamed blob (see ``stream``) or a foreign layer."""

    media_type: str
    digest: str
    size: int
    data: bytes | None = field(default=None, repr=False)
    urls: tuple[str, ...] = ()
    annotations: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    stream: Callable[[], Iterator[bytes]] | None = field(default=None, repr=False, compare=False)

    @property
    def is_foreign(self) -> bool:
        """A foreign (Windows) layer: referenced by URL, never pushed."""
        return bool(self.urls)

    def chunks(self) -> Iterator[bytes]:
        """The blob's bytes, in chunks (one chunk for an in-memory blob)."""
        if self.stream is not None:
            yield from self.stream()
        elif self.data is not None:
            yield self.data
        else:
            raise ValueError(f"blob {self.digest} has no content (foreign layer)")

    def descriptor(self) -> dict[str, Any]:
        d: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.urls:
            d["urls"] = list(self.urls)
        if self.annotations:
            d["annotations"] = dict(self.annotations)
        return d


class _Pushed:
    """What `Image` and `Index` share: a manifest, named by its digest."""

    manifest: Manifest

    @property
    def digest(self) -> str:
        return self.manifest.digest

    @property
    def size(self) -> int:
        return self.manifest.size

    @property
    def media_type(self) -> str:
        return self.manifest.media_type


@dataclass(frozen=True)
class Image(_Pushed):
    """A single-platform image manifest with its config and layers."""

    manifest: Manifest
    config: Blob
    layers: tuple[Blob, ...]
    platform: Platform

    @property
    def blobs(self) -> tuple[Blob, ...]:
        """Config then layers, foreign layers included."""
        return (self.config, *self.layers)

    @property
    def blob_digests(self) -> list[str]:
        """Digests of the blobs a registry stores for this image (foreign layers excluded)."""
        return [b.digest for b in self.blobs if not b.is_foreign]


@dataclass(frozen=True)
class Index(_Pushed):
    """An OCI index or Docker manifest list with its platform images and attestation manifests."""

    manifest: Manifest
    images: tuple[Image, ...]
    attestations: tuple[Image, ...] = ()

    @property
    def children(self) -> tuple[Image, ...]:
        """Every child manifest, in the index's order (images, then attestations)."""
        return (*self.images, *self.attestations)

    @property
    def child_digests(self) -> list[str]:
        return [c.digest for c in self.children]

    @property
    def blobs(self) -> tuple[Blob, ...]:
        """Every blob of every child (foreign layers included), without duplicates, in first-use order."""
        return tuple({b.digest: b for c in self.children for b in c.blobs}.values())

    @property
    def blob_digests(self) -> list[str]:
        """Every stored blob of every child (foreign layers excluded), without duplicates, in first-use order."""
        return [b.digest for b in self.blobs if not b.is_foreign]

    @property
    def platforms(self) -> list[Platform]:
        return [i.platform for i in self.images]

    def image(self, platform: str | Platform) -> Image:
        """The child image for *platform* (matched as containerd normalises it)."""
        wanted = Platform.parse(platform) if isinstance(platform, str) else platform
        for img in self.images:
            if img.platform.matches(wanted):
                return img
        raise KeyError(f"no {wanted} image in index {self.digest}")


Pushable = Image | Index


# -- builders -------------------------------------------------------------------------------------


def layer(seed: Seed, size: int = 1024, *, media_type: str = OCI_LAYER) -> Blob:
    """A layer of *size* random bytes (deterministic for *seed*)."""
    data = random_bytes(seed, size)
    return Blob(media_type, "sha256:" + hashlib.sha256(data).hexdigest(), size, data)


def tar_layer(seed: Seed, size: int = 1024, *, media_type: str = OCI_LAYER) -> Blob:
    """A layer that is a real (uncompressed) tar holding one file of *size* random bytes, for consumers
    that unpack what they pull (containerd, podman); deterministic for *seed*."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(f"hubmirror-{hashlib.sha256(str(seed).encode()).hexdigest()[:12]}")
        info.size, info.mtime, info.mode = size, 0, 0o644
        tar.addfile(info, io.BytesIO(random_bytes(seed, size)))
    data = buf.getvalue()
    return Blob(media_type, "sha256:" + hashlib.sha256(data).hexdigest(), len(data), data)


def base_layer(name: str, size: int = 4096, *, fmt: Format = "oci") -> Blob:
    """A "base image" layer (``debian``, ``alpine`` …) to share between images and repositories."""
    return layer(f"base:{name}", size, media_type=OCI_LAYER if fmt == "oci" else DOCKER_LAYER)


def streamed_layer(seed: Seed, size: int, *, chunk_size: int = 1 << 20, media_type: str = OCI_LAYER) -> Blob:
    """A large layer generated chunk by chunk, never held in memory (one pass now for the digest)."""

    def gen() -> Iterator[bytes]:
        left, i = size, 0
        while left > 0:
            n = min(chunk_size, left)
            yield random.Random(_seed_bytes(seed, "chunk", i)).randbytes(n)
            left -= n
            i += 1

    h = hashlib.sha256()
    for chunk in gen():
        h.update(chunk)
    return Blob(media_type, "sha256:" + h.hexdigest(), size, None, stream=gen)


def foreign_layer(seed: Seed, size: int = 1 << 20, *, fmt: Format = "docker") -> Blob:
    """A Windows foreign base layer: referenced by an MCR URL; its bytes are never pushed."""
    digest = "sha256:" + hashlib.sha256(_seed_bytes(seed, "foreign")).hexdigest()
    mt = DOCKER_FOREIGN_LAYER if fmt == "docker" else OCI_NONDISTRIBUTABLE_LAYER
    url = f"https://mcr.microsoft.com/v2/windows/servercore/blobs/{digest}"
    return Blob(mt, digest, size, None, urls=(url,))


def _platform(platform: str | Platform) -> Platform:
    p = Platform.parse(platform) if isinstance(platform, str) else platform
    if p.os == "windows" and not p.os_version:
        p = Platform(p.os, p.architecture, p.variant, WINDOWS_VERSION)
    return p


def _platform_json(p: Platform) -> dict[str, str]:
    d = {"architecture": p.architecture, "os": p.os}
    if p.os_version:
        d["os.version"] = p.os_version
    if p.variant:
        d["variant"] = p.variant
    return d


def _manifest(fmt: Format, config: Blob, layers: Sequence[Blob], annotations: dict[str, str] | None) -> Manifest:
    media_type = OCI_MANIFEST if fmt == "oci" else DOCKER_MANIFEST
    obj: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": config.descriptor(),
        "layers": [b.descriptor() for b in layers],
    }
    if annotations and fmt == "oci":
        obj["annotations"] = annotations
    return Manifest(_dump(obj), media_type)


def image(
    seed: Seed,
    platform: str | Platform = "linux/amd64",
    *,
    layers: Sequence[int | Blob] = (1024,),
    base: Sequence[Blob] = (),
    fmt: Format = "oci",
    foreign: bool = False,
    generation: int = 0,
) -> Image:
    """A single-platform image: *base* layers, then (for ints in *layers*) fresh random layers.

    ``foreign=True`` puts a Windows foreign layer first. ``generation`` > 0 rebuilds: the *base*
    layers stay, the generated layers and the config change.
    """
    p = _platform(platform)
    layer_type = OCI_LAYER if fmt == "oci" else DOCKER_LAYER
    own: list[Blob] = []
    for i, spec in enumerate(layers):
        own.append(
            layer(f"{seed}/{p}/{generation}/{i}", spec, media_type=layer_type) if isinstance(spec, int) else spec
        )
    all_layers = ([foreign_layer(seed, fmt=fmt)] if foreign else []) + list(base) + own
    created = _CREATED.format(day=1 + generation % 28)
    cfg: dict[str, Any] = {
        "architecture": p.architecture,
        "os": p.os,
        **({"os.version": p.os_version} if p.os_version else {}),
        **({"variant": p.variant} if p.variant else {}),
        "created": created,
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["sh"],
            "Labels": {"org.hubmirror.test.seed": str(seed), "org.hubmirror.test.generation": str(generation)},
        },
        "rootfs": {"type": "layers", "diff_ids": [b.digest for b in all_layers]},
        "history": [{"created": created, "created_by": f"hubmirror.testing layer {i}"} for i in range(len(all_layers))],
    }
    data = _dump(cfg)
    config = Blob(
        OCI_CONFIG if fmt == "oci" else DOCKER_CONFIG, "sha256:" + hashlib.sha256(data).hexdigest(), len(data), data
    )
    return Image(_manifest(fmt, config, all_layers, None), config, tuple(all_layers), p)


def attestation(of: Image, seed: Seed = 0) -> Image:
    """A BuildKit attestation manifest (SBOM + provenance in-toto layers) for image *of*."""
    predicates = ("https://spdx.dev/Document", "https://slsa.dev/provenance/v0.2")
    layers = []
    for pred in predicates:
        stmt = {
            "_type": "https://in-toto.io/Statement/v0.1",
            "predicateType": pred,
            "subject": [{"name": "pkg:docker/test", "digest": {"sha256": of.digest.split(":", 1)[1]}}],
            "predicate": {"seed": str(seed), "noise": random_bytes(f"{seed}/{of.digest}/{pred}", 16).hex()},
        }
        data = _dump(stmt)
        layers.append(
            Blob(
                IN_TOTO,
                "sha256:" + hashlib.sha256(data).hexdigest(),
                len(data),
                data,
                annotations={"in-toto.io/predicate-type": pred},
            )
        )
    cfg = json.dumps({"architecture": "unknown", "os": "unknown", "config": {}, "rootfs": {"type": "layers"}}).encode()
    config = Blob(OCI_CONFIG, "sha256:" + hashlib.sha256(cfg).hexdigest(), len(cfg), cfg)
    return Image(_manifest("oci", config, layers, None), config, tuple(layers), Platform("unknown", "unknown"))


def index(
    seed: Seed,
    platforms: Iterable[str | Platform] = ("linux/amd64", "linux/arm64/v8"),
    *,
    fmt: Format = "oci",
    attestations: bool | None = None,
    layers: Sequence[int | Blob] = (1024,),
    base: Sequence[Blob] | Callable[[Platform], Sequence[Blob]] = (),
    foreign_windows: bool = False,
    generation: int = 0,
    annotations: dict[str, str] | None = None,
) -> Index:
    """A multi-platform image: an OCI index (``fmt="oci"``) or a Docker manifest list (``"docker"``).

    Attestation manifests (one per image, ``unknown/unknown``) are added by default for OCI indexes,
    as BuildKit does for official images. Windows children get a foreign layer if *foreign_windows*.
    *base* is the same for every platform, or a function of the platform (real base images have
    per-platform layers, e.g. ``lambda p: [base_layer(f"debian/{p}")]``).
    """
    with_att = (fmt == "oci") if attestations is None else attestations
    images = tuple(
        image(
            seed,
            p,
            layers=layers,
            base=base(_platform(p)) if callable(base) else base,
            fmt=fmt,
            foreign=foreign_windows and _platform(p).os == "windows",
            generation=generation,
        )
        for p in platforms
    )
    atts = tuple(attestation(img, f"{seed}/{generation}") for img in images) if with_att else ()
    entries: list[dict[str, Any]] = [
        {"mediaType": img.media_type, "digest": img.digest, "size": img.size, "platform": _platform_json(img.platform)}
        for img in images
    ]
    for img, att in zip(images[: len(atts)], atts, strict=True):
        entries.append(
            {
                "mediaType": att.media_type,
                "digest": att.digest,
                "size": att.size,
                "annotations": {ATTESTATION_REF_DIGEST: img.digest, ATTESTATION_REF_TYPE: "attestation-manifest"},
                "platform": {"architecture": "unknown", "os": "unknown"},
            }
        )
    media_type = OCI_INDEX if fmt == "oci" else DOCKER_LIST
    obj: dict[str, Any] = {"schemaVersion": 2, "mediaType": media_type, "manifests": entries}
    if annotations and fmt == "oci":
        obj["annotations"] = annotations
    return Index(Manifest(_dump(obj), media_type), images, atts)


def manifest_list(seed: Seed, platforms: Iterable[str | Platform] = PLATFORMS, **kwargs: Any) -> Index:
    """A Docker manifest list (no attestations), by default over all of `PLATFORMS`."""
    return index(seed, platforms, fmt="docker", attestations=False, **kwargs)


# -- signatures and referrers (cosign, OCI 1.1) ---------------------------------------------------

COSIGN_SIGNATURE = "application/vnd.dev.cosign.simplesigning.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
SPDX = "application/spdx+json"


def _blob(media_type: str, data: bytes, annotations: dict[str, str] | None = None) -> Blob:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    return Blob(media_type, digest, len(data), data, annotations=annotations or {})


def cosign_tag(subject: str, kind: str = "sig") -> str:
    """cosign's tag for a signature (``sig``), attestation (``att``) or SBOM (``sbom``) of *subject*."""
    return f"{subject.replace(':', '-', 1)}.{kind}"


def cosign_signature(subject: str, seed: Seed = 0, *, reference: str = "registry.example/app") -> Image:
    """A cosign signature manifest for digest *subject*, shaped as ``cosign sign`` writes it: an OCI
    manifest whose layer is the simple-signing payload, the signature in its annotation."""
    payload = _dump(
        {
            "critical": {
                "identity": {"docker-reference": reference},
                "image": {"docker-manifest-digest": subject},
                "type": "cosign container image signature",
            },
            "optional": None,
        }
    )
    sig = base64.b64encode(random_bytes(f"cosign/{seed}/{subject}", 64)).decode()
    layer = _blob(COSIGN_SIGNATURE, payload, {"dev.cosignproject.cosign/signature": sig})
    cfg = _dump(
        {
            "architecture": "",
            "os": "",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [layer.digest]},
        }
    )
    config = _blob(OCI_CONFIG, cfg)
    return Image(_manifest("oci", config, [layer], None), config, (layer,), Platform("unknown", "unknown"))


def referrer(subject: Image | Index, seed: Seed = 0, *, artifact_type: str = SPDX) -> Image:
    """An OCI 1.1 artifact (an SBOM by default) whose ``subject`` is *subject*, as ``oras attach`` makes."""
    sbom = _blob(artifact_type, _dump({"spdxVersion": "SPDX-2.3", "name": str(seed), "subject": subject.digest}))
    empty = _blob(OCI_EMPTY, b"{}")
    obj: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": empty.descriptor(),
        "layers": [sbom.descriptor()],
        "subject": {"mediaType": subject.media_type, "digest": subject.digest, "size": subject.size},
        "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
    }
    return Image(Manifest(_dump(obj), OCI_MANIFEST), empty, (sbom,), Platform("unknown", "unknown"))


def referrers_index(referrers: Sequence[Image]) -> Index:
    """The referrers tag-schema index (tag ``sha256-<hex>`` of the subject) listing *referrers*, for
    registries without the referrers API (Distribution 2.8)."""
    entries = []
    for r in referrers:
        obj = r.manifest.json
        entry: dict[str, Any] = {"mediaType": r.media_type, "digest": r.digest, "size": r.size}
        if obj.get("artifactType"):
            entry["artifactType"] = obj["artifactType"]
        if obj.get("annotations"):
            entry["annotations"] = obj["annotations"]
        entries.append(entry)
    data = _dump({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})
    return Index(Manifest(data, OCI_INDEX), tuple(referrers), ())


# -- pushing --------------------------------------------------------------------------------------

_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


class Pusher:
    """Push builders' output to a registry at *url* (``http://127.0.0.1:PORT``) with aiohttp.

    Handles no auth, Basic auth (a plain htpasswd registry) and Docker-style bearer tokens (the Hub
    emulator with ``allow_push``). Blobs the repository already has are skipped.
    """

    def __init__(self, url: str, *, auth: tuple[str, str] | None = None, concurrency: int = 4) -> None:
        self.url = url.rstrip("/")
        self._basic = aiohttp.encode_basic_auth(*auth) if auth else None
        self._tokens: dict[str, str] = {}
        self._sem = asyncio.Semaphore(concurrency)
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"Pusher(url={self.url!r})"

    async def __aenter__(self) -> Pusher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))
        return self._session

    async def _request(
        self, method: str, url: str, repo: str, *, data: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """One request with auth; a bearer challenge is answered once (only for replayable bodies)."""
        for attempt in range(2):
            hdrs = dict(headers or {})
            token = self._tokens.get(repo)
            if token:
                hdrs["Authorization"] = f"Bearer {token}"
            elif self._basic:
                hdrs["Authorization"] = self._basic
            async with self._http().request(method, url, data=data, headers=hdrs, allow_redirects=False) as resp:
                body = await resp.read()
                challenge = resp.headers.get("WWW-Authenticate", "")
                if resp.status == 401 and attempt == 0 and challenge.lower().startswith("bearer "):
                    if not isinstance(data, bytes | None):
                        raise AuthError(f"push to {self.url}/{repo}: bearer challenge on a streamed body")
                    await self._fetch_token(repo, challenge)
                    continue
                return resp.status, dict(resp.headers), body
        raise AuthError(f"push to {self.url}/{repo}: still unauthorised after a token", status=401, repository=repo)

    async def _fetch_token(self, repo: str, challenge: str) -> None:
        params = dict(_CHALLENGE_PARAM.findall(challenge))
        query = {"service": params.get("service", "")}
        query["scope"] = f"repository:{repo}:pull,push"
        headers = {"Authorization": self._basic} if self._basic else {}
        async with self._http().get(params["realm"], params=query, headers=headers) as resp:
            if resp.status != 200:
                raise AuthError(f"token for {repo} refused by {params['realm']}: {resp.status}", status=resp.status)
            obj = await resp.json()
        self._tokens[repo] = str(obj.get("token") or obj.get("access_token"))

    def _fail(self, what: str, repo: str, status: int, body: bytes) -> RegistryError:
        cls = AuthError if status in (401, 403) else RegistryError
        text = body[:300].decode(errors="replace")
        return cls(
            f"{what} in {self.url}/{repo}: HTTP {status} {text}", status=status, registry=self.url, repository=repo
        )

    async def push_blob(self, repo: str, blob: Blob) -> bool:
        """Upload *blob* unless present (foreign layers are skipped); True if it was uploaded."""
        if blob.is_foreign:
            return False
        async with self._sem:
            status, _, _ = await self._request("HEAD", f"{self.url}/v2/{repo}/blobs/{blob.digest}", repo)
            if status == 200:
                return False
            status, headers, body = await self._request(
                "POST", f"{self.url}/v2/{repo}/blobs/uploads/", repo, data=b"", headers={"Content-Length": "0"}
            )
            if status != 202:
                raise self._fail(f"starting the upload of {blob.digest}", repo, status, body)
            loc = urljoin(f"{self.url}/v2/{repo}/blobs/uploads/", headers["Location"])
            loc += ("&" if "?" in loc else "?") + f"digest={blob.digest}"
            data: Any = blob.data if blob.data is not None else _aiter(blob.chunks())
            status, _, body = await self._request(
                "PUT",
                loc,
                repo,
                data=data,
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(blob.size)},
            )
            if status != 201:
                raise self._fail(f"uploading blob {blob.digest}", repo, status, body)
            return True

    async def put_manifest(self, repo: str, ref: str, manifest: Manifest) -> None:
        status, _, body = await self._request(
            "PUT",
            f"{self.url}/v2/{repo}/manifests/{ref}",
            repo,
            data=manifest.data,
            headers={"Content-Type": manifest.media_type},
        )
        if status != 201:
            raise self._fail(f"putting manifest {repo}:{ref}", repo, status, body)

    async def push(self, repo: str, thing: Pushable, tags: Iterable[str] = ()) -> Pushable:
        """Push *thing*: blobs, child manifests by digest, then the top manifest by digest and *tags*."""
        await _write_in_order(
            thing,
            tags,
            lambda blob: self.push_blob(repo, blob),
            lambda ref, manifest: self.put_manifest(repo, ref, manifest),
        )
        return thing


async def _write_in_order(
    thing: Pushable,
    tags: Iterable[str],
    put_blob: Callable[[Blob], Awaitable[object]],
    put_manifest: Callable[[str, Manifest], Awaitable[None]],
) -> None:
    """Write *thing* in the order a registry requires (reference §D.7): every blob but foreign layers
    (concurrently), every child manifest by digest, then the top manifest by digest and by each tag."""
    blobs = thing.blobs if isinstance(thing, Index) else tuple({b.digest: b for b in thing.blobs}.values())
    await asyncio.gather(*(put_blob(b) for b in blobs if not b.is_foreign))
    if isinstance(thing, Index):
        await asyncio.gather(*(put_manifest(c.digest, c.manifest) for c in thing.children))
    await put_manifest(thing.digest, thing.manifest)
    for tag in tags:
        await put_manifest(tag, thing.manifest)


async def _aiter(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def _target(target: Any, auth: tuple[str, str] | None) -> tuple[str, tuple[str, str] | None]:
    """A URL and credentials for a `Registry`, a `HubEmulator` or a URL string."""
    if isinstance(target, str):
        url = target if "://" in target else f"http://{target}"
        return url, auth
    if auth is None and getattr(target, "username", None) and getattr(target, "password", None):
        auth = (target.username, target.password)
    return str(target.url), auth


P = TypeVar("P", Image, Index)


async def push(target: Any, repo: str, thing: P, tags: Iterable[str] = (), *, auth: tuple[str, str] | None = None) -> P:
    """Push *thing* to *repo* in *target* (a `Registry`, `HubEmulator` or URL) and tag it; returns it."""
    url, creds = _target(target, auth)
    async with Pusher(url, auth=creds) as p:
        await p.push(repo, thing, tags)
    return thing


T = TypeVar("T")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run *coro* to completion from synchronous code, even inside a running event loop's thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def put(store: Store, repo: str, thing: P, tags: Iterable[str] = (), *, concurrency: int = 4) -> P:
    """Write *thing* into *repo* of *store* (a `RegistryStore`, an `OCILayoutStore` …) through the
    Store protocol, in `push`'s order; blobs the store already has are skipped. Returns *thing*."""
    sem = asyncio.Semaphore(concurrency)

    async def put_blob(blob: Blob) -> None:
        desc = Descriptor(blob.media_type, blob.digest, blob.size)
        async with sem:
            if not await store.has_blob(repo, desc):
                await store.put_blob(repo, desc, _aiter(blob.chunks()))

    await _write_in_order(thing, tags, put_blob, lambda ref, manifest: store.put_manifest(repo, ref, manifest))
    return thing


def push_sync(target: Any, repo: str, thing: P, tags: Iterable[str] = (), *, auth: tuple[str, str] | None = None) -> P:
    """Blocking `push`, for synchronous tests and the demo."""
    return run_sync(push(target, repo, thing, list(tags), auth=auth))
