"""Official-images look-alikes: a git repository of library files, and a registry seeded to match it.

For each entry of each library file, one multi-platform index (with attestations) is pushed under the
entry's ``Tags``; each SharedTag group gets the index that combines its entries' children, as Docker
Hub's deploy scripts build it. Repositories share base layers, as real official images do.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..library import Library, Repository
from ..media import DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, Manifest
from . import images as img

#: Base layers shared across repositories (picked by repository name), like debian/alpine bases.
BASES = ("debian", "alpine", "ubuntu")


def make_library_repo(
    path: Path, files: Mapping[str, str | None], *, message: str = "library", branch: str = "master"
) -> str:
    """Create (or add a commit to) a git repository at *path* whose ``library/`` holds *files*.

    A file mapped to None (or ``""``) is removed. Returns the new commit id.
    """
    lib = path / "library"
    if not (path / ".git").exists():
        path.mkdir(parents=True, exist_ok=True)
        git(path, "init", "-q", "-b", branch)
    lib.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        f = lib / name
        if text:
            f.write_text(text)
        elif f.exists():
            f.unlink()
    git(path, "add", "-A", "library")
    git(path, "commit", "-q", "--allow-empty", "-m", message)
    return git(path, "rev-parse", "HEAD")


def git(path: Path, *args: str) -> str:
    """Run git in *path* with a fixed identity and no user config; returns stdout, stripped."""
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "hubmirror",
        "GIT_AUTHOR_EMAIL": "hubmirror@example.invalid",
        "GIT_COMMITTER_NAME": "hubmirror",
        "GIT_COMMITTER_EMAIL": "hubmirror@example.invalid",
        "GIT_CONFIG_GLOBAL": os.devnull,
    }
    run = subprocess.run(["git", *args], cwd=path, env=env, check=True, capture_output=True, text=True)
    return run.stdout.strip()


def combine(indexes: Iterable[img.Index]) -> img.Index:
    """The index of a SharedTag carried by several entries: every child of each, Linux first."""
    parts = list(indexes)
    entries: list[dict[str, Any]] = []
    for ix in parts:
        entries += json.loads(ix.manifest.data)["manifests"]
    entries.sort(key=lambda e: 1 if e.get("platform", {}).get("os") == "windows" else 0)
    media_type = DOCKER_LIST if entries and entries[0]["mediaType"] == DOCKER_MANIFEST else OCI_INDEX
    data = json.dumps({"schemaVersion": 2, "mediaType": media_type, "manifests": entries}, indent=3).encode()
    images = tuple(i for ix in parts for i in ix.images)
    atts = tuple(a for ix in parts for a in ix.attestations)
    return img.Index(Manifest(data, media_type), images, atts)


def repository_indexes(
    repo: Repository, *, generation: Mapping[str, int] | None = None, layer_size: int = 2048
) -> dict[str, img.Index]:
    """Every tag of *repo* → the index Docker Hub would serve for it.

    *generation* maps a tag to a rebuild number: bumping it rebuilds that tag's entry (new digest).
    """
    generation = generation or {}
    base = img.base_layer(BASES[sum(map(ord, repo.name)) % len(BASES)], 4096)
    by_entry: dict[str, img.Index] = {}
    for entry in repo.entries:
        gen = max((generation.get(t, 0) for t in entry.tags), default=0)
        by_entry[entry.key] = img.index(
            f"{repo.name}/{entry.key}", entry.platforms, base=[base], layers=(layer_size,), generation=gen
        )
    out: dict[str, img.Index] = {}
    for group in repo.tag_groups():
        members = [by_entry[k] for k in group.entries if k in by_entry]
        if not members:
            continue
        ix = members[0] if len(members) == 1 else combine(members)
        for tag in group.tags:
            out[tag] = ix
    return out


async def seed_library(
    target: Any,
    library: Library,
    *,
    repos: Iterable[str] | None = None,
    generation: Mapping[str, Mapping[str, int]] | None = None,
    layer_size: int = 2048,
    prefix: str = "",
) -> dict[str, str]:
    """Push every tag of *library* (or of *repos*) to *target* under ``[PREFIX/]library/<repo>``.

    Returns ``repo:tag`` → digest. *generation* maps repo → tag → rebuild number. A *prefix* lays the
    images out as a content mirror such as ``public.ecr.aws/docker`` does (``docker/library/<repo>``).
    """
    root = f"{prefix.strip('/')}/library" if prefix.strip("/") else "library"
    wanted = set(repos) if repos is not None else None
    digests: dict[str, str] = {}
    async with img.Pusher(img._target(target, None)[0]) as pusher:
        for name, repo in sorted(library.repositories.items()):
            if wanted is not None and name not in wanted:
                continue
            tags_by_index: dict[str, tuple[img.Index, list[str]]] = {}
            for tag, ix in repository_indexes(
                repo, generation=(generation or {}).get(name), layer_size=layer_size
            ).items():
                tags_by_index.setdefault(ix.digest, (ix, []))[1].append(tag)
                digests[f"{name}:{tag}"] = ix.digest
            for ix, tags in tags_by_index.values():
                await pusher.push(f"{root}/{name}", ix, tags)
    return digests
