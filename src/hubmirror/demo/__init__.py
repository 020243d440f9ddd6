"""The offline demo of the main job: a Docker Hub emulator and a destination registry on loopback,
seeded with small images named after a few official images, then ``hubmirror sync`` three times:
the first run copies, the second spends no pulls, the third catches an image rebuilt on the "Hub"
under the same tag (no change in git) and copies only that one. A fourth run fills a fresh
destination from a local registry playing mirror.gcr.io (a content mirror): 0 Hub pulls.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

from rich.console import Console
from rich.rule import Rule

from .._errors import HubmirrorError
from ..config import SyncConfig
from ..library import Library, LibrarySource, load_library
from ..testing import images as img
from ..testing.hub import HubEmulator
from ..testing.official import make_library_repo, seed_library
from ..testing.registry import REGISTRY_BIN, Registry, start_registry

#: Off a terminal the console is as wide as a line needs (tables are never cut); a rule is this wide there.
_RULE_WIDTH = 100

#: The tag rebuilt on the emulator before the third run.
REBUILT = ("python", "3.14-slim")


def library_files() -> dict[str, str]:
    """The demo's own small library files (packaged with hubmirror; not copied from upstream)."""
    root = resources.files(__package__).joinpath("library")
    return {f.name: f.read_text() for f in root.iterdir() if f.is_file()}


def run_demo(console: Console, workdir: Path | None = None, *, keep: bool = False) -> int:
    """Run the demo, printing as it goes; returns 0 when every step showed what it should."""
    from ..cli.sync import run_once

    if shutil.which(REGISTRY_BIN) is None and not Path(REGISTRY_BIN).exists():
        raise HubmirrorError(
            "the demo needs Debian's docker-registry (apt-get install docker-registry; scripts/install)"
        )
    work = Path(tempfile.mkdtemp(prefix="hubmirror-demo-")) if workdir is None else workdir
    work.mkdir(parents=True, exist_ok=True)
    registries: list[Registry] = []
    hub: HubEmulator | None = None
    try:
        upstream = start_registry(work / "hub-storage")
        registries.append(upstream)
        dest = start_registry(work / "mirror")
        registries.append(dest)
        hub = HubEmulator(upstream, limit=100).start()
        repo = work / "official-images"
        commit = make_library_repo(repo, library_files(), message="demo library")
        library = img.run_sync(_load(repo))
        digests = img.run_sync(seed_library(upstream, library))
        console.print(
            f"[bold]hubmirror demo[/]: Docker Hub emulator at {hub.url} (token auth, 100 pulls / 6 h),"
            f" mirror registry at {dest.url}, library git repo at {repo} ({commit[:12]}),"
            f" {len(digests)} tags in {len(library.repositories)} repositories seeded."
        )
        cfg = SyncConfig().merge(
            {"library": str(repo), "source": hub.host, "dest": f"{dest.host}/mirror", "state": str(work / "state.db")}
        )
        cache = work / "cache"
        ok = True

        def run(title: str, run_cfg: SyncConfig = cfg, extra: str = "") -> tuple[int, int]:
            assert hub is not None
            console.print(Rule(title), width=_RULE_WIDTH if not console.is_terminal else None)
            console.print(f"$ hubmirror sync --library {repo} --source {hub.host} --dest {run_cfg.dest}{extra}")
            before = hub.manifest_gets()
            code = run_once(run_cfg, cache_dir=cache, json_out=False, verbose=False)
            pulls = hub.manifest_gets() - before
            console.print(f"exit code {code}; pulls spent on the emulator: {pulls}; quota left: {hub.remaining}")
            return code, pulls

        code1, pulls1 = run("1. first sync: everything is copied")
        ok &= code1 == 0 and pulls1 > 0
        code2, pulls2 = run("2. nothing changed: HEADs only, no pulls")
        ok &= code2 == 0 and pulls2 == 0
        name, tag = REBUILT
        rebuilt = img.run_sync(seed_library(upstream, library, repos=[name], generation={name: {tag: 1}}))
        console.print(Rule(), width=_RULE_WIDTH if not console.is_terminal else None)
        console.print(
            f"The emulator rebuilds {name}:{tag} under the same tag (git unchanged): {rebuilt[f'{name}:{tag}'][:19]}…"
        )
        code3, pulls3 = run("3. a rebuilt image is caught by a free HEAD and copied alone")
        ok &= code3 == 0 and 0 < pulls3 < pulls1
        if shutil.which("skopeo"):
            ref = f"docker://{dest.host}/mirror/{name}:{tag}"
            raw = subprocess.run(
                ["skopeo", "inspect", "--raw", "--tls-verify=false", ref], capture_output=True, check=False
            )
            from ..digest import sha256

            same = raw.returncode == 0 and sha256(raw.stdout) == rebuilt[f"{name}:{tag}"]
            console.print(f"skopeo reads {ref}: digest {'matches the source' if same else 'DIFFERS'}")
            ok &= same

        # 4. A content mirror: a local registry plays mirror.gcr.io (the same images at library/<name>).
        gcr = start_registry(work / "mirror-gcr")
        registries.append(gcr)
        fresh = start_registry(work / "fresh")
        registries.append(fresh)
        img.run_sync(seed_library(gcr, library))
        img.run_sync(seed_library(gcr, library, repos=[name], generation={name: {tag: 1}}))
        console.print(Rule(), width=_RULE_WIDTH if not console.is_terminal else None)
        console.print(
            f"A local registry at {gcr.url} plays mirror.gcr.io: it holds the same images by digest. Tags are"
            " still resolved on the Hub (free HEADs); manifests by digest and blobs come from the mirror,"
            " each verified against its digest."
        )
        blobs_before = hub.blob_gets()
        fresh_cfg = cfg.merge(
            {"dest": f"{fresh.host}/mirror", "state": str(work / "state-fresh.db"), "content_mirrors": [gcr.host]}
        )
        code4, pulls4 = run(
            "4. a fresh destination filled from a content mirror", fresh_cfg, f" --content-mirror {gcr.host}"
        )
        blob_gets4 = hub.blob_gets() - blobs_before
        console.print(f"blob downloads from the emulator: {blob_gets4}")
        ok &= code4 == 0 and pulls4 == 0 and blob_gets4 == 0
        console.print(Rule(), width=_RULE_WIDTH if not console.is_terminal else None)
        console.print("[green]demo complete[/]" if ok else "[red]demo: something did not behave as expected[/]")
        return 0 if ok else 1
    finally:
        if hub is not None:
            hub.stop()
        for r in registries:
            r.stop()
        if not keep and workdir is None:
            shutil.rmtree(work, ignore_errors=True)


async def _load(repo: Path) -> Library:
    source = await LibrarySource.open(str(repo))
    return await load_library(source)
