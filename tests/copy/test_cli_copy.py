"""`hubmirror copy` as a user runs it: a real subprocess against the Hub emulator, an htpasswd registry
and OCI layouts. Checks output, --json, exit codes, and that no secret is ever printed."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from _auth import PASSWORD, USER
from hubmirror.testing.hub import HubEmulator
from hubmirror.testing.images import index, manifest_list, push_sync
from hubmirror.testing.registry import Registry

HUBMIRROR = str(Path(sys.executable).parent / "hubmirror")
PLATFORMS = ("linux/amd64", "linux/arm64/v8", "linux/s390x")


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("HUBMIRROR_")}
    full_env["HOME"] = os.environ.get("HOME", "/tmp")
    full_env.update(env or {})
    return subprocess.run(
        [HUBMIRROR, "copy", *args], capture_output=True, text=True, timeout=300, env=full_env, check=False
    )


def authfile(tmp_path: Path, reg: Registry, password: str = PASSWORD) -> str:
    path = tmp_path / "auth.json"
    token = base64.b64encode(f"{USER}:{password}".encode()).decode()
    path.write_text(json.dumps({"auths": {reg.host: {"auth": token}}}))
    return str(path)


def no_secrets(proc: subprocess.CompletedProcess[str]) -> None:
    text = proc.stdout + proc.stderr
    assert PASSWORD not in text
    assert base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode() not in text
    assert "Traceback" not in text


def skopeo_raw(ref: str, *args: str) -> bytes:
    return subprocess.run(["skopeo", "inspect", "--raw", *args, ref], check=True, capture_output=True).stdout


def test_copy_to_auth_registry_json_and_recopy(
    hub: HubEmulator, auth_registry: Registry, repo_name: str, tmp_path: Path
) -> None:
    img = push_sync(hub.upstream, "library/python", index("python", PLATFORMS), ["3.12"])
    hub.reset_counts()
    auth = authfile(tmp_path, auth_registry)
    dst = f"{auth_registry.host}/{repo_name}:3.12"

    proc = run(f"{hub.host}/library/python:3.12", dst, "--tag", "3", "--json", "--authfile", auth)

    assert proc.returncode == 0, proc.stderr
    no_secrets(proc)
    doc = json.loads(proc.stdout)
    assert doc["digest"] == doc["source_digest"] == img.digest
    assert doc["tags"] == ["3.12", "3"] and doc["blobs_copied"] == len(img.blob_digests)
    assert doc["source_manifest_gets"] == hub.manifest_gets() == 1 + len(img.children)
    assert "blobs: " in proc.stderr and "manifest GETs" in proc.stderr
    raw = skopeo_raw(f"docker://{auth_registry.host}/{repo_name}:3", "--tls-verify=false", f"--creds={USER}:{PASSWORD}")
    assert raw == img.manifest.data

    hub.reset_counts()
    again = run(f"{hub.host}/library/python:3.12", dst, "--json", "--authfile", auth)
    assert again.returncode == 0, again.stderr
    doc = json.loads(again.stdout)
    assert doc["up_to_date"] and doc["source_manifest_gets"] == 0 and doc["blobs_copied"] == 0
    assert hub.manifest_gets() == 0
    assert "already up to date" in again.stderr


def test_wrong_password_is_a_clear_error_without_secret(
    hub: HubEmulator, auth_registry: Registry, repo_name: str, tmp_path: Path
) -> None:
    push_sync(hub.upstream, "library/busybox", index("bb", PLATFORMS[:1]), ["1"])
    proc = run(
        f"{hub.host}/library/busybox:1",
        f"{auth_registry.host}/{repo_name}:1",
        "--authfile",
        authfile(tmp_path, auth_registry, password=PASSWORD + "-wrong"),
    )
    assert proc.returncode == 1
    assert "error:" in proc.stderr and auth_registry.host in proc.stderr
    no_secrets(proc)
    assert PASSWORD + "-wrong" not in proc.stderr


def test_persistent_fault_exits_nonzero_without_tag(
    hub: HubEmulator, auth_registry: Registry, repo_name: str, tmp_path: Path
) -> None:
    img = push_sync(hub.upstream, "library/nginx", index("nginx", PLATFORMS), ["1.27"])
    bad = img.images[-1].layers[-1].digest
    hub.fail_always(f"/blobs/{bad}")
    auth = authfile(tmp_path, auth_registry)

    proc = run(f"{hub.host}/library/nginx:1.27", f"{auth_registry.host}/{repo_name}:1.27", "--authfile", auth)

    assert proc.returncode == 1
    assert bad in proc.stderr and "no destination tag was changed" in proc.stderr
    no_secrets(proc)
    tags = subprocess.run(
        ["skopeo", "list-tags", "--tls-verify=false", f"--creds={USER}:{PASSWORD}",
         f"docker://{auth_registry.host}/{repo_name}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert tags.returncode != 0 or json.loads(tags.stdout)["Tags"] in ([], None)


def test_platform_filter_to_oci_takes_source_tag(hub: HubEmulator, tmp_path: Path) -> None:
    img = push_sync(hub.upstream, "library/alpine", index("alpine", PLATFORMS), ["3.20"])
    layout = tmp_path / "mirror"

    proc = run(f"{hub.host}/library/alpine:3.20", f"oci:{layout}", "--platform", "linux/arm64", "--json")

    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["filtered"] and doc["source_digest"] == img.digest and doc["tags"] == ["3.20"]
    assert "filtering changed the digest" in proc.stderr and img.digest in proc.stderr
    raw = json.loads(skopeo_raw(f"oci:{layout}:3.20"))
    assert raw["manifests"][0]["digest"] == img.image("linux/arm64").digest
    assert len(raw["manifests"]) == 2  # the arm64 image and its attestation


def test_foreign_layers_are_listed(hub: HubEmulator, tmp_path: Path) -> None:
    img = push_sync(
        hub.upstream, "library/win", manifest_list("w", ("windows/amd64", "linux/amd64"), foreign_windows=True), ["x"]
    )
    foreign = [b.digest for c in img.images for b in c.layers if b.is_foreign]
    proc = run(f"{hub.host}/library/win:x", f"oci:{tmp_path}:x")
    assert proc.returncode == 0, proc.stderr
    assert "foreign layer(s) not copied" in proc.stderr and all(d in proc.stderr for d in foreign)


def test_bad_arguments_exit_nonzero(tmp_path: Path) -> None:
    proc = run("Not A Reference!!", f"oci:{tmp_path}:x")
    assert proc.returncode == 1 and "invalid reference" in proc.stderr
    no_secrets(proc)
    proc = run(f"oci:{tmp_path}/nothing:1", f"oci:{tmp_path}/out:1")
    assert proc.returncode == 1 and "not found" in proc.stderr
    proc = run(f"oci:{tmp_path}:x", f"oci:{tmp_path}/out", "--platform", "linux")
    assert proc.returncode == 2 and "invalid platform" in proc.stderr


def test_copy_reads_content_by_digest_from_a_content_mirror(
    hub: HubEmulator, registry: Registry, make_registry: Any, repo_name: str
) -> None:
    official = ("linux/amd64", "linux/arm/v5", "linux/arm/v7", "linux/arm64/v8", "linux/386", "linux/ppc64le",
                "linux/s390x", "linux/riscv64")  # fmt: skip
    ix = push_sync(hub.upstream, "library/redis", index("redis", official), ["8"])
    mirror = make_registry()
    push_sync(mirror, "docker/library/redis", ix)  # by digest only: a mirror's tags are never read
    hub.reset_counts()

    proc = run(f"{hub.host}/library/redis:8", f"{registry.host}/{repo_name}:8", "--json",
               "--content-mirror", f"{mirror.host}/docker")  # fmt: skip

    assert proc.returncode == 0, proc.stderr
    assert hub.manifest_gets() == 0 and hub.blob_gets() == 0  # the tag was resolved with a free HEAD
    doc = json.loads(proc.stdout)
    assert doc["digest"] == ix.digest and doc["source_manifest_gets"] == 0
    mirrored = {s["name"]: s for s in doc["sources"]}[f"{mirror.host}/docker"]
    assert mirrored["manifests"] == 1 + 2 * len(official)
    assert skopeo_raw(f"docker://{registry.host}/{repo_name}:8", "--tls-verify=false") == ix.manifest.data
