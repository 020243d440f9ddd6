"""Benchmark of ``hubmirror sync`` (issue 4, item 9): cold, no-op and incremental sync of a synthetic
official-like library, against ``skopeo sync --all`` and a plain streaming copy of the same blobs.

What it builds (all on loopback, in a temporary directory removed at the end):

- a git repository of bashbrew library files: ``--repos`` repositories named after official images,
  each with several entries (3–6 tags each, SharedTags, 2–5 architectures, a Windows entry sharing
  ``latest`` in some repositories), like docker-library/official-images;
- a source ``docker-registry`` seeded to match it (OCI indexes with attestations, base layers shared
  across repositories per architecture, per-image layers of jittered sizes), served through the Hub
  emulator with the rate limit disabled, so manifest GETs/HEADs and blob downloads are counted;
- a fresh destination registry per tool.

Each measured run is one subprocess (``hubmirror sync``, ``skopeo sync`` or the plain copy below), so
wall time and peak RSS (``os.wait4`` rusage) are that tool's own. Cases: cold sync, no-op (second)
sync, incremental sync after ``--rebuild`` of the tags was rebuilt on the source (git unchanged).
The plain copy (``python bench/sync.py plain-copy …``) GETs every distinct blob of the selected
images and PUTs it monolithically (cross-repository mount for repeats), plus the manifests, with
the same blob concurrency: the lower bound for moving the same bytes.

    python bench/sync.py [--repos 24] [--base-mib 4] [--layers-kib 16,96,512] [--json] [--no-skopeo]

Goals (issue 4): cold ≤ 0.4× skopeo and ≤ 1.3× the plain copy; no-op ≤ 0.15× skopeo with 0 GETs.

Issue 9's no-op case, ``sync --list`` against plain local registries (no emulator in between), start-up
included. The no-op runs of the two tools are taken in turn, and the figure is the median of the
pairs' ratios, so a change in the machine's load hits both alike. The issue's shape is 3 repositories
(~70 tags):

    python bench/sync.py --direct --list --repos 3 --noop-runs 7
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import aiohttp
import yaml
from _measure import byte_compile_hubmirror, run_measured

from hubmirror.library import Library, LibrarySource, Repository, load_library
from hubmirror.media import DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, Manifest
from hubmirror.testing import images as img
from hubmirror.testing.hub import HubEmulator
from hubmirror.testing.official import combine, make_library_repo
from hubmirror.testing.registry import Registry, start_registry

HUBMIRROR = str(Path(sys.executable).parent / "hubmirror")
ACCEPT = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST))
NAMESPACE = "mirror"

NAMES = (
    "python", "node", "golang", "redis", "postgres", "nginx", "httpd", "mysql", "mariadb", "mongo",
    "ruby", "php", "openjdk", "eclipse-temurin", "rust", "perl", "haproxy", "memcached", "rabbitmq", "traefik",
    "busybox", "alpine", "debian", "ubuntu", "fedora", "amazonlinux", "gcc", "erlang", "elixir", "julia",
    "ghost", "wordpress", "drupal", "nextcloud", "tomcat", "jetty", "maven", "gradle", "cassandra", "couchdb",
)  # fmt: skip
ARCHES = ("amd64", "arm64v8", "arm32v7", "ppc64le", "s390x", "i386", "arm32v6", "riscv64")
CODENAMES = ("bookworm", "trixie", "bullseye")
#: Entry variants: tag suffix and the base image its layers start from.
VARIANTS = (("", "debian"), ("-slim", "debian"), ("-alpine", "alpine"), ("-jammy", "ubuntu"))


# -- the synthetic library ------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """Shape and size of the synthetic library (command-line flags)."""

    repos: int = 24
    entries: tuple[int, int] = (2, 6)
    platforms: tuple[int, int] = (2, 5)
    windows_fraction: float = 0.2
    base_mib: float = 4.0
    layers_kib: tuple[int, ...] = (16, 96, 512)
    seed: int = 1


def library_files(spec: Spec) -> dict[str, str]:
    """Bashbrew library files: file name → text."""
    rng = random.Random(spec.seed)
    files: dict[str, str] = {}
    for n in range(spec.repos):
        name = NAMES[n % len(NAMES)] + (f"{n // len(NAMES)}" if n >= len(NAMES) else "")
        arches = list(ARCHES[:2]) + rng.sample(ARCHES[2:], rng.randint(*spec.platforms) - 2)
        major, top_minor, patch = rng.randint(1, 20), rng.randint(3, 12), rng.randint(0, 9)
        cn = rng.choice(CODENAMES)
        windows = rng.random() < spec.windows_fraction
        out = [
            "# Synthetic library file written by hubmirror's bench/sync.py.",
            f"Maintainers: Bench <bench@example.invalid> (@bench)\nGitRepo: https://example.invalid/{name}.git\n",
        ]
        for j in range(rng.randint(*spec.entries)):
            minor = top_minor - j // len(VARIANTS)
            sfx, _ = VARIANTS[j % len(VARIANTS)]
            v, full = f"{major}.{minor}", f"{major}.{minor}.{patch}"
            ntags = rng.randint(3, 6)
            commit = hashlib.sha1(f"{name}/{j}".encode()).hexdigest()
            lines: list[str] = []
            if sfx == "":
                tags = [f"{full}-{cn}", f"{v}-{cn}", f"{full}-{cn}-r1", f"{v}-{cn}-r1"][: max(2, ntags - 2)]
                shared = [full, v] + ([str(major), "latest"] if j == 0 else [])
                lines += [f"Tags: {', '.join(tags)}", f"SharedTags: {', '.join(shared)}"]
            else:
                tags = [
                    f"{full}{sfx}",
                    f"{v}{sfx}",
                    f"{full}{sfx}-r1",
                    f"{v}{sfx}-r1",
                    f"{full}{sfx}-b2",
                    f"{v}{sfx}-b2",
                ]
                lines.append(f"Tags: {', '.join(tags[:ntags])}")
            entry_arches = arches if sfx != "-jammy" else arches[:2]
            lines += [
                f"Architectures: {', '.join(entry_arches)}",
                f"GitCommit: {commit}",
                f"Directory: {v}/{sfx or cn}",
            ]
            out.append("\n".join(lines) + "\n")
            if j == 0 and windows:
                w = "windowsservercore-ltsc2022"
                out.append(
                    f"Tags: {full}-{w}, {v}-{w}\nSharedTags: {full}, {v}, {major}, latest\n"
                    f"Architectures: windows-amd64\nGitCommit: {commit}\nDirectory: {v}/windows/{w}\n"
                    f"Constraints: {w}\n"
                )
        files[name] = "\n".join(out)
    return files


class Builder:
    """Images for the library's entries: base layers per (base, architecture), jittered own layers."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self._bases: dict[tuple[str, str], img.Blob] = {}
        self.sizes: dict[str, int] = {}  # every pushable blob: digest → size

    def base(self, name: str, platform: str) -> img.Blob:
        key = (name, platform)
        if key not in self._bases:
            jitter = random.Random(f"{name}/{platform}").uniform(0.6, 1.4)
            self._bases[key] = img.layer(f"base:{name}:{platform}", int(self.spec.base_mib * jitter * (1 << 20)))
        return self._bases[key]

    def entry_index(self, repo: str, entry: Any, generation: int) -> img.Index:
        """The OCI index (with attestations) of one entry, as BuildKit pushes it."""
        variant = next((b for s, b in VARIANTS if s and s in entry.key), "debian")
        rng = random.Random(f"{repo}/{entry.key}")
        sizes = [max(256, int(k * 1024 * rng.uniform(0.5, 1.5))) for k in self.spec.layers_kib]
        images = []
        for p in entry.platforms:
            pname = str(p)
            windows = p.os == "windows"
            base = [] if windows else [self.base(variant, pname)]
            images.append(
                img.image(f"{repo}/{entry.key}", p, layers=sizes, base=base, foreign=windows, generation=generation)
            )
        atts = [img.attestation(i, f"{repo}/{entry.key}/{generation}") for i in images]
        entries: list[dict[str, Any]] = [
            {"mediaType": i.media_type, "digest": i.digest, "size": i.size, "platform": img._platform_json(i.platform)}
            for i in images
        ]
        entries += [
            {
                "mediaType": a.media_type,
                "digest": a.digest,
                "size": a.size,
                "annotations": {
                    "vnd.docker.reference.digest": i.digest,
                    "vnd.docker.reference.type": "attestation-manifest",
                },
                "platform": {"architecture": "unknown", "os": "unknown"},
            }
            for i, a in zip(images, atts, strict=True)
        ]
        data = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}, indent=3).encode()
        ix = img.Index(Manifest(data, OCI_INDEX), tuple(images), tuple(atts))
        for child in ix.children:
            for b in child.blobs:
                if not b.is_foreign:
                    self.sizes[b.digest] = b.size
        return ix

    def repository_indexes(self, repo: Repository, generation: Mapping[str, int]) -> dict[str, img.Index]:
        """Every tag of *repo* → its index (SharedTag groups combine their entries' children)."""
        by_entry = {
            e.key: self.entry_index(repo.name, e, max((generation.get(t, 0) for t in e.tags), default=0))
            for e in repo.entries
        }
        out: dict[str, img.Index] = {}
        for group in repo.tag_groups():
            members = [by_entry[k] for k in group.entries if k in by_entry]
            if members:
                ix = members[0] if len(members) == 1 else combine(members)
                out.update(dict.fromkeys(group.tags, ix))
        return out


