"""Shared pieces of the ``hubmirror sync`` tests (no tests here): a small official-images-like library,
an `Env` bundling a Hub emulator, a destination registry, a library git repo and a state file, and
helpers that look at the destination through plain HTTP and through skopeo.

Other test modules import the `env` fixture from here (``from test_sync_support import env_fixture``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hubmirror.config import SyncConfig
from hubmirror.library import Library, LibrarySource, load_library
from hubmirror.media import ATTESTATION_REF_DIGEST, DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST
from hubmirror.plan import Plan
from hubmirror.report import SyncReport
from hubmirror.sync import SyncEvents, run_sync
from hubmirror.testing import images as img
from hubmirror.testing.hub import HubEmulator
from hubmirror.testing.official import make_library_repo, repository_indexes, seed_library
from hubmirror.testing.registry import Registry

HUBMIRROR = str(Path(sys.executable).with_name("hubmirror"))
ACCEPT = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST))
NAMESPACE = "mirror"

_HEAD = "Maintainers: Test Maintainer <test@example.invalid> (@test)\nGitRepo: https://example.invalid/{name}.git\n"

#: pyish: a slim group, a Linux entry whose SharedTags it shares with a Windows entry.
PYISH = (
    _HEAD.format(name="pyish")
    + """GitCommit: 1111111111111111111111111111111111111111

Tags: 3.14-slim, 3-slim, slim
Architectures: amd64, arm64v8
Directory: 3.14/slim

Tags: 3.14-trixie, 3-trixie
SharedTags: 3.14, 3, latest
Architectures: amd64, arm64v8
Directory: 3.14/trixie

Tags: 3.14-windowsservercore
SharedTags: 3.14, 3, latest
Architectures: windows-amd64
Directory: 3.14/windows
Constraints: windowsservercore-ltsc2025
"""
)

#: tiny: one single-platform entry with several tags (one of them, `old`, leaves in LIB_V2).
TINY = (
    _HEAD.format(name="tiny")
    + """GitCommit: 2222222222222222222222222222222222222222

