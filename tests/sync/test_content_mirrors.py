"""Content mirrors (``--content-mirror``): tags are resolved on the Hub emulator with free HEADs, content
by digest comes from a real registry playing mirror.gcr.io / ECR Public, every byte verified; what a
mirror lacks or serves wrong comes from the Hub, and the report names the mirror."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_sync_support import Env, assert_complete, manifests_of, skopeo, skopeo_raw

from hubmirror._errors import ConfigError
from hubmirror.config import SyncConfig
from hubmirror.digest import sha256
from hubmirror.store.mirrored import split_mirror
from hubmirror.testing import images as img
from hubmirror.testing.official import seed_library
from hubmirror.testing.registry import Registry, free_port

_HEAD = "Maintainers: Test Maintainer <test@example.invalid> (@test)\nGitRepo: https://example.invalid/{name}.git\n"
#: Official-like shapes: 10 platforms, each with its attestation manifest (21 manifests per index).
ARCHES = "amd64, arm32v5, arm32v6, arm32v7, arm64v8, i386, mips64le, ppc64le, riscv64, s390x"
NAMES = ("alpha", "beta", "gamma")
OFFICIAL = {
    name: _HEAD.format(name=name)
    + f"GitCommit: {'4' * 40}\n\nTags: 1.0, 1, latest\nArchitectures: {ARCHES}\nDirectory: 1\n"
    for name in NAMES
}


def setup(env: Env, *, holds: tuple[str, ...] = NAMES, prefix: str = "") -> tuple[dict[str, str], Registry]:
    """The official-like library on the Hub emulator, and a mirror registry holding *holds* of it."""
    env.commit({"pyish": "", "tiny": "", **OFFICIAL})
    seeded = env.seed()
    mirror = env.make_registry()
    img.run_sync(seed_library(mirror, env.library(), repos=holds, prefix=prefix))
    env.hub.reset_counts()
    return seeded, mirror


def hub_gets(env: Env) -> list[str]:
    return [r.ref for r in env.hub.records if r.method == "GET" and r.kind == "manifest"]


def hub_blob_gets(env: Env) -> list[str]:
    return [r.ref for r in env.hub.records if r.method == "GET" and r.kind == "blob"]


def sources(report: Path) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in json.loads(report.read_text())["content_sources"]}


@skopeo
def test_a_mirror_holding_everything_fills_a_cold_destination_with_heads_only_on_the_hub(env: Env) -> None:
    seeded, mirror = setup(env, prefix="docker")  # laid out as public.ecr.aws/docker/library/<name>
    report = env.root / "report.json"

    proc = env.cli("--content-mirror", f"{mirror.host}/docker", "--report", str(report))

    assert proc.returncode == 0, proc.stderr
    assert hub_gets(env) == [] and hub_blob_gets(env) == [] and env.hub.cdn_gets() == 0
    assert env.hub.manifest_heads() >= len(seeded)  # tags are resolved on the Hub only
    for key, digest in seeded.items():
        name, tag = key.split(":")
        assert sha256(skopeo_raw(f"docker://{env.dest.host}/mirror/{name}:{tag}")) == digest, key
    total = sum(len(manifests_of(env.indexes(n)["latest"])) for n in NAMES)
    assert total == 63
    by_name = sources(report)
    assert by_name[f"{mirror.host}/docker"]["manifests"] == total
    assert by_name[f"{mirror.host}/docker"]["mismatches"] == 0
    assert by_name[env.hub.host]["pulls"] == 0
    assert "63 manifests from mirrors" in proc.stderr
    items = json.loads(report.read_text())["items"]
    assert [(i["pulls"], i["mirrored"]) for i in items] == [(0, 21)] * 3


def test_a_mirror_holding_one_image_of_three_leaves_exactly_the_rest_to_the_hub(env: Env) -> None:
    seeded, mirror = setup(env, holds=("alpha",))

    dry = env.cli("--content-mirror", mirror.host, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    text = " ".join(dry.stderr.split())
    assert "up to 21 manifests from mirrors (an upper bound: what a mirror lacks is pulled instead), ≈ 42 pulls" in text
    assert hub_gets(env) == []

    proc = env.cli("--content-mirror", mirror.host)

    assert proc.returncode == 0, proc.stderr
    lacking = manifests_of(env.indexes("beta")["latest"]) | manifests_of(env.indexes("gamma")["latest"])
    gets = hub_gets(env)
    assert sorted(gets) == sorted(lacking)  # each once, and nothing the mirror holds
    for key, digest in seeded.items():
        name, tag = key.split(":")
        assert env.dest_digest(name, tag) == digest, key


def _blob_file(reg: Registry, digest: str) -> Path:
    hexpart = digest.split(":", 1)[1]
    return reg.root / "data" / "docker" / "registry" / "v2" / "blobs" / "sha256" / hexpart[:2] / hexpart / "data"


def test_wrong_bytes_on_a_mirror_come_from_the_hub_and_the_report_names_the_mirror(env: Env) -> None:
    seeded, mirror = setup(env)
    bad_manifest = env.indexes("alpha")["latest"].image("linux/arm64/v8")
    bad_layer = env.indexes("beta")["latest"].image("linux/s390x").layers[-1]
    # On the mirror's disk: the manifest stays valid JSON of the same size, the layer the same size.
    path = _blob_file(mirror, bad_manifest.digest)
    data = path.read_bytes()
    path.write_bytes(data.replace(b'\n   "', b'\n\t  "', 1))
    path = _blob_file(mirror, bad_layer.digest)
    data = path.read_bytes()
    path.write_bytes(bytes([data[0] ^ 0xFF]) + data[1:])
    report, prom = env.root / "report.json", env.root / "metrics.prom"

    proc = env.cli("--content-mirror", mirror.host, "--report", str(report), "--metrics-file", str(prom))

    assert proc.returncode == 0, proc.stderr
    assert hub_gets(env) == [bad_manifest.digest]
    assert hub_blob_gets(env) == [bad_layer.digest]
    for key, digest in seeded.items():
        name, tag = key.split(":")
        assert env.dest_digest(name, tag) == digest, key
    for name in NAMES:
        assert_complete(env.dest, f"mirror/{name}", "latest")
    entry = sources(report)[mirror.host]
    assert entry["mismatches"] == 2
    assert sorted(entry["bad_digests"]) == sorted([bad_manifest.digest, bad_layer.digest])
    assert f"content mirror {mirror.host} served 2 digest mismatch(es)" in proc.stderr
    metrics = prom.read_text()
    assert f'hubmirror_content_digest_mismatches_total{{role="mirror",source="{mirror.host}"}} 2.0' in metrics
    assert f'hubmirror_content_pulls_total{{role="source",source="{env.hub.host}"}} 1.0' in metrics


def test_an_unreachable_mirror_is_tried_once_reported_and_does_not_fail_the_sync(env: Env) -> None:
    env.commit({"pyish": ""})
    seeded = env.seed()
    down = f"127.0.0.1:{free_port()}"  # nothing listens there
    report = env.root / "report.json"

    proc = env.cli("--content-mirror", down, "--report", str(report))

    assert proc.returncode == 0, proc.stderr
    for key, digest in seeded.items():
        name, tag = key.split(":")
        assert env.dest_digest(name, tag) == digest, key
    entry = sources(report)[down]
    assert entry["manifests"] == 0 and entry["dropped"] and "unreachable" in entry["dropped"]
    assert f"content mirror {down} was dropped" in proc.stderr


def test_default_mirrors_apply_only_when_the_source_is_docker_hub() -> None:
    hub = SyncConfig()
    assert hub.source_mirrors == ["mirror.gcr.io", "public.ecr.aws/docker"]
    assert SyncConfig().merge({"source": "127.0.0.1:5000"}).source_mirrors == []
    assert SyncConfig().merge({"source": "127.0.0.1:5000", "content_mirrors": ["m:5000/x"]}).source_mirrors == [
        "m:5000/x"
    ]
    assert hub.merge({"content_mirrors": ["registry.example/hub"]}).source_mirrors == ["registry.example/hub"]
    assert hub.without_content_mirrors().source_mirrors == []
    assert split_mirror("public.ecr.aws/docker") == ("public.ecr.aws", "docker")
    with pytest.raises(ConfigError, match="--content-mirror"):
        hub.merge({"content_mirrors": ["https://mirror.gcr.io"]})
