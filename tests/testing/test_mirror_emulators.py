"""The content-mirror emulators answer as the real mirrors are documented or reported to (`hubmirror.testing.mirrors`),
and the Hub emulator's tags API modes answer as the real API does (`hubmirror.testing.tags_api`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiohttp
import pytest

from hubmirror.media import ACCEPT
from hubmirror.testing.hub import HubEmulator
from hubmirror.testing.images import Index, index, push_sync
from hubmirror.testing.mirrors import ECR_SERVICE, EcrLikeMirror, GcrLikeMirror
from hubmirror.testing.registry import Registry
from hubmirror.testing.tags_api import tags_api_modes

REPO = "docker/library/demo"


@pytest.fixture
def seeded(make_registry: Callable[..., Registry]) -> tuple[Registry, Index]:
    reg = make_registry()
    return reg, push_sync(reg, REPO, index("demo", layers=(4096,)), ["1.0"])


async def _errors(r: aiohttp.ClientResponse) -> list[str]:
    return [e["code"] for e in (await r.json(content_type=None)).get("errors", [])]


async def test_ecr_like_token_flow_and_its_400_403_429(seeded: tuple[Registry, Index]) -> None:
    reg, ix = seeded
    manifest = f"/v2/{REPO}/manifests/{ix.digest}"
    with EcrLikeMirror(reg, per_second=2) as ecr:
        await _ecr(ecr, ix, manifest)


async def _ecr(ecr: EcrLikeMirror, ix: Index, manifest: str) -> None:
    async with aiohttp.ClientSession(ecr.url) as s:
        async with s.get("/v2/") as r:  # anonymous: a bearer challenge to its own /token
            assert r.status == 401
            assert f'realm="{ecr.url}/token",service="{ECR_SERVICE}"' in r.headers["WWW-Authenticate"]
        async with s.get("/token") as r:
            anonymous = (await r.json())["token"]
        async with s.get(manifest, headers={"Authorization": "Bearer garbled", "Accept": ACCEPT}) as r:
            assert (r.status, await _errors(r), "WWW-Authenticate" in r.headers) == (400, ["DENIED"], False)
        ecr.set_stale_logins(True)
        async with s.get("/token", headers={"Authorization": aiohttp.encode_basic_auth("AWS", "old")}) as r:
            stale = (await r.json())["token"]
        async with s.head(manifest, headers={"Authorization": f"Bearer {stale}", "Accept": ACCEPT}) as r:
            assert r.status == 403  # where the anonymous token works:
        statuses = []
        for _ in range(4):
            async with s.head(manifest, headers={"Authorization": f"Bearer {anonymous}", "Accept": ACCEPT}) as r:
                statuses.append(r.status)
        assert statuses[:2] == [200, 200] and 429 in statuses[2:]  # 2 a second
        await asyncio.sleep(1.1)  # the limit is per second: the next second serves again
        async with s.get(manifest, headers={"Authorization": f"Bearer {anonymous}", "Accept": ACCEPT}) as r:
            assert r.status == 200 and r.headers["Docker-Content-Digest"] == ix.digest
        ecr.set_token_lifetime(0.2)
        async with s.get("/token") as r:
            short = (await r.json())["token"]
        await asyncio.sleep(0.3)
        async with s.head(manifest, headers={"Authorization": f"Bearer {short}", "Accept": ACCEPT}) as r:
            assert r.status == 400  # expired: 400, not 401 with a challenge


async def test_gcr_like_holds_some_digests_and_misses_the_rest_with_404_or_500(
    seeded: tuple[Registry, Index],
) -> None:
    reg, ix = seeded
    child = ix.images[0]
    with GcrLikeMirror(reg, holds={ix.digest, child.config.digest}) as gcr:
        await _gcr(gcr, ix)


async def _gcr(gcr: GcrLikeMirror, ix: Index) -> None:
    child = ix.images[0]
    async with aiohttp.ClientSession(gcr.url) as s:
        async with s.head(f"/v2/{REPO}/manifests/{ix.digest}", headers={"Accept": ACCEPT}) as r:
            assert r.status == 200  # anonymous, no token
        async with s.get(f"/v2/{REPO}/blobs/{child.config.digest}") as r:
            assert r.status == 200 and await r.read() == child.config.data
        gcr.set_miss(404)
        async with s.get(f"/v2/{REPO}/manifests/{child.digest}", headers={"Accept": ACCEPT}) as r:
            assert (r.status, await _errors(r)) == (404, ["MANIFEST_UNKNOWN"])
            assert "Failed to fetch" in await r.text()
        gcr.set_miss(500)
        async with s.get(f"/v2/{REPO}/blobs/{child.layers[-1].digest}") as r:
            assert r.status == 500
        gcr.set_miss("mixed")
        statuses = {gcr.miss_status(d) for d in [*ix.child_digests, *ix.blob_digests]}
        assert statuses <= {404, 500}
        assert gcr.misses == 2


async def test_tags_api_throttles_with_x_retry_after_and_moves_tags_between_pages(hub: HubEmulator) -> None:
    for tag in ("a", "b", "c", "d"):
        push_sync(hub.upstream, "team/x", index(f"x-{tag}"), [tag])
    modes = tags_api_modes(hub)
    url = f"{hub.url}/v2/namespaces/team/repositories/x/tags?page_size=100"
    async with aiohttp.ClientSession() as s:
        modes.throttle(1, retry_in=2)
        async with s.get(url) as r:
            assert r.status == 429
            assert int(r.headers["X-Retry-After"]) >= time.time() + 1  # a Unix time, not seconds
        modes.page_size(2)
        modes.move("team/x", 1)
        async with s.get(url) as r:
            first = await r.json()
        async with s.get(first["next"]) as r:
            second = await r.json()
    names = [t["name"] for t in first["results"] + second["results"]]
    assert first["count"] == 4 and len(names) == 4 and len(set(names)) == 3  # one twice, one missed
