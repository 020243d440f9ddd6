"""`RegistryClient` and `RegistryStore` against real Distribution registries on loopback."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from _auth import PASSWORD, USER
from hubmirror import AuthError, DigestMismatch, ManifestTooLarge, NotFound, RegistryError
from hubmirror.media import DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, Descriptor, Manifest
from hubmirror.registry import ClientOptions, Credentials, RegistryClient, RetryPolicy
from hubmirror.registry import client as client_mod
from hubmirror.store import Store
from hubmirror.store.registry import RegistryStore
from hubmirror.testing.registry import Registry

FAST = RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.01)


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def chunks_of(data: bytes, n: int = 50_000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), n):
        yield data[i : i + n]


def uploads_dir(reg: Registry, repo: str) -> Path:
    return reg.root / "data" / "docker" / "registry" / "v2" / "repositories" / repo / "_uploads"


def open_sessions(reg: Registry, repo: str) -> list[str]:
    """Upload sessions the registry still holds for *repo*.

    Distribution's cancel (DELETE) removes a session's ``data`` and ``startedat`` but leaves an empty
    ``hashstates`` directory behind, so a live session is one that still has ``startedat``.
    """
    d = uploads_dir(reg, repo)
    return sorted(p.name for p in d.iterdir() if (p / "startedat").exists()) if d.exists() else []


@pytest.fixture
async def client(registry: Registry) -> AsyncIterator[RegistryClient]:
    c = RegistryClient(registry.host, anonymous=True, retry=FAST)
    yield c
    await c.close()


async def push_bytes(c: RegistryClient, repo: str, data: bytes) -> str:
    d = digest_of(data)
    await c.push_blob(repo, d, chunks_of(data), len(data))
    return d


async def read_blob(c: RegistryClient, repo: str, digest: str) -> bytes:
    async with c.open_blob(repo, digest) as stream:
        return b"".join([chunk async for chunk in stream])


def image_manifest(media_type: str, config: tuple[str, int], layers: list[tuple[str, int]]) -> Manifest:
    cfg_type = (
        "application/vnd.oci.image.config.v1+json"
        if media_type == OCI_MANIFEST
        else "application/vnd.docker.container.image.v1+json"
    )
    layer_type = (
        "application/vnd.oci.image.layer.v1.tar+gzip"
        if media_type == OCI_MANIFEST
        else "application/vnd.docker.image.rootfs.diff.tar.gzip"
    )
    obj = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {"mediaType": cfg_type, "digest": config[0], "size": config[1]},
        "layers": [{"mediaType": layer_type, "digest": d, "size": s} for d, s in layers],
    }
    return Manifest(json.dumps(obj, indent=3).encode(), media_type)


def index_manifest(media_type: str, children: list[tuple[Manifest, str]]) -> Manifest:
    obj = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": [
            {
                "mediaType": m.media_type,
                "digest": m.digest,
                "size": m.size,
                "platform": {"os": "linux", "architecture": arch},
            }
            for m, arch in children
        ],
    }
    return Manifest(json.dumps(obj).encode(), media_type)


async def push_image(c: RegistryClient, repo: str, media_type: str = OCI_MANIFEST, seed: str = "") -> Manifest:
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed + repo}).encode()
    layer = os.urandom(3000)
    await push_bytes(c, repo, cfg)
    await push_bytes(c, repo, layer)
    m = image_manifest(media_type, (digest_of(cfg), len(cfg)), [(digest_of(layer), len(layer))])
    await c.put_manifest(repo, m.digest, m)
    return m


# -- blobs -----------------------------------------------------------------------------------------


async def test_monolithic_upload_round_trip(client: RegistryClient, registry: Registry, repo_name: str) -> None:
    data = os.urandom(300_000)
    d = await push_bytes(client, repo_name, data)
    assert await client.head_blob(repo_name, d) == len(data)
    assert await read_blob(client, repo_name, d) == data
    assert await client.head_blob(repo_name, digest_of(b"nope")) is None
    assert client.stats.blob_uploads == 1
    assert client.stats.blob_bytes_written == len(data)
    assert client.stats.blob_bytes_read == len(data)
    assert open_sessions(registry, repo_name) == []


async def test_chunked_upload_sends_several_patches(registry: Registry, repo_name: str) -> None:
    c = RegistryClient(registry.host, anonymous=True, retry=FAST, upload_chunk_size=70_000)
    try:
        data = os.urandom(250_001)  # 4 PATCHes: 3 full, 1 short
        d = digest_of(data)
        await c.push_blob_chunked(repo_name, d, chunks_of(data, 33_333))
        assert await c.head_blob(repo_name, d) == len(data)
        assert await read_blob(c, repo_name, d) == data
        assert open_sessions(registry, repo_name) == []
    finally:
        await c.close()


async def test_failed_chunked_upload_deletes_its_session(
    client: RegistryClient, registry: Registry, repo_name: str
) -> None:
    data = os.urandom(100_000)
    wrong = digest_of(b"something else")
    with pytest.raises(RegistryError) as exc:
        await client.push_blob_chunked(repo_name, wrong, chunks_of(data))
    assert exc.value.code == "DIGEST_INVALID"

    async def broken() -> AsyncIterator[bytes]:
        yield data[:1000]
        raise OSError("source went away")

    with pytest.raises(OSError, match="source went away"):
        await client.push_blob_chunked(repo_name, digest_of(data), broken())
    assert await client.head_blob(repo_name, wrong) is None
    assert await client.head_blob(repo_name, digest_of(data)) is None
    assert open_sessions(registry, repo_name) == []


async def test_monolithic_upload_with_wrong_digest_commits_nothing(client: RegistryClient, repo_name: str) -> None:
    # Distribution cannot cancel this session afterwards (its _state no longer matches the bytes
    # received, so DELETE answers BLOB_UPLOAD_INVALID); its upload purger removes it later.
    data = os.urandom(100_000)
    wrong = digest_of(b"something else")
    with pytest.raises(RegistryError) as exc:
        await client.push_blob(repo_name, wrong, chunks_of(data), len(data))
    assert exc.value.code == "DIGEST_INVALID" and wrong in str(exc.value)
    assert await client.head_blob(repo_name, wrong) is None
    assert await client.head_blob(repo_name, digest_of(data)) is None


async def test_mount_across_repositories(client: RegistryClient, registry: Registry, repo_name: str) -> None:
    data = os.urandom(10_000)
    src, dst = repo_name + "/src", repo_name + "/dst"
    d = await push_bytes(client, src, data)
    assert await client.head_blob(dst, d) is None  # blobs are linked per repository
    assert await client.mount_blob(dst, d, src) is True
    assert await client.head_blob(dst, d) == len(data)
    assert client.stats.blob_mounts == 1


async def test_refused_mount_leaves_no_open_session(client: RegistryClient, registry: Registry, repo_name: str) -> None:
    missing = digest_of(b"not anywhere")
    assert await client.mount_blob(repo_name + "/dst", missing, repo_name + "/src") is False
    assert open_sessions(registry, repo_name + "/dst") == []
    assert await client.head_blob(repo_name + "/dst", missing) is None


async def test_open_blob_chunk_sizes(client: RegistryClient, repo_name: str) -> None:
    data = os.urandom(3 * 1024 * 1024 + 123)
    d = await push_bytes(client, repo_name, data)
    async with client.open_blob(repo_name, d) as stream:
        sizes = [len(c) async for c in stream]
    assert sum(sizes) == len(data)
    # What aiohttp has buffered is passed on as it is (no re-chunking copies): at most READ_CHUNK, never
    # empty; how small a piece is depends on how busy the machine is, so no lower bound is asserted.
    assert all(0 < s <= client_mod.READ_CHUNK for s in sizes)
    with pytest.raises(NotFound):
        async with client.open_blob(repo_name, digest_of(b"absent")):
            pass


# -- manifests -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("image_type", "index_type"), [(OCI_MANIFEST, OCI_INDEX), (DOCKER_MANIFEST, DOCKER_LIST)])
async def test_manifests_of_each_media_type(
    client: RegistryClient, repo_name: str, image_type: str, index_type: str
) -> None:
    amd = await push_image(client, repo_name, image_type, "amd64")
    arm = await push_image(client, repo_name, image_type, "arm64")
    idx = index_manifest(index_type, [(amd, "amd64"), (arm, "arm64")])
    assert await client.put_manifest(repo_name, "1.0", idx) == idx.digest
    await client.put_manifest(repo_name, "1", idx)

    head = await client.head_manifest(repo_name, "1.0")
    assert head == Descriptor(index_type, idx.digest, idx.size)
    got = await client.get_manifest(repo_name, "1.0")
    assert got.data == idx.data and got.media_type == index_type
    by_digest = await client.get_manifest(repo_name, amd.digest)
    assert by_digest.data == amd.data and by_digest.media_type == image_type  # exact bytes, indent kept
    child_head = await client.head_manifest(repo_name, arm.digest)
    assert child_head is not None and child_head.media_type == image_type
    assert client.stats.manifest_gets == 2 and client.stats.manifest_heads == 2
    assert client.stats.manifest_puts == 4
    assert client.ratelimit is None  # a plain registry sends no ratelimit headers


async def test_missing_manifests(client: RegistryClient, repo_name: str) -> None:
    assert await client.head_manifest(repo_name, "nope") is None
    with pytest.raises(NotFound) as exc:
        await client.get_manifest(repo_name, "nope")
    assert exc.value.code in ("MANIFEST_UNKNOWN", "NAME_UNKNOWN")
    assert f"{repo_name}:nope" in str(exc.value)


async def test_index_before_children_is_refused(client: RegistryClient, repo_name: str) -> None:
    ghost = Manifest(b'{"schemaVersion":2}', OCI_MANIFEST)
    idx = index_manifest(OCI_INDEX, [(ghost, "amd64")])
    with pytest.raises(RegistryError) as exc:
        await client.put_manifest(repo_name, "x", idx)
    assert exc.value.code == "MANIFEST_BLOB_UNKNOWN"


async def test_manifest_cap(client: RegistryClient, repo_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    m = await push_image(client, repo_name)
    monkeypatch.setattr(client_mod, "MAX_MANIFEST_SIZE", m.size - 1)
    with pytest.raises(ManifestTooLarge, match="exceeds"):
        await client.get_manifest(repo_name, m.digest)


async def test_get_by_digest_verifies_bytes(client: RegistryClient, registry: Registry, repo_name: str) -> None:
    m = await push_image(client, repo_name)
    # Corrupt the stored manifest on disk: the registry serves the bad bytes under the old digest.
    blob = registry.root / "data/docker/registry/v2/blobs/sha256" / m.digest[7:9] / m.digest[7:] / "data"
    blob.write_bytes(m.data.replace(b"linux", b"LINUX") if b"linux" in m.data else m.data + b" ")
    with pytest.raises(DigestMismatch, match=m.digest):
        await client.get_manifest(repo_name, m.digest)


async def test_tags_and_delete(client: RegistryClient, repo_name: str) -> None:
    assert await client.list_tags(repo_name) == []
    m = await push_image(client, repo_name)
    other = await push_image(client, repo_name, seed="other")
    for tag in ("b", "a", "8.5.10RC1"):
        await client.put_manifest(repo_name, tag, m)
    await client.put_manifest(repo_name, "keep", other)
    assert sorted(await client.list_tags(repo_name)) == ["8.5.10RC1", "a", "b", "keep"]
    await client.delete_manifest(repo_name, m.digest)  # removes every tag on that digest (§D.13.9)
    assert await client.head_manifest(repo_name, "a") is None
    assert await client.list_tags(repo_name) == ["keep"]
    with pytest.raises(RegistryError):
        await client.delete_manifest(repo_name, "keep")  # v2.8 cannot delete by tag


# -- authentication --------------------------------------------------------------------------------


def write_config(tmp_path: Path, host: str, user: str, password: str) -> Path:
    import base64

    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"auths": {host: {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}}}))
    return cfg


async def test_basic_auth_from_config_json(auth_registry: Registry, tmp_path: Path, repo_name: str) -> None:
    cfg = write_config(tmp_path, auth_registry.host, USER, PASSWORD)
    store = RegistryStore(auth_registry.host, ClientOptions(authfile=cfg, retry=FAST))
    try:
        assert isinstance(store, Store)
        data = os.urandom(5000)
        desc = Descriptor("application/octet-stream", digest_of(data), len(data))
        await store.put_blob(repo_name, desc, chunks_of(data))
        assert await store.has_blob(repo_name, desc)
        async with store.open_blob(repo_name, desc) as stream:
            assert b"".join([c async for c in stream]) == data
        assert store.client.auth_scheme == "basic"
        assert store.name == auth_registry.host
    finally:
        await store.close()


async def test_wrong_password_is_an_auth_error_without_the_password(
    auth_registry: Registry, tmp_path: Path, repo_name: str
) -> None:
    wrong = "Wr0ng-Secret-Value-xyz"
    cfg = write_config(tmp_path, auth_registry.host, USER, wrong)
    c = RegistryClient(auth_registry.host, authfile=cfg, retry=FAST)
    try:
        with pytest.raises(AuthError) as exc:
            await c.head_manifest(repo_name, "latest")
        assert exc.value.status == 401
        for text in (str(exc.value), repr(exc.value), repr(c)):
            assert wrong not in text and PASSWORD not in text
        with pytest.raises(AuthError):
            await c.check_login()
    finally:
        await c.close()
    anon = RegistryClient(auth_registry.host, anonymous=True, retry=FAST)
    try:
        with pytest.raises(AuthError, match="requires a login"):
            await anon.list_tags(repo_name)
    finally:
        await anon.close()
    ok = RegistryClient(auth_registry.host, credentials=Credentials(USER, PASSWORD), retry=FAST)
    try:
        await ok.check_login()
        assert await ok.list_tags(repo_name) == []
    finally:
        await ok.close()


# -- the Store --------------------------------------------------------------------------------------


async def test_registry_store_put_blob_known_and_unknown_size(registry: Registry, repo_name: str) -> None:
    store = RegistryStore(registry.host, ClientOptions(anonymous=True, retry=FAST))
    try:
        data = os.urandom(123_456)
        known = Descriptor("application/octet-stream", digest_of(data), len(data))
        await store.put_blob(repo_name + "/a", known, chunks_of(data))
        unknown = Descriptor("application/octet-stream", digest_of(data), 0)  # size not known
        await store.put_blob(repo_name + "/b", unknown, chunks_of(data))
        empty = Descriptor("application/octet-stream", digest_of(b""), 0)
        await store.put_blob(repo_name + "/a", empty, chunks_of(b""))
        for repo, desc in ((repo_name + "/a", known), (repo_name + "/b", known), (repo_name + "/a", empty)):
            assert await store.has_blob(repo, desc)
        assert store.stats.blob_uploads == 3
        m = Manifest(b"{}", OCI_MANIFEST)
        with pytest.raises(RegistryError):
            await store.put_manifest(repo_name, "x", m)
        assert await store.list_tags(repo_name + "/a") == []
        assert await store.mount_blob(repo_name + "/c", known, repo_name + "/a")
        assert store.ratelimit is None
    finally:
        await store.close()


def test_unreachable_registry_is_a_registry_error() -> None:
    import asyncio

    from hubmirror.testing.registry import free_port

    async def go() -> None:
        c = RegistryClient(f"127.0.0.1:{free_port()}", anonymous=True, retry=FAST)
        try:
            await c.list_tags("a/b")
        finally:
            await c.close()

    with pytest.raises(RegistryError, match="unreachable"):
        asyncio.run(go())


async def test_an_unreachable_registry_is_tried_once_not_once_per_request() -> None:
    import asyncio

    from hubmirror.testing.registry import free_port

    async with RegistryClient(f"127.0.0.1:{free_port()}", anonymous=True, retry=FAST) as c:
        results = await asyncio.gather(*(c.head_manifest("a/b", f"t{i}") for i in range(20)), return_exceptions=True)
    assert all(isinstance(r, RegistryError) and "unreachable" in str(r) for r in results)
    assert len({str(r) for r in results}) == 1
    assert c.stats.retries == FAST.attempts - 1  # one round of retries for the whole run, not 20


async def test_insecure_registry_falls_back_to_http(registry: Registry, repo_name: str) -> None:
    async with RegistryClient(registry.host, anonymous=True, insecure=True, retry=FAST) as c:
        assert await c.list_tags(repo_name) == []
        assert c.base_url == f"http://{registry.host}"
    async with RegistryClient(registry.host, anonymous=True, insecure=False, retry=FAST) as strict:
        with pytest.raises(RegistryError, match="TLS handshake failed"):
            await strict.list_tags(repo_name)