async def seed(
    registry: Registry,
    library: Library,
    builder: Builder,
    *,
    repos: Iterable[str] | None = None,
    generation: Mapping[str, Mapping[str, int]] | None = None,
) -> dict[str, str]:
    """Push the library's tags (or those of *repos*) to ``library/<repo>``; ``repo:tag`` → digest."""
    wanted = set(repos) if repos is not None else None
    digests: dict[str, str] = {}
    async with img.Pusher(registry.url, concurrency=8) as pusher:
        for name, repo in sorted(library.repositories.items()):
            if wanted is not None and name not in wanted:
                continue
            groups: dict[str, tuple[img.Index, list[str]]] = {}
            for tag, ix in builder.repository_indexes(repo, (generation or {}).get(name, {})).items():
                groups.setdefault(ix.digest, (ix, []))[1].append(tag)
                digests[f"{name}:{tag}"] = ix.digest
            for ix, tags in groups.values():  # one index at a time: concurrent pushes of a shared blob race
                await pusher.push(f"library/{name}", ix, tags)
    return digests


def pick_rebuild(library: Library, fraction: float, seed_: int) -> tuple[dict[str, dict[str, int]], set[str]]:
    """Entries to rebuild until about *fraction* of all tags change: (generation map, repos touched)."""
    rng = random.Random(seed_ + 1)
    entries = [(name, e) for name, r in sorted(library.repositories.items()) for e in r.entries if not e.windows]
    total = sum(len(e.tags) + len(e.shared_tags) for r in library.repositories.values() for e in r.entries)
    rng.shuffle(entries)
    gen: dict[str, dict[str, int]] = {}
    changed = 0
    for name, e in entries:
        if changed >= fraction * total:
            break
        gen.setdefault(name, {})[e.tags[0]] = 1
        changed += len(e.tags) + len(e.shared_tags)
    return gen, set(gen)


