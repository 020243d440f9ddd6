"""The image builders make deterministic, registry-valid images and push them in the right order."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import aiohttp
import pytest

from hubmirror.media import ACCEPT, DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, Manifest
from hubmirror.platform import Platform
from hubmirror.testing.images import (
    DOCKER_FOREIGN_LAYER,
    IN_TOTO,
    PLATFORMS,
    base_layer,
    image,
    index,
    manifest_list,
    push,
    push_sync,
    streamed_layer,
)
from hubmirror.testing.registry import Registry


def skopeo_inspect(ref: str, tmp_path: Path, *extra: str) -> bytes:
    env = {**os.environ, "REGISTRY_AUTH_FILE": str(tmp_path / "auth.json"), "HOME": str(tmp_path)}
    res = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", *extra, ref], capture_output=True, env=env, timeout=120, check=False
    )
    assert res.returncode == 0, res.stderr.decode()
    return res.stdout


async def head_digest(reg: Registry, repo: str, ref: str) -> str | None:
    async with (
        aiohttp.ClientSession() as s,
        s.head(f"{reg.url}/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT}) as r,
    ):
        return r.headers.get("Docker-Content-Digest") if r.status == 200 else None


async def blob_bytes(reg: Registry, repo: str, digest: str) -> bytes | None:
    async with aiohttp.ClientSession() as s, s.get(f"{reg.url}/v2/{repo}/blobs/{digest}") as r:
        return await r.read() if r.status == 200 else None


def test_same_seed_same_digests_new_seed_or_generation_new_content() -> None:
    base = base_layer("debian")
    a, b = index("x", base=[base]), index("x", base=[base])
    assert a.digest == b.digest and a.manifest.data == b.manifest.data
    assert index("y", base=[base]).digest != a.digest
    rebuilt = index("x", base=[base], generation=1)
    assert rebuilt.digest != a.digest
    assert set(rebuilt.child_digests).isdisjoint(a.child_digests)
    assert base.digest in rebuilt.blob_digests and base.digest in a.blob_digests


def test_oci_index_with_all_platforms_and_attestations() -> None:
    idx = index("py", PLATFORMS, layers=(100, 200))
    m = Manifest(idx.manifest.data, idx.media_type)  # parsed by hubmirror's own content model
    assert m.media_type == OCI_INDEX and m.digest == idx.digest
    kids = m.children
    assert len(kids) == 14
    images, atts = kids[:7], kids[7:]
    assert [str(d.platform) for d in images] == list(PLATFORMS)
    win = images[-1].platform
    assert win is not None and win.os_version.startswith("10.0.")
    assert all(d.is_attestation and not images[i].is_attestation for i, d in enumerate(atts))
    assert [d.attests for d in atts] == [d.digest for d in images]
    att = Manifest(idx.attestations[0].manifest.data, idx.attestations[0].media_type)
    assert {layer.media_type for layer in att.layers} == {IN_TOTO}
    arm = Manifest(idx.image("linux/arm64").manifest.data, idx.image("linux/arm64").media_type)
    config = json.loads(idx.image("linux/arm64").config.data or b"")
    assert (config["os"], config["architecture"], config["variant"]) == ("linux", "arm64", "v8")
    assert [layer.size for layer in arm.layers] == [100, 200]
    assert config["rootfs"]["diff_ids"] == [layer.digest for layer in arm.layers]


async def test_index_pushes_and_skopeo_reads_it_and_each_child(
    registry: Registry, repo_name: str, tmp_path: Path
) -> None:
    idx = await push(registry, repo_name, index("app", ["linux/amd64", "linux/arm/v7"]), ["1.0"])
    raw = skopeo_inspect(f"docker://{registry.host}/{repo_name}:1.0", tmp_path, "--raw")
    assert raw == idx.manifest.data
    for child in idx.children:
        got = skopeo_inspect(f"docker://{registry.host}/{repo_name}@{child.digest}", tmp_path, "--raw")
        assert "sha256:" + hashlib.sha256(got).hexdigest() == child.digest
    info = json.loads(
        skopeo_inspect(
            f"docker://{registry.host}/{repo_name}:1.0", tmp_path, "--override-arch=arm", "--override-variant=v7"
        )
    )
    assert (info["Os"], info["Architecture"]) == ("linux", "arm")
    assert info["Digest"] == idx.digest


async def test_docker_manifest_list_with_windows_foreign_layer(
    registry: Registry, repo_name: str, tmp_path: Path
) -> None:
    ml = manifest_list("win", ["linux/amd64", "windows/amd64"], foreign_windows=True)
    assert ml.media_type == DOCKER_LIST and not ml.attestations
    win = ml.image("windows/amd64")
    foreign = win.layers[0]
    assert foreign.media_type == DOCKER_FOREIGN_LAYER and foreign.urls[0].startswith("https://mcr.microsoft.com/")
    assert foreign.digest not in win.blob_digests
    await push(registry, repo_name, ml, ["ltsc2022"])
    raw = skopeo_inspect(f"docker://{registry.host}/{repo_name}@{win.digest}", tmp_path, "--raw")
    assert raw == win.manifest.data and json.loads(raw)["mediaType"] == DOCKER_MANIFEST
    assert await blob_bytes(registry, repo_name, foreign.digest) is None  # never pushed
    assert await blob_bytes(registry, repo_name, win.layers[1].digest) == win.layers[1].data
    assert await head_digest(registry, repo_name, "ltsc2022") == ml.digest


async def test_many_tags_one_manifest_and_rebuild_moves_the_tag(registry: Registry, repo_name: str) -> None:
    base = base_layer("alpine")
    tags = ["3", "3.20", "3.20.1", "latest"]
    v1 = await push(registry, repo_name, index("alp", base=[base]), tags)
    for t in tags:
        assert await head_digest(registry, repo_name, t) == v1.digest
    v2 = await push(registry, repo_name, index("alp", base=[base], generation=1), ["latest"])
    assert await head_digest(registry, repo_name, "latest") == v2.digest
    assert await head_digest(registry, repo_name, "3") == v1.digest
    async with aiohttp.ClientSession() as s, s.get(f"{registry.url}/v2/{repo_name}/tags/list") as r:
        assert sorted((await r.json())["tags"]) == sorted(tags)


async def test_shared_base_layer_across_repositories(registry: Registry, repo_name: str) -> None:
    base = base_layer("debian", 8192)
    a = await push(registry, f"{repo_name}/a", image("a", base=[base]), ["1"])
    b = await push(registry, f"{repo_name}/b", image("b", base=[base], fmt="docker"), ["1"])
    assert a.layers[0] == b.layers[0] == base and a.digest != b.digest
    for repo in ("a", "b"):
        assert await blob_bytes(registry, f"{repo_name}/{repo}", base.digest) == base.data


async def test_streamed_layer_is_pushed_without_holding_it(registry: Registry, repo_name: str) -> None:
    big = streamed_layer("big", 5 * 1024 * 1024 + 7, chunk_size=1 << 20)
    assert big.data is None
    h = hashlib.sha256()
    for chunk in big.chunks():
        assert len(chunk) <= 1 << 20
        h.update(chunk)
    assert "sha256:" + h.hexdigest() == big.digest
    img = await push(registry, repo_name, image("big", layers=[big]), ["big"])
    got = await blob_bytes(registry, repo_name, big.digest)
    assert got is not None and len(got) == big.size and "sha256:" + hashlib.sha256(got).hexdigest() == big.digest
    assert await head_digest(registry, repo_name, "big") == img.digest


def test_push_sync_with_basic_auth(auth_registry: Registry, repo_name: str, tmp_path: Path) -> None:
    img = push_sync(auth_registry, repo_name, image("authd", "linux/s390x", fmt="docker"), ["v1"])
    assert auth_registry.username and auth_registry.password
    creds = f"--creds={auth_registry.username}:{auth_registry.password}"
    info = json.loads(skopeo_inspect(f"docker://{auth_registry.host}/{repo_name}:v1", tmp_path, creds))
    assert info["Digest"] == img.digest and info["Architecture"] == "s390x"


async def test_push_sync_works_inside_a_running_loop(registry: Registry, repo_name: str) -> None:
    img = push_sync(registry, repo_name, image("inloop", Platform.parse("linux/ppc64le")), ["x"])
    assert await head_digest(registry, repo_name, "x") == img.digest


def test_push_errors_name_repo_and_hide_password(auth_registry: Registry, repo_name: str) -> None:
    from hubmirror._errors import AuthError

    with pytest.raises(AuthError) as exc:
        push_sync(auth_registry.url, repo_name, image("denied"), ["x"], auth=("mirror", "wrong-password"))
    assert repo_name in str(exc.value) and "wrong-password" not in str(exc.value)
