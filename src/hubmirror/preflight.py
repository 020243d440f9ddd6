"""``hubmirror check``: what a user runs first on a machine with network, to see that the real services answer
as hubmirror expects, before a first sync.

* **The source** (Docker Hub by default): reachable; a token, anonymous or logged in (and as whom); the pull
  quota left, read from a free HEAD of a sample image (or "not limited" when no ``ratelimit-*`` headers
  come, as for a paid account); Docker Hub's tags API when the source is Docker Hub.
* **Each content mirror**: reachable, its token flow, and whether it holds the sample's digest (a miss is
  normal: mirror.gcr.io holds only popular images).
* **The destination**: reachable and the credentials accepted; a blob push allowed; a cross-repository
  mount allowed; with ``--prune``, a manifest delete allowed. The probes write a 2-byte blob (the empty
  JSON ``{}``) and a tiny manifest under ``NAMESPACE/hubmirror-check``, and delete what the registry lets
  them delete.

One line per check, with what to do when it fails; `CheckReport.exit_code` is 1 when anything *needed*
failed (a content mirror or the tags API are never needed: hubmirror falls back).
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ._errors import AuthError, HubmirrorError, NotFound, RegistryError
from ._fs import output_problem
from .config import SyncConfig
from .media import OCI_MANIFEST, Manifest
from .plan import read_image_list
from .reference import DOCKER_HUB, Reference, api_host, normalize_registry
from .registry.client import RegistryClient
from .registry.options import ClientOptions
from .store.mirrored import mirror_options, split_mirror

#: The empty JSON blob (``{}``): the probe's config, as OCI's empty descriptor.
EMPTY_JSON = b"{}"
EMPTY_JSON_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
PROBE_REPO = "hubmirror-check"

Status = Literal["ok", "warn", "fail"]


@dataclass
class Check:
    """One line of the check: what was looked at, how it went, and what to do when it did not."""

    area: str  # "source", "mirror mirror.gcr.io", "destination"
    what: str
    status: Status
    detail: str = ""
    fix: str = ""
    needed: bool = True

    def line(self) -> str:
        text = f"{self.status:<4} {self.area}: {self.what}"
        if self.detail:
            text += f": {self.detail}"
        if self.fix and self.status != "ok":
            text += f" — {self.fix}"
        return text


@dataclass
class CheckReport:
    checks: list[Check] = field(default_factory=list)

    def add(self, check: Check) -> Check:
        self.checks.append(check)
        return check

    @property
    def exit_code(self) -> int:
        return 1 if any(c.status == "fail" and c.needed for c in self.checks) else 0


def sample(cfg: SyncConfig) -> Reference:
    """The image the source and mirror checks look at: the first selected one (an image list's first entry, the
    first tag source, the first named library image), else ``library/hello-world:latest``."""
    if cfg.list_file is not None:
        with contextlib.suppress(HubmirrorError):
            refs = read_image_list(cfg.list_file)
            if refs:
                return refs[0][1]
    for spec in cfg.tag_sources():
        return Reference(spec.repository.registry, spec.repository.repository, "latest")
    names = [i for i in cfg.images if not any(c in i for c in "*?[")]
    return Reference(DOCKER_HUB, f"library/{names[0] if names else 'hello-world'}", "latest")


async def run_checks(cfg: SyncConfig) -> CheckReport:
    """Every check for *cfg* (its source, content mirrors and destination)."""
    report = CheckReport()
    ref = sample(cfg)
    registry = cfg.source if ref.registry == DOCKER_HUB else ref.registry
    digest = await _check_source(cfg, report, registry, ref)
    if registry == cfg.source:
        for spec in cfg.source_mirrors:
            await _check_mirror(cfg, report, spec, ref, digest)
    await _check_tags_api(cfg, report, ref)
    await _check_destination(cfg, report)
    return report


@contextlib.asynccontextmanager
async def _client(cfg: SyncConfig, host: str, *, mirror: bool = False) -> AsyncIterator[RegistryClient]:
    options = ClientOptions(credentials=cfg.resolve_credentials(normalize_registry(host)), tls=cfg.tls_for(host))
    client = (mirror_options(options) if mirror else options).client(host)
    try:
        yield client
    finally:
        await client.close()


def _who(cfg: SyncConfig, host: str) -> str | None:
    """``user 'NAME' from SOURCE`` for the credentials hubmirror uses with *host* (never the secret)."""
    try:
        creds = cfg.resolve_credentials(normalize_registry(host))
    except HubmirrorError:
        return None
    return f"logged in as {creds.username!r} ({creds.source})" if creds is not None else None


def _login_hint(host: str) -> str:
    return f"check the credentials (`hubmirror login {host}` or the config's credentials:)"


async def _check_source(cfg: SyncConfig, report: CheckReport, registry: str, ref: Reference) -> str | None:
    area = f"source {registry}"
    async with _client(cfg, registry) as client:
        try:
            await client.check_login()
        except AuthError as e:
            report.add(Check(area, "token", "fail", str(e), _login_hint(registry)))
            return None
        except RegistryError as e:
            report.add(Check(area, "reachable", "fail", str(e), "check the network, a proxy (HTTPS_PROXY) or --source"))
            return None
        report.add(Check(area, "reachable", "ok", client.base_url or api_host(registry)))
        who = _who(cfg, registry)
        report.add(Check(area, "token", "ok", who or "anonymous"))
        what = f"free HEAD of {ref.repository}:{ref.ref}"
        try:
            desc = await client.head_manifest(ref.repository, ref.ref)
        except NotFound as e:
            report.add(Check(area, what, "fail", str(e), "name an image the source has (--images, --list)"))
            return None
        except HubmirrorError as e:
            report.add(Check(area, what, "fail", str(e), _login_hint(registry)))
            return None
        if desc is None:
            report.add(Check(area, what, "fail", "not found", "name an image the source has (--images, --list)"))
            return None
        report.add(Check(area, what, "ok", desc.digest))
        rl = client.ratelimit
        if rl is None:
            unlimited = "no ratelimit headers: not limited (a paid account, or not Hub)"
            report.add(Check(area, "pull quota", "ok", unlimited))
        else:
            window = f" per {rl.window // 3600} h" if rl.window and rl.window % 3600 == 0 else ""
            basis = "per IP, anonymous" if not who else "for this account"
            status: Status = "ok" if rl.remaining > cfg.ratelimit.effective_reserve else "warn"
            report.add(
                Check(
                    area,
                    "pull quota",
                    status,
                    f"{rl.remaining} of {rl.limit} pulls left{window} ({basis})",
                    "runs now will defer work until the window turns (log in for a higher quota)",
                    needed=False,
                )
            )
        return desc.digest


async def _check_mirror(cfg: SyncConfig, report: CheckReport, spec: str, ref: Reference, digest: str | None) -> None:
    host, prefix = split_mirror(spec)
    area = f"content mirror {spec.split(',', 1)[0].strip().strip('/')}"  # its options (",rate=1") left out
    repo = f"{prefix}/{ref.repository}" if prefix else ref.repository
    async with _client(cfg, host, mirror=True) as client:
        try:
            await client.check_login()
        except HubmirrorError as e:
            report.add(Check(area, "reachable", "warn", str(e), "it is skipped; content comes from the source", False))
            return
        report.add(Check(area, "reachable, token", "ok", client.base_url or host, needed=False))
        if digest is None:
            return
        try:
            found = await client.head_manifest(repo, digest)
        except HubmirrorError as e:
            found, detail = None, str(e)
        else:
            detail = "holds it: its content costs no pull" if found is not None else ""
        if found is not None:
            report.add(Check(area, f"sample digest {digest[:19]}…", "ok", detail, needed=False))
        else:
            miss = detail or "not held (a miss is normal: mirrors keep popular images; the source serves the rest)"
            report.add(Check(area, f"sample digest {digest[:19]}…", "warn", miss, "", needed=False))


async def _check_tags_api(cfg: SyncConfig, report: CheckReport, ref: Reference) -> None:
    from .sources import DEFAULT_HUB_API

    pointed = cfg.hub_api is not None and cfg.hub_api.rstrip("/") != DEFAULT_HUB_API  # e.g. at an emulator
    hub = normalize_registry(cfg.source) == DOCKER_HUB or pointed
    if cfg.hub_api is None or not hub or ref.registry != DOCKER_HUB:
        return
    import aiohttp

    ns, _, repo = ref.repository.partition("/")
    url = f"{cfg.hub_api.rstrip('/')}/v2/namespaces/{ns}/repositories/{repo}/tags?page_size=1"
    area = "Docker Hub tags API"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
            session.get(url, headers={"Accept": "application/json"}) as resp,
        ):
            body = await resp.read()
    except (aiohttp.ClientError, TimeoutError) as e:
        report.add(Check(area, "reachable", "warn", type(e).__name__, "tag sources fall back to tags/list", False))
        return
    if resp.status == 200:
        count = json.loads(body).get("count") if body.startswith(b"{") else None
        report.add(Check(area, f"{ref.repository}", "ok", f"{count} tags listed" if count is not None else "answers"))
    elif resp.status == 429:
        when = resp.headers.get("X-Retry-After") or resp.headers.get("Retry-After") or "?"
        busy = f"HTTP 429 (retry after {when})"
        report.add(Check(area, "rate limit", "warn", busy, "wait, or use fewer tag sources", needed=False))
    else:
        report.add(Check(area, "answer", "warn", f"HTTP {resp.status}", "tag sources fall back to tags/list", False))


async def _check_destination(cfg: SyncConfig, report: CheckReport) -> None:
    if not cfg.dest:
        report.add(Check("destination", "given", "fail", "no --dest", "give --dest REGISTRY/NAMESPACE or oci:PATH"))
        return
    if cfg.dest.startswith("oci:"):
        problem = output_problem(Path(cfg.dest[4:]), directory=True)
        status: Status = "fail" if problem else "ok"
        report.add(Check(f"destination {cfg.dest}", "writable", status, problem or "", "choose a folder you can write"))
        return
    host, _, namespace = cfg.dest.partition("/")
    area = f"destination {cfg.dest}"
    repo = f"{namespace}/{PROBE_REPO}" if namespace else PROBE_REPO
    async with _client(cfg, host) as client:
        try:
            await client.check_login()
        except AuthError as e:
            report.add(Check(area, "credentials", "fail", str(e), _login_hint(host)))
            return
        except RegistryError as e:
            report.add(Check(area, "reachable", "fail", str(e), "check the address, its TLS (--insecure, tls:)"))
            return
        report.add(Check(area, "reachable", "ok", f"{client.base_url} ({_who(cfg, host) or 'anonymous'})"))
        try:
            await client.push_blob(repo, EMPTY_JSON_DIGEST, _once(EMPTY_JSON), len(EMPTY_JSON))
        except HubmirrorError as e:
            report.add(Check(area, f"push to {repo}", "fail", str(e), "give the account push rights on the namespace"))
            return
        report.add(Check(area, f"push to {repo}", "ok"))
        try:
            mounted = await client.mount_blob(f"{repo}-mount", EMPTY_JSON_DIGEST, repo)
        except HubmirrorError as e:
            each = "blobs shared by repositories are uploaded to each"
            report.add(Check(area, "cross-repository mount", "warn", str(e), each, needed=False))
        else:
            text = "allowed" if mounted else "not offered: blobs shared by repositories are uploaded to each"
            report.add(Check(area, "cross-repository mount", "ok" if mounted else "warn", text, needed=False))
        if cfg.prune:
            await _check_delete(client, report, area, repo)


async def _check_delete(client: RegistryClient, report: CheckReport, area: str, repo: str) -> None:
    probe = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": EMPTY_JSON_DIGEST, "size": 2},
        "layers": [],
        "annotations": {"io.hubmirror.check": uuid.uuid4().hex},
    }
    manifest = Manifest(json.dumps(probe).encode(), OCI_MANIFEST)
    tag = f"probe-{uuid.uuid4().hex[:12]}"
    try:
        await client.put_manifest(repo, tag, manifest)
        await client.delete_manifest(repo, manifest.digest)
    except HubmirrorError as e:
        report.add(
            Check(
                area,
                "delete (for --prune)",
                "fail",
                str(e),
                "enable deletes (Distribution: storage.delete.enabled) and give the account delete rights",
            )
        )
        return
    report.add(Check(area, "delete (for --prune)", "ok"))


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


__all__ = ["Check", "CheckReport", "run_checks", "sample"]