# -- measuring ------------------------------------------------------------------------------------


@dataclass
class Run:
    """One measured subprocess run."""

    tool: str
    case: str
    wall_s: float
    peak_rss_mib: float
    exit_code: int
    manifest_gets: int | None = None
    manifest_heads: int | None = None
    blob_gets: int | None = None
    src_mib_read: float | None = None
    dest_mib_written: float = 0.0
    digests_ok: bool | None = None
    cpu_s: float = 0.0
    cpu_s_per_gib: float | None = None  # CPU seconds per GiB of distinct blob bytes copied
    detail: dict[str, Any] = field(default_factory=dict)


class Registries:
    """The benchmark's ``docker-registry`` processes, each under its own directory of *work*."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.started: list[Registry] = []

    def __call__(self, name: str) -> Registry:
        reg = start_registry(self.work / name)
        self.started.append(reg)
        return reg

    def stop(self) -> None:
        for reg in self.started:
            reg.stop()


def synthetic_library(work: Path, spec: Spec, source: Registry) -> tuple[Path, Library, Builder, dict[str, str]]:
    """The library's git repository under *work* and its images seeded into *source*: (repository path,
    library, builder, ``repo:tag`` → digest)."""
    lib_path = work / "official-images"
    make_library_repo(lib_path, library_files(spec), message="synthetic library")
    library = img.run_sync(_load(lib_path))
    builder = Builder(spec)
    expected = img.run_sync(seed(source, library, builder))
    return lib_path, library, builder, expected


def store_bytes(reg: Registry) -> int:
    """Bytes in the registry's blob store (layers, configs and manifests)."""
    root = reg.root / "data" / "docker" / "registry" / "v2" / "blobs"
    return sum(p.stat().st_size for p in root.rglob("data")) if root.exists() else 0


class Bench:
    """The registries, the emulator and the measured runs."""

    def __init__(self, work: Path, hub: HubEmulator | None, source: Registry, builder: Builder) -> None:
        self.work, self.hub, self.source, self.builder = work, hub, source, builder
        self.runs: list[Run] = []

    @property
    def source_host(self) -> str:
        return self.hub.host if self.hub is not None else self.source.host

    def measure(self, tool: str, case: str, cmd: list[str], dest: Registry, env: dict[str, str] | None = None) -> Run:
        hub = self.hub
        before = (hub.manifest_gets(), hub.manifest_heads(), hub.blob_gets(), len(hub.cdn_records)) if hub else None
        stored = store_bytes(dest)
        log = self.work / f"{tool}-{case}"
        with open(f"{log}.out", "wb") as out, open(f"{log}.err", "wb") as err:
            m = run_measured(cmd, stdout=out, stderr=err, env=env)
        run = Run(tool, case, round(m.wall_s, 2), round(m.peak_rss_mib, 1), m.code, cpu_s=round(m.cpu_s, 2))
        if hub is not None and before is not None:
            run.manifest_gets = hub.manifest_gets() - before[0]
            run.manifest_heads = hub.manifest_heads() - before[1]
            run.blob_gets = hub.blob_gets() - before[2]
            cdn = hub.cdn_records[before[3] :]
            run.src_mib_read = round(sum(self.builder.sizes.get(r.digest, 0) for r in cdn) / (1 << 20), 1)
        run.dest_mib_written = round((store_bytes(dest) - stored) / (1 << 20), 1)
        if run.dest_mib_written >= 1:
            run.cpu_s_per_gib = round(run.cpu_s / (run.dest_mib_written / 1024), 2)
        if m.code != 0:
            tail = Path(f"{log}.err").read_text(errors="replace")[-1500:]
            print(f"!! {tool} {case} exited {m.code}:\n{tail}", file=sys.stderr)
        print(f"   {tool:9} {case:11} {m.wall_s:7.2f} s  exit {m.code}", file=sys.stderr)
        self.runs.append(run)
        return run


