"""OCI layouts written by ``hubmirror copy``, read by the tools that consume them (issue 8, finding 5).

Each descriptor in ``index.json`` carries the media type of the bytes it points to. OCI-format images
are checked with skopeo, oci-image-tool and umoci; Docker-format images (which keep their bytes and
digests, and which skopeo 1.9 and umoci do not look up) with containerd: ``ctr images import`` of the
layout, then a push to a real registry that must keep every digest.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from test_cli_copy import run

from hubmirror.media import DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST
from hubmirror.testing import layout as oci
from hubmirror.testing.containerd import Containerd
from hubmirror.testing.hub import HubEmulator
from hubmirror.testing.images import Image, Index, image, index, manifest_list, push_sync
from hubmirror.testing.registry import Registry

#: The Linux platforms of a typical official image.
LINUX = (
    "linux/amd64",
    "linux/arm/v5",
    "linux/arm/v7",
    "linux/arm64/v8",
    "linux/386",
    "linux/mips64le",
    "linux/ppc64le",
    "linux/s390x",
)


def tool(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which(args[0]) is None:
        pytest.skip(f"{args[0]} is not installed (scripts/install installs it)")
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120, check=False)


def registry_raw(reg: Registry, ref: str) -> bytes:
    p = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{reg.host}/{ref}"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert p.returncode == 0, p.stderr.decode()
    return p.stdout


def assert_pushed_verbatim(reg: Registry, repo: str, tag: str, img: Index | Image) -> None:
    """The registry holds *img* under *tag* with its digest, and every child byte for byte."""
    assert registry_raw(reg, f"{repo}:{tag}") == img.manifest.data
    for child in img.children if isinstance(img, Index) else ():
        assert registry_raw(reg, f"{repo}@{child.digest}") == child.manifest.data


def push_with_ctr(ctrd: Containerd, reg: Registry, layout: Path, base: str, repo: str, tags: list[str]) -> None:
    imported = ctrd.import_layout(layout, base)
    for tag in tags:
        assert f"{base}:{tag}" in imported
        ctrd.check("images", "push", "--plain-http", f"{reg.host}/{repo}:{tag}", f"{base}:{tag}")


def test_docker_format_image_in_oci_layout_is_imported_and_pushed_by_containerd(
    hub: HubEmulator, registry: Registry, containerd: Containerd, repo_name: str, tmp_path: Path
) -> None:
    """``hubmirror copy`` of a Docker manifest list (and a single Docker manifest) into ``oci:L``, then
    ``ctr images import`` of L and ``ctr images push``: the registry gets the very same digests.
    Before the fix, index.json listed them as OCI types and the push got MANIFEST_INVALID."""
    lst = push_sync(hub.upstream, "library/app", manifest_list("app", LINUX), ["1.0"])
    one = push_sync(hub.upstream, "library/tool", image("tool", "linux/amd64", fmt="docker"), ["2"])
    lay = tmp_path / "layout"

    for src, tag in ((f"{hub.host}/library/app:1.0", "1.0"), (f"{hub.host}/library/tool:2", "2")):
        proc = run(src, f"oci:{lay}:{tag}")
        assert proc.returncode == 0, proc.stderr

    base = f"example.test/{repo_name}"
    push_with_ctr(containerd, registry, lay, base, repo_name, ["1.0", "2"])
    assert_pushed_verbatim(registry, repo_name, "1.0", lst)
    assert_pushed_verbatim(registry, repo_name, "2", one)

    types = {e["annotations"]["org.opencontainers.image.ref.name"]: e["mediaType"] for e in oci.index_entries(lay)}
    assert types == {"1.0": DOCKER_LIST, "2": DOCKER_MANIFEST}
    assert oci.mislabelled(lay) == []
    assert oci.tags(lay) == {"1.0": lst.digest, "2": one.digest}  # bytes and digests kept


def test_oci_format_layout_read_by_skopeo_umoci_oci_image_tool_and_containerd(
    hub: HubEmulator, registry: Registry, containerd: Containerd, repo_name: str, tmp_path: Path
) -> None:
    """OCI-format images copied into a layout: skopeo inspects and copies them with their digests;
    oci-image-tool validates the layout; umoci lists and reads it; containerd imports and pushes it."""
    official = push_sync(hub.upstream, "library/app", index("app", LINUX), ["3"])  # with attestations
    plain = push_sync(hub.upstream, "library/lib", index("lib", LINUX[:3], attestations=False), ["1"])
    one = push_sync(hub.upstream, "library/one", image("one", "linux/arm64/v8"), ["x"])
    lay, plain_lay = tmp_path / "layout", tmp_path / "plain"
    for src, dst in (
        (f"{hub.host}/library/app:3", f"oci:{lay}:3"),
        (f"{hub.host}/library/lib:1", f"oci:{plain_lay}:1"),
        (f"{hub.host}/library/one:x", f"oci:{plain_lay}:x"),
    ):
        proc = run(src, dst)
        assert proc.returncode == 0, proc.stderr
    assert {e["mediaType"] for e in oci.index_entries(lay) + oci.index_entries(plain_lay)} == {OCI_INDEX, OCI_MANIFEST}

    # skopeo: inspect (which parses config and platform), and a digest-preserving copy of everything.
    inspect = tool("skopeo", "inspect", f"oci:{lay}:3")
    assert inspect.returncode == 0, inspect.stderr
    info = json.loads(inspect.stdout)
    assert info["Digest"] == official.digest and info["Os"] == "linux" and info["Architecture"] == "amd64"
    copied = tool(
        "skopeo", "copy", "-q", "--all", "--preserve-digests", "--dest-tls-verify=false",
        f"oci:{lay}:3", f"docker://{registry.host}/{repo_name}:3",
    )  # fmt: skip
    assert copied.returncode == 0, copied.stderr
    assert_pushed_verbatim(registry, repo_name, "3", official)

    # oci-image-tool (1.0.0-rc1) validates every ref: manifests, configs, layer digests and sizes. It
    # rejects in-toto attestation layers as an unknown media type, hence the attestation-free layout.
    valid = tool("oci-image-tool", "validate", "--type", "image", str(plain_lay))
    assert valid.returncode == 0, valid.stderr
    assert "Validation succeeded" in valid.stdout
    listed = tool("umoci", "ls", "--layout", str(plain_lay))
    assert listed.returncode == 0, listed.stderr
    assert sorted(listed.stdout.split()) == ["1", "x"]
    stat = tool("umoci", "stat", "--json", "--image", f"{plain_lay}:x")  # umoci resolves single manifests
    assert stat.returncode == 0, stat.stderr
    assert len(json.loads(stat.stdout)["history"]) == len(one.layers)

    # containerd reads OCI layouts too.
    push_with_ctr(containerd, registry, plain_lay, f"example.test/{repo_name}-plain", f"{repo_name}-plain", ["1"])
    assert_pushed_verbatim(registry, f"{repo_name}-plain", "1", plain)


def test_layout_written_by_older_hubmirror_is_relabelled_by_the_next_write(hub: HubEmulator, tmp_path: Path) -> None:
    """Layouts that an older hubmirror wrote list Docker manifests under OCI types; the next
    ``hubmirror copy`` into such a layout corrects every entry (the bytes stay as they are)."""
    lst = push_sync(hub.upstream, "library/app", manifest_list("old", LINUX[:2]), ["1"])
    push_sync(hub.upstream, "library/app", manifest_list("new", LINUX[:2]), ["2"])
    lay = tmp_path / "layout"
    assert run(f"{hub.host}/library/app:1", f"oci:{lay}:1").returncode == 0
    index_json = lay / "index.json"
    doc = json.loads(index_json.read_text())
    doc["manifests"][0]["mediaType"] = OCI_INDEX  # what hubmirror wrote before
    index_json.write_text(json.dumps(doc))
    assert oci.mislabelled(lay) != []

    proc = run(f"{hub.host}/library/app:2", f"oci:{lay}:2")

    assert proc.returncode == 0, proc.stderr
    assert oci.mislabelled(lay) == []
    assert oci.tags(lay)["1"] == lst.digest