Tags: 1.0, 1, latest, old
Architectures: amd64
Directory: 1
"""
)

LIB_V1 = {"pyish": PYISH, "tiny": TINY}

#: The next commit: pyish drops its slim entry; tiny drops the tag `old` and gains a 2.0 entry.
LIB_V2 = {
    "pyish": PYISH.replace(
        "Tags: 3.14-slim, 3-slim, slim\nArchitectures: amd64, arm64v8\nDirectory: 3.14/slim\n\n", ""
    ),
    "tiny": TINY.replace("Tags: 1.0, 1, latest, old", "Tags: 1.0, 1, latest")
    + "\nTags: 2.0, 2\nArchitectures: amd64, arm64v8\nDirectory: 2\n",
}


def many_library(entries: int, arches: str = "amd64, arm64v8") -> dict[str, str]:
    """One repository `many` with *entries* entries (own tags, no sharing), newest first."""
    text = _HEAD.format(name="many") + "GitCommit: 3333333333333333333333333333333333333333\n"
    for i in range(entries, 0, -1):
        text += f"\nTags: {i}.0, {i}\nArchitectures: {arches}\nDirectory: {i}\n"
    return {"many": text}


async def open_library(repo: Path) -> Library:
    return await load_library(await LibrarySource.open(str(repo)))


def manifests_of(ix: img.Index, *, windows: bool = False) -> set[str]:
    """Digests of *ix* and its children (Windows images and their attestations left out unless *windows*)."""
    out = {ix.digest}
    linux = {i.digest for i in ix.images if windows or i.platform.os != "windows"}
    out |= linux
    for entry in json.loads(ix.manifest.data)["manifests"]:
        ref = (entry.get("annotations") or {}).get(ATTESTATION_REF_DIGEST)
        if ref in linux:
            out.add(entry["digest"])
    return out


@dataclass
class Env:
    """A Hub emulator, a destination registry, a library repo and a state file for one test."""

    hub: HubEmulator
    dest: Registry
    root: Path
    library_repo: Path
    make_registry: Callable[..., Registry]
    commits: list[str] = field(default_factory=list)

    @property
    def state_path(self) -> Path:
        return self.root / "state" / "state.db"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def dest_prefix(self) -> str:
        """The destination as given to --dest."""
        return f"{self.dest.host}/{NAMESPACE}"

    def key(self, repo: str) -> str:
        """The state's name of destination repository *repo* (``pyish`` → ``HOST/mirror/pyish``)."""
        return f"{self.dest.host}/{NAMESPACE}/{repo}"

    # -- library and source ---------------------------------------------------------------------

    def commit(self, files: Mapping[str, str]) -> str:
        c = make_library_repo(self.library_repo, files, message=f"library {len(self.commits) + 1}")
        self.commits.append(c)
        return c

    def library(self) -> Library:
        return img.run_sync(open_library(self.library_repo))

    def seed(
        self,
        *,
        repos: list[str] | None = None,
        generation: Mapping[str, Mapping[str, int]] | None = None,
        layer_size: int = 2048,
    ) -> dict[str, str]:
        """Push the library's images to the registry behind the emulator (the emulator sees nothing)."""
        return img.run_sync(
            seed_library(self.hub.upstream, self.library(), repos=repos, generation=generation, layer_size=layer_size)
        )

    def indexes(self, repo: str, generation: Mapping[str, int] | None = None) -> dict[str, img.Index]:
        """tag → the index the emulator serves for *repo* (as seeded with *generation*)."""
        return repository_indexes(self.library().repositories[repo], generation=generation)

    # -- running the sync -------------------------------------------------------------------------

    def config(self, **over: Any) -> SyncConfig:
        base: dict[str, Any] = {
            "library": str(self.library_repo),
            "source": self.hub.host,
            "dest": self.dest_prefix,
            "state": str(self.state_path),
        }
        base.update(over)
        return SyncConfig().merge(base)

    async def sync(self, events: SyncEvents | None = None, **over: Any) -> tuple[Plan, SyncReport]:
        return await run_sync(self.config(**over), events=events, cache_dir=self.cache)

    def cli(
        self, *args: str, env: Mapping[str, str] | None = None, timeout: float = 120, dest: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``hubmirror sync --library … --source HUB --dest DEST/mirror --state …`` plus *args*, in a subprocess."""
        return subprocess.run(
            self.cli_args(*args, dest=dest),
            capture_output=True,
            text=True,
            env=self.cli_env(env),
            timeout=timeout,
            check=False,
        )

    def cli_args(self, *args: str, dest: str | None = None) -> list[str]:
        return [
            HUBMIRROR,
            "sync",
            "--library",
            str(self.library_repo),
            "--source",
            self.hub.host,
            "--dest",
            dest or self.dest_prefix,
            "--state",
            str(self.state_path),
            "--cache-dir",
            str(self.cache),
            *args,
        ]

    def cli_env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HUBMIRROR_", "REGISTRY_AUTH"))}
        env["COLUMNS"] = "200"
        env["DOCKER_CONFIG"] = str(self.root / "no-docker-config")
        env["REGISTRY_AUTH_FILE"] = str(self.root / "no-auth.json")
        env.update(extra or {})
        return env

    # -- looking at the destination -----------------------------------------------------------------

    def dest_digest(self, repo: str, tag: str) -> str | None:
        return head_digest(self.dest, f"{NAMESPACE}/{repo}", tag)

    def dest_tags(self, repo: str) -> list[str]:
        return list_tags(self.dest, f"{NAMESPACE}/{repo}")

    def dest_manifest(self, repo: str, ref: str) -> dict[str, Any]:
        return json.loads(get_manifest(self.dest, f"{NAMESPACE}/{repo}", ref))


def _request(reg: Registry, method: str, path: str, headers: Mapping[str, str] | None = None) -> Any:
    req = urllib.request.Request(f"{reg.url}{path}", method=method, headers=dict(headers or {}))
    return urllib.request.urlopen(req, timeout=30)


def head_digest(reg: Registry, repo: str, ref: str) -> str | None:
    try:
        with _request(reg, "HEAD", f"/v2/{repo}/manifests/{ref}", {"Accept": ACCEPT}) as r:
            return str(r.headers["Docker-Content-Digest"])
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise


def get_manifest(reg: Registry, repo: str, ref: str) -> bytes:
    with _request(reg, "GET", f"/v2/{repo}/manifests/{ref}", {"Accept": ACCEPT}) as r:
        data: bytes = r.read()
        return data


def has_blob(reg: Registry, repo: str, digest: str) -> bool:
    try:
        with _request(reg, "HEAD", f"/v2/{repo}/blobs/{digest}"):
            return True
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return False
        raise


def list_tags(reg: Registry, repo: str) -> list[str]:
    try:
        with _request(reg, "GET", f"/v2/{repo}/tags/list") as r:
            return sorted(json.loads(r.read()).get("tags") or [])
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return []
        raise


def catalog(reg: Registry) -> list[str]:
    with _request(reg, "GET", "/v2/_catalog") as r:
        return sorted(json.loads(r.read()).get("repositories") or [])


def blob_files(reg: Registry) -> int:
    """Blobs stored by the registry (files on its storage), to tell whether anything was uploaded."""
    root = reg.root / "data" / "docker" / "registry" / "v2" / "blobs"
    return sum(1 for p in root.rglob("data")) if root.exists() else 0


def assert_complete(reg: Registry, repo: str, ref: str) -> str:
    """Assert that *ref* resolves to an image whose every child manifest and blob the registry holds."""
    data = get_manifest(reg, repo, ref)
    m = json.loads(data)
    if "manifests" in m:
        for child in m["manifests"]:
            assert head_digest(reg, repo, child["digest"]) == child["digest"], f"{repo}:{ref} lacks {child['digest']}"
            assert_complete(reg, repo, child["digest"])
    else:
        for blob in [m["config"], *m["layers"]]:
            assert has_blob(reg, repo, blob["digest"]), f"{repo}@{ref} lacks blob {blob['digest']}"
    return "sha256:" + hashlib.sha256(data).hexdigest()


skopeo = pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed")


def skopeo_raw(ref: str) -> bytes:
    args = ["skopeo", "inspect", "--raw", *([] if ref.startswith("oci:") else ["--tls-verify=false"]), ref]
    p = subprocess.run(args, capture_output=True, check=False, timeout=60)
    assert p.returncode == 0, p.stderr.decode()
    return p.stdout


@pytest.fixture(name="env")
def env_fixture(hub: HubEmulator, make_registry: Callable[..., Registry], tmp_path: Path) -> Iterator[Env]:
    """A fresh `Env` with LIB_V1 committed (not yet seeded) and a generous pull quota."""
    hub.set_limit(10_000)
    e = Env(hub, make_registry(), tmp_path, tmp_path / "official-images", make_registry)
    e.commit(LIB_V1)
    yield e