async def check_digests(dest: Registry, prefix: str, expected: Mapping[str, str]) -> tuple[int, list[str]]:
    """HEAD every ``repo:tag`` of *expected* under *prefix* on *dest*: (matching count, mismatches)."""
    sem = asyncio.Semaphore(16)
    bad: list[str] = []

    async def one(s: aiohttp.ClientSession, ref: str, digest: str) -> bool:
        repo, tag = ref.split(":")
        async with sem, s.head(f"{dest.url}/v2/{prefix}{repo}/manifests/{tag}", headers={"Accept": ACCEPT}) as r:
            got = r.headers.get("Docker-Content-Digest") if r.status == 200 else f"HTTP {r.status}"
        ok = got == digest
        if not ok:
            bad.append(f"{ref} ({str(got)[:19]} ≠ {digest[:19]})")
        return ok

    async with aiohttp.ClientSession() as s:
        res = await asyncio.gather(*(one(s, ref, d) for ref, d in expected.items()))
    return sum(res), sorted(bad)


def verify(run: Run, dest: Registry, prefix: str, expected: Mapping[str, str]) -> None:
    _, bad = asyncio.run(check_digests(dest, prefix, expected))
    run.digests_ok = not bad
    if bad:
        run.detail["digest_mismatches"] = len(bad)
        print(f"!! {run.tool} {run.case}: {len(bad)} of {len(expected)} tags differ, e.g. {bad[:3]}", file=sys.stderr)


# -- the plain streaming copy (run as `python bench/sync.py plain-copy ...`) ------------------------

_PARAM = re.compile(r'(\w+)="([^"]*)"')


class PlainCopy:
    """GET every distinct blob and manifest from the source, PUT it to the destination; nothing else."""

    def __init__(self, s: aiohttp.ClientSession, src: str, dst: str, concurrency: int) -> None:
        self.s, self.src, self.dst = s, f"http://{src}", f"http://{dst}"
        self.sem = asyncio.Semaphore(concurrency)
        self.tokens: dict[str, str] = {}
        self.stats = {"manifest_gets": 0, "blob_uploads": 0, "blob_mounts": 0, "bytes": 0, "manifest_puts": 0}

    async def _auth(self, repo: str) -> dict[str, str]:
        tok = self.tokens.get(repo)
        return {"Authorization": f"Bearer {tok}"} if tok else {}

    async def _token(self, repo: str, challenge: str) -> None:
        p = dict(_PARAM.findall(challenge))
        q = {"service": p.get("service", ""), "scope": f"repository:{repo}:pull"}
        async with self.s.get(p["realm"], params=q) as r:
            obj = await r.json()
        self.tokens[repo] = str(obj.get("token") or obj.get("access_token"))

    async def get_manifest(self, repo: str, ref: str) -> tuple[bytes, str]:
        for _ in range(2):
            headers = {"Accept": ACCEPT, **await self._auth(repo)}
            async with self.sem, self.s.get(f"{self.src}/v2/{repo}/manifests/{ref}", headers=headers) as r:
                if r.status == 401:
                    await self._token(repo, r.headers.get("WWW-Authenticate", ""))
                    continue
                r.raise_for_status()
                self.stats["manifest_gets"] += 1
                return await r.read(), r.headers["Content-Type"]
        raise RuntimeError(f"unauthorised: {repo}:{ref}")

    async def put_manifest(self, repo: str, ref: str, data: bytes, media_type: str) -> None:
        async with (
            self.sem,
            self.s.put(f"{self.dst}/v2/{repo}/manifests/{ref}", data=data, headers={"Content-Type": media_type}) as r,
        ):
            if r.status != 201:
                raise RuntimeError(f"PUT manifest {repo}:{ref}: {r.status} {await r.text()}")
            self.stats["manifest_puts"] += 1

    async def copy_blob(self, src_repo: str, dst_repo: str, digest: str, size: int) -> None:
        async with self.sem:
            headers = await self._auth(src_repo)
            async with self.s.get(f"{self.src}/v2/{src_repo}/blobs/{digest}", headers=headers) as g:
                g.raise_for_status()
                async with self.s.post(f"{self.dst}/v2/{dst_repo}/blobs/uploads/") as p:
                    loc = urljoin(f"{self.dst}/v2/{dst_repo}/blobs/uploads/", p.headers["Location"])
                loc += ("&" if "?" in loc else "?") + f"digest={digest}"

                async def body() -> AsyncIterator[bytes]:
                    async for chunk in g.content.iter_chunked(1 << 20):
                        yield chunk

                hdrs = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
                async with self.s.put(loc, data=body(), headers=hdrs) as u:
                    if u.status != 201:
                        raise RuntimeError(f"PUT blob {digest}: {u.status} {await u.text()}")
        self.stats["blob_uploads"] += 1
        self.stats["bytes"] += size

    async def mount(self, from_repo: str, dst_repo: str, digest: str) -> None:
        async with (
            self.sem,
            self.s.post(f"{self.dst}/v2/{dst_repo}/blobs/uploads/", params={"mount": digest, "from": from_repo}) as r,
        ):
            if r.status != 201:
                raise RuntimeError(f"mount {digest} into {dst_repo}: {r.status}")
        self.stats["blob_mounts"] += 1

    async def run(self, refs: list[tuple[str, str, str]]) -> None:
        """*refs*: (source repo, tag, destination repo)."""
        dst_of = {r: d for r, _, d in refs}
        tops = await asyncio.gather(*(self.get_manifest(r, t) for r, t, _ in refs))
        images: dict[tuple[str, str], tuple[bytes, str]] = {}  # (src repo, digest) → manifest
        children: set[tuple[str, str]] = set()
        for (repo, _, _), (data, mt) in zip(refs, tops, strict=True):
            obj = json.loads(data)
            if "manifests" in obj:
                children.update((repo, m["digest"]) for m in obj["manifests"])
            else:
                images[(repo, "sha256:" + hashlib.sha256(data).hexdigest())] = (data, mt)
        wanted = sorted(children - set(images))
        images.update(zip(wanted, await asyncio.gather(*(self.get_manifest(r, d) for r, d in wanted)), strict=True))
        blobs: dict[tuple[str, str], int] = {}  # (src repo, digest) → size
        for (repo, _), (data, _) in images.items():
            obj = json.loads(data)
            for b in [obj["config"], *obj.get("layers", [])]:
                if not b.get("urls"):
                    blobs[(repo, b["digest"])] = b["size"]
        first: dict[str, asyncio.Future[str]] = {}  # digest → the destination repository that got it first

        async def blob(repo: str, digest: str, size: int) -> None:
            dst = dst_of[repo]
            if digest in first:
                holder = await first[digest]
                if holder != dst:
                    await self.mount(holder, dst, digest)
                return
            fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            first[digest] = fut
            await self.copy_blob(repo, dst, digest, size)
            fut.set_result(dst)

        await asyncio.gather(*(blob(r, d, n) for (r, d), n in blobs.items()))
        await asyncio.gather(*(self.put_manifest(dst_of[r], d, *m) for (r, d), m in images.items()))
        await asyncio.gather(
            *(self.put_manifest(dst, tag, *top) for (_, tag, dst), top in zip(refs, tops, strict=True))
        )


async def plain_copy_main(src: str, dst: str, refs: list[tuple[str, str, str]], concurrency: int) -> dict[str, int]:
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    async with aiohttp.ClientSession(timeout=timeout) as s:
        pc = PlainCopy(s, src, dst, concurrency)
        await pc.run(refs)
    return pc.stats


# -- the cases ------------------------------------------------------------------------------------


def hubmirror_cmd(
    bench: Bench, dest: Registry, library: Path, args: argparse.Namespace, tags: Mapping[str, list[str]]
) -> list[str]:
    cfg = bench.work / "hubmirror.yaml"
    selection: dict[str, Any] = {"library": str(library)}
    if args.list:  # the same images as an explicit list (docker.io names, read from the source)
        listing = bench.work / "images.txt"
        listing.write_text("".join(f"docker.io/library/{r}:{t}\n" for r, ts in sorted(tags.items()) for t in ts))
        selection = {"list": str(listing)}
    cfg.write_text(
        yaml.safe_dump(
            {
                **selection,
                "source": bench.source_host,
                "dest": f"{dest.host}/{NAMESPACE}",
                "state": str(bench.work / "hubmirror-state.db"),
                "windows": True,  # copy the same thing skopeo --all copies (indexes verbatim)
                "concurrency": args.concurrency,
                "blob_concurrency": args.blob_concurrency,
            }
        )
    )
    return [HUBMIRROR, "sync", "--config", str(cfg), "--json", "--cache-dir", str(bench.work / "cache")]


def skopeo_cmd(bench: Bench, dest: Registry, tags: Mapping[str, list[str]]) -> tuple[list[str], dict[str, str]]:
    src = bench.work / "skopeo-src.yaml"
    images = {f"library/{repo}": sorted(t) for repo, t in sorted(tags.items())}
    src.write_text(yaml.safe_dump({bench.source_host: {"tls-verify": False, "images": images}}))
    home = bench.work / "skopeo-home"
    home.mkdir(exist_ok=True)
    env = {**os.environ, "HOME": str(home), "REGISTRY_AUTH_FILE": str(home / "auth.json")}
    cmd = [
        "skopeo",
        "sync",
        "--all",
        "--preserve-digests",
        "--src",
        "yaml",
        "--dest",
        "docker",
        "--dest-tls-verify=false",
    ]
    return [*cmd, str(src), f"{dest.host}/{NAMESPACE}"], env


def paired_ratio(runs: list[Run], case: str) -> float | None:
    """The median of hubmirror/skopeo wall-time ratios of *case* runs taken in turn (pair by pair)."""
    hm = [r.wall_s for r in runs if (r.tool, r.case) == ("hubmirror", case)]
    sk = [r.wall_s for r in runs if (r.tool, r.case) == ("skopeo", case)]
    pairs = [a / b for a, b in zip(hm, sk, strict=False) if b]
    return round(statistics.median(pairs), 3) if pairs else None


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def table(runs: list[Run]) -> str:
    cols = (
        "tool",
        "case",
        "wall s",
        "CPU s",
        "CPU s/GiB",
        "mf GET",
        "mf HEAD",
        "blob GET",
        "src MiB",
        "dst MiB",
        "RSS MiB",
        "exit",
        "digests",
    )
    rows = [
        (
            r.tool,
            r.case,
            f"{r.wall_s:.2f}",
            f"{r.cpu_s:.2f}",
            "-" if r.cpu_s_per_gib is None else f"{r.cpu_s_per_gib:.2f}",
            *("-" if v is None else str(v) for v in (r.manifest_gets, r.manifest_heads, r.blob_gets, r.src_mib_read)),
            f"{r.dest_mib_written:.1f}",
            f"{r.peak_rss_mib:.0f}",
            str(r.exit_code),
            {True: "ok", False: "DIFFER", None: "-"}[r.digests_ok],
        )
        for r in runs
    ]
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
             for row in [cols, *rows]]  # fmt: skip
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "plain-copy":
        ap = argparse.ArgumentParser(prog="bench/sync.py plain-copy")
        ap.add_argument("src")
        ap.add_argument("dst")
        ap.add_argument("refs", type=Path)
        ap.add_argument("--concurrency", type=int, default=4)
        a = ap.parse_args(sys.argv[2:])
        todo = [(r, t, d) for r, t, d in (line.split(",") for line in a.refs.read_text().split())]
        print(json.dumps(asyncio.run(plain_copy_main(a.src, a.dst, todo, a.concurrency))))
        return 0

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repos", type=int, default=24, help="repositories in the library (default 24)")
    ap.add_argument("--entries", default="2-6", help="entries per repository, MIN-MAX (default 2-6)")
    ap.add_argument("--platforms", default="2-5", help="architectures per repository, MIN-MAX (default 2-5)")
    ap.add_argument("--windows-fraction", type=float, default=0.2, help="repositories with a Windows entry")
    ap.add_argument("--base-mib", type=float, default=4.0, help="base layer size per (base, arch), ±40%% (4)")
    ap.add_argument("--layers-kib", default="16,96,512", help="per-image layer sizes in KiB, ±50%%")
    ap.add_argument("--rebuild", type=float, default=0.1, help="fraction of tags rebuilt for the incremental case")
    ap.add_argument("--concurrency", type=int, default=8, help="hubmirror images in parallel (default 8)")
    ap.add_argument("--blob-concurrency", type=int, default=4, help="blob transfers in parallel (hubmirror, plain)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--direct", action="store_true", help="read the source registry directly (no emulator, no counts)")
    ap.add_argument("--no-skopeo", action="store_true", help="skip skopeo even when installed")
    ap.add_argument("--list", action="store_true", help="hubmirror reads an image list, not the library")
    ap.add_argument("--noop-runs", type=int, default=1, help="no-op runs per tool, in turn (median pair ratio)")
    ap.add_argument(
        "--cold-only",
        action="store_true",
        help="throughput only: hubmirror's cold sync (and one no-op run, its fixed cost) and the plain copy",
    )
    ap.add_argument("--rounds", type=int, default=3, help="--cold-only: hubmirror/plain pairs (median ratio)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, registries' storage)")
    ap.add_argument(
        "--profile",
        type=Path,
        metavar="FILE",
        help="run hubmirror's cold sync under `py-spy record --format raw` into FILE (collapsed stacks; "
        "its wall time and RSS then include py-spy)",
    )
    ap.add_argument(
        "--cprofile",
        type=Path,
        metavar="FILE",
        help="run hubmirror's cold sync under cProfile, stats into FILE (read with pstats; its CPU then "
        "includes the profiler)",
    )
    args = ap.parse_args()
    byte_compile_hubmirror()

    def pair(s: str) -> tuple[int, int]:
        lo, _, hi = s.partition("-")
        return int(lo), int(hi or lo)

    spec = Spec(
        repos=args.repos,
        entries=pair(args.entries),
        platforms=pair(args.platforms),
        windows_fraction=args.windows_fraction,
        base_mib=args.base_mib,
        layers_kib=tuple(int(x) for x in args.layers_kib.split(",")),
        seed=args.seed,
    )
    use_skopeo = not args.no_skopeo and shutil.which("skopeo") is not None
    work = Path(tempfile.mkdtemp(prefix="hubmirror-bench-sync-"))
    registry = Registries(work)
    hub: HubEmulator | None = None
    try:
        t0 = time.monotonic()
        source = registry("source")
        if not args.direct:
            hub = HubEmulator(source, limit=None).start()
        lib_path, library, builder, expected = synthetic_library(work, spec, source)
        tags: dict[str, list[str]] = {}
        for ref in expected:
            repo, tag = ref.split(":")
            tags.setdefault(repo, []).append(tag)
        distinct = len(set(expected.values()))
        total_mib = sum(builder.sizes.values()) / (1 << 20)
        setup = {
            "repositories": len(library.repositories),
            "entries": sum(len(r.entries) for r in library.repositories.values()),
            "tags": len(expected),
            "distinct_top_manifests": distinct,
            "blobs": len(builder.sizes),
            "blob_mib": round(total_mib, 1),
            "seed_s": round(time.monotonic() - t0, 1),
            "source": "hub emulator (no rate limit)" if hub else "docker-registry (direct)",
            "concurrency": args.concurrency,
            "blob_concurrency": args.blob_concurrency,
        }
        print(f"library: {json.dumps(setup)}", file=sys.stderr)
        bench = Bench(work, hub, source, builder)
        prefix = f"{NAMESPACE}/"
        if args.cold_only:
            return _throughput(bench, registry, lib_path, args, tags, prefix, expected, setup)

        # Cold runs, then the no-op runs interleaved (hubmirror, skopeo, hubmirror, …): paired, so a change
        # in the machine's load while they run hits both tools alike.
        hm_dest = registry("dest-hubmirror")
        hm = hubmirror_cmd(bench, hm_dest, lib_path, args, tags)
        cmd = hm
        if args.profile is not None:
            cmd = ["py-spy", "record", "--format", "raw", "--rate", "200", "-o", str(args.profile), "--", *hm]
        elif args.cprofile is not None:
            cmd = [sys.executable, "-m", "cProfile", "-o", str(args.cprofile), *hm]
        run = bench.measure("hubmirror", "cold", cmd, hm_dest)
        verify(run, hm_dest, prefix, expected)
        _hubmirror_detail(run, work)
        sk_dest = registry("dest-skopeo") if use_skopeo else None
        if sk_dest is not None:
            sk, env = skopeo_cmd(bench, sk_dest, tags)
            run = bench.measure("skopeo", "cold", sk, sk_dest, env)
            verify(run, sk_dest, prefix, expected)
        for _ in range(args.noop_runs):
            run = bench.measure("hubmirror", "noop", hm, hm_dest)
            verify(run, hm_dest, prefix, expected)
            _hubmirror_detail(run, work)
            if sk_dest is not None:
                run = bench.measure("skopeo", "noop", sk, sk_dest, env)
                verify(run, sk_dest, prefix, expected)
        # plain streaming copy: cold
        pc_dest = registry("dest-plain")
        refs = work / "plain-refs.txt"
        refs.write_text("".join(f"library/{r},{t},{prefix}{r}\n" for r, ts in sorted(tags.items()) for t in ts))
        pc = [sys.executable, __file__, "plain-copy", bench.source_host, pc_dest.host, str(refs)]
        run = bench.measure("plain", "cold", [*pc, "--concurrency", str(args.blob_concurrency)], pc_dest)
        verify(run, pc_dest, prefix, expected)

        # rebuild ~10 % of the tags on the source (git unchanged), then incremental runs
        gen, touched = pick_rebuild(library, args.rebuild, args.seed)
        rebuilt = img.run_sync(seed(source, library, builder, repos=touched, generation=gen))
        changed = {ref for ref, d in rebuilt.items() if expected[ref] != d}
        expected = {**expected, **rebuilt}
        setup["incremental_tags_changed"] = len(changed)
        print(f"rebuilt {len(changed)} of {len(expected)} tags in {len(touched)} repositories", file=sys.stderr)
        run = bench.measure("hubmirror", "incremental", hm, hm_dest)
        verify(run, hm_dest, prefix, expected)
        _hubmirror_detail(run, work)
        if sk_dest is not None:
            run = bench.measure("skopeo", "incremental", sk, sk_dest, env)
            verify(run, sk_dest, prefix, expected)

        by = {(r.tool, r.case): r for r in bench.runs}

        def wall(tool: str, case: str) -> float | None:
            walls = [r.wall_s for r in bench.runs if (r.tool, r.case) == (tool, case)]
            return statistics.median(walls) if walls else None

        ratios = {
            "cold_vs_skopeo": ratio(wall("hubmirror", "cold"), wall("skopeo", "cold")),
            "noop_vs_skopeo": paired_ratio(bench.runs, "noop"),
            "incremental_vs_skopeo": ratio(wall("hubmirror", "incremental"), wall("skopeo", "incremental")),
            "cold_vs_plain": ratio(wall("hubmirror", "cold"), wall("plain", "cold")),
        }
        noop = by[("hubmirror", "noop")]
        goals = {
            "cold_vs_skopeo<=0.4": None if ratios["cold_vs_skopeo"] is None else ratios["cold_vs_skopeo"] <= 0.4,
            "noop_vs_skopeo<=0.15": None if ratios["noop_vs_skopeo"] is None else ratios["noop_vs_skopeo"] <= 0.15,
            "noop_manifest_gets==0": None if noop.manifest_gets is None else noop.manifest_gets == 0,
            "cold_vs_plain<=1.3": None if ratios["cold_vs_plain"] is None else ratios["cold_vs_plain"] <= 1.3,
        }
        if args.json:
            print(
                json.dumps(
                    {"setup": setup, "runs": [asdict(r) for r in bench.runs], "ratios": ratios, "goals": goals},
                    indent=2,
                )
            )
        else:
            print(f"\nsynthetic library: {json.dumps(setup)}\n")
            print(table(bench.runs))
            print()
            for k, v in ratios.items():
                print(f"hubmirror/{k.replace('_vs_', ' vs ')}: {'-' if v is None else f'{v:.3f}x'}")
            print(
                "goals: "
                + ", ".join(f"{k} {'-' if v is None else ('met' if v else 'MISSED')}" for k, v in goals.items())
            )
        ok = all(r.exit_code == 0 and r.digests_ok for r in bench.runs)
        return 0 if ok else 1
    finally:
        if hub is not None:
            hub.stop()
        registry.stop()
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def _throughput(
    bench: Bench,
    new_registry: Callable[[str], Registry],
    library: Path,
    args: argparse.Namespace,
    tags: Mapping[str, list[str]],
    prefix: str,
    expected: Mapping[str, str],
    setup: dict[str, Any],
) -> int:
    """``--cold-only``: hubmirror's cold sync against the plain copy, in wall time and CPU, in ``--rounds``
    pairs (each into fresh destinations, hubmirror then the plain copy): the ratios are the median of the
    pairs', so a change in the machine's load hits both alike. Goal (issue 7): wall ≤ 1.3× the plain copy,
    CPU ≤ 1.5× the plain copy's plus the SHA-256 of the bytes (measured here, in this process)."""
    refs = bench.work / "plain-refs.txt"
    refs.write_text("".join(f"library/{r},{t},{prefix}{r}\n" for r, ts in sorted(tags.items()) for t in ts))
    plain = [sys.executable, __file__, "plain-copy", bench.source_host, "", str(refs)]
    pairs: list[tuple[Run, Run]] = []
    noop: Run | None = None
    for n in range(args.rounds):
        (bench.work / "hubmirror-state.db").unlink(missing_ok=True)
        hm_dest = new_registry(f"dest-hubmirror-{n}")
        hm = hubmirror_cmd(bench, hm_dest, library, args, tags)
        cmd = hm
        if n == 0 and args.profile is not None:
            cmd = ["py-spy", "record", "--format", "raw", "--rate", "200", "-o", str(args.profile), "--", *hm]
        elif n == 0 and args.cprofile is not None:
            cmd = [sys.executable, "-m", "cProfile", "-o", str(args.cprofile), *hm]
        cold = bench.measure("hubmirror", "cold", cmd, hm_dest)
        verify(cold, hm_dest, prefix, expected)
        _hubmirror_detail(cold, bench.work)
        if noop is None:  # its fixed cost: start-up, library, HEADs, state
            noop = bench.measure("hubmirror", "noop", hm, hm_dest)
        pc_dest = new_registry(f"dest-plain-{n}")
        plain[4] = pc_dest.host
        pc = bench.measure("plain", "cold", [*plain, "--concurrency", str(args.blob_concurrency)], pc_dest)
        verify(pc, pc_dest, prefix, expected)
        pairs.append((cold, pc))
        for reg in (hm_dest, pc_dest):  # free the disk: the next round starts from fresh destinations
            reg.stop()
            shutil.rmtree(reg.root, ignore_errors=True)
    gib = pairs[0][0].dest_mib_written / 1024
    sha = sha256_cpu_s_per_gib()
    hm0 = pairs[0][0]
    if noop is not None and gib:
        hm0.detail["cpu_s_per_gib_beyond_noop"] = round((hm0.cpu_s - noop.cpu_s) / gib, 2)
    wall = statistics.median(h.wall_s / p.wall_s for h, p in pairs)
    cpu = statistics.median(h.cpu_s / p.cpu_s for h, p in pairs)
    # CPU allowed: 1.5x the plain copy's plus hashing every byte once, pair by pair.
    allowed = statistics.median(h.cpu_s / (1.5 * p.cpu_s + sha * gib) for h, p in pairs)
    ratios = {"wall_vs_plain": round(wall, 3), "cpu_vs_plain": round(cpu, 3), "cpu_vs_allowed": round(allowed, 3)}
    setup["sha256_cpu_s_per_gib"] = round(sha, 3)
    setup["rounds"] = args.rounds
    goals = {"wall_vs_plain<=1.3": wall <= 1.3, "cpu<=1.5*plain+sha256": allowed <= 1.0}
    if args.json:
        runs = [asdict(r) for r in bench.runs]
        print(json.dumps({"setup": setup, "runs": runs, "ratios": ratios, "goals": goals}, indent=2))
    else:
        print(f"\nsynthetic library: {json.dumps(setup)}\n")
        print(table(bench.runs))
        print()
        print(f"hubmirror/plain, median of {len(pairs)} pairs: wall {wall:.3f}x, CPU {cpu:.3f}x")
        print(f"hubmirror CPU / (1.5 x plain CPU + SHA-256 of {gib:.2f} GiB at {sha:.2f} s/GiB): {allowed:.3f}")
        print(f"hubmirror cold CPU beyond a no-op run: {hm0.detail.get('cpu_s_per_gib_beyond_noop')} s/GiB")
        print("goals: " + ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in goals.items()))
    return 0 if all(r.exit_code == 0 and r.digests_ok for r in bench.runs) else 1


def sha256_cpu_s_per_gib() -> float:
    """CPU seconds SHA-256 takes per GiB here (1 MiB updates), the fastest of three passes: the least
    hashing the goal allows for (a pass slowed by a busy machine would loosen it)."""
    block = os.urandom(1 << 20)
    passes = []
    for _ in range(3):
        h = hashlib.sha256()
        t = time.process_time()
        for _ in range(256):
            h.update(block)
        passes.append((time.process_time() - t) * 4)
    return min(passes)


def _hubmirror_detail(run: Run, work: Path) -> None:
    """Add hubmirror's own report totals (pulls, blobs copied/skipped/mounted, bytes) to *run*."""
    try:
        rep = json.loads(Path(f"{work}/hubmirror-{run.case}.out").read_text())
    except (OSError, ValueError):
        return
    run.detail["report_totals"] = rep.get("totals")


async def _load(repo: Path) -> Library:
    return await load_library(await LibrarySource.open(str(repo)))


if __name__ == "__main__":
    raise SystemExit(main())
