"""The Docker Hub emulator behaves like Hub: tokens, pull quota, abuse 429s, CDN redirects, faults."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from _auth import PASSWORD, USER
from hubmirror.media import ACCEPT
from hubmirror.testing.hub import HubEmulator, go_duration
from hubmirror.testing.images import Index, image, index, push_sync
from hubmirror.testing.registry import Registry

REPO = "library/demo"
BASIC = aiohttp.encode_basic_auth(USER, PASSWORD)


def skopeo(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "REGISTRY_AUTH_FILE": str(tmp_path / "auth.json"), "HOME": str(tmp_path)}
    return subprocess.run(["skopeo", *args], capture_output=True, env=env, timeout=120, check=False)


async def token(
    s: aiohttp.ClientSession,
    hub: HubEmulator,
    scope: str = f"repository:{REPO}:pull",
    *,
    auth: str | None = None,
) -> str:
    headers = {"Authorization": auth} if auth else {}
    async with s.get(hub.token_url, params={"service": "registry.docker.io", "scope": scope}, headers=headers) as r:
        assert r.status == 200, await r.text()
        return str((await r.json())["token"])


def bearer(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}", "Accept": ACCEPT}


@pytest.fixture
def seeded(hub: HubEmulator) -> Index:
    """library/demo:1.0 and :latest, an OCI index of two platforms with attestations."""
    return push_sync(hub.upstream, REPO, index("demo", layers=(64 * 1024,)), ["1.0", "latest"])


# -- real clients ---------------------------------------------------------------------------------


def test_skopeo_reads_index_byte_for_byte_with_anonymous_token(hub: HubEmulator, seeded: Index, tmp_path: Path) -> None:
    res = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{hub.host}/{REPO}:1.0", tmp_path=tmp_path)
    assert res.returncode == 0, res.stderr.decode()
    assert res.stdout == seeded.manifest.data
    assert "sha256:" + hashlib.sha256(res.stdout).hexdigest() == seeded.digest
    assert hub.token_requests() >= 1
    assert hub.manifest_gets(REPO) == 1


def test_skopeo_with_credentials_reads_child_by_digest(hub: HubEmulator, seeded: Index, tmp_path: Path) -> None:
    child = seeded.image("linux/arm64")
    ref = f"docker://{hub.host}/{REPO}@{child.digest}"
    res = skopeo("inspect", "--raw", "--tls-verify=false", f"--creds={USER}:{PASSWORD}", ref, tmp_path=tmp_path)
    assert res.returncode == 0, res.stderr.decode()
    assert res.stdout == child.manifest.data
    assert {r.user for r in hub.records if r.kind == "manifest"} == {USER}
    wrong = skopeo("inspect", "--raw", "--tls-verify=false", f"--creds={USER}:nope", ref, tmp_path=tmp_path)
    assert wrong.returncode != 0
    assert PASSWORD not in wrong.stderr.decode()


def test_skopeo_copy_fetches_blobs_from_cdn_without_credentials(hub: HubEmulator, tmp_path: Path) -> None:
    img = push_sync(hub.upstream, REPO, image("single", layers=(32 * 1024, 1000)), ["single"])
    dest = tmp_path / "oci"
    res = skopeo(
        "copy", "--preserve-digests", "--dest-oci-accept-uncompressed-layers", "--src-tls-verify=false",
        f"--src-creds={USER}:{PASSWORD}",
        f"docker://{hub.host}/{REPO}:single", f"oci:{dest}:single", tmp_path=tmp_path,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr.decode()
    for digest in img.blob_digests:
        assert (dest / "blobs" / "sha256" / digest.split(":")[1]).exists()
        assert hub.cdn_gets(digest) == 1
    assert not hub.cdn_saw_authorization


# -- token auth -----------------------------------------------------------------------------------


async def test_token_flow(hub: HubEmulator, seeded: Index) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{hub.url}/v2/") as r:
            assert r.status == 401
            assert r.headers["WWW-Authenticate"] == (
                f'Bearer realm="http://{hub.host}/token",service="registry.docker.io"'
            )
        async with s.head(f"{hub.url}/v2/{REPO}/manifests/1.0") as r:
            assert r.status == 401
            assert r.headers["WWW-Authenticate"] == (
                f'Bearer realm="{hub.token_url}",service="registry.docker.io",scope="repository:{REPO}:pull"'
            )
        async with s.get(
            hub.token_url, params=[("service", "registry.docker.io"), ("scope", f"repository:{REPO}:pull"),
                                   ("scope", "repository:library/other:pull")],
        ) as r:  # fmt: skip
            body = await r.json()
            assert body["expires_in"] == 300 and body["token"] == body["access_token"]
        tok = body["token"]
        async with s.get(f"{hub.url}/v2/", headers=bearer(tok)) as r:
            assert r.status == 200
        async with s.get(f"{hub.url}/v2/{REPO}/manifests/1.0", headers=bearer(tok)) as r:
            assert r.status == 200
            assert await r.read() == seeded.manifest.data
            assert r.headers["Docker-Content-Digest"] == seeded.digest
        async with s.head(f"{hub.url}/v2/library/other/manifests/x", headers=bearer(tok)) as r:
            assert r.status == 404  # the second scope is in the same token
        async with s.head(f"{hub.url}/v2/library/third/manifests/x", headers=bearer(tok)) as r:
            assert r.status == 401
            assert 'error="insufficient_scope"' in r.headers["WWW-Authenticate"]
        async with s.get(f"{hub.url}/v2/", headers=bearer("made-up")) as r:
            assert r.status == 401
            assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]
        hub.expire_tokens()
        async with s.head(f"{hub.url}/v2/{REPO}/manifests/1.0", headers=bearer(tok)) as r:
            assert r.status == 401
        async with s.get(hub.token_url, headers={"Authorization": aiohttp.encode_basic_auth(USER, "wrong")}) as r:
            assert r.status == 401
        tok = await token(s, hub, auth=BASIC)
        async with s.head(f"{hub.url}/v2/{REPO}/manifests/1.0", headers=bearer(tok)) as r:
            assert r.status == 200
    assert hub.records[-1].user == USER


async def test_expires_in_is_configurable(make_registry: Callable[..., Registry]) -> None:
    with HubEmulator(make_registry(), expires_in=0) as hub:
        async with aiohttp.ClientSession() as s:
            async with s.get(hub.token_url, params={"scope": f"repository:{REPO}:pull"}) as r:
                assert (await r.json())["expires_in"] == 0
                tok = (await r.json())["token"]
            async with s.head(f"{hub.url}/v2/{REPO}/manifests/x", headers=bearer(tok)) as r:
                assert r.status == 401


async def test_pull_only_tokens_cannot_push(hub: HubEmulator) -> None:
    async with aiohttp.ClientSession() as s:
        tok = await token(s, hub, f"repository:{REPO}:pull,push")  # anonymous: granted pull only
        async with s.post(f"{hub.url}/v2/{REPO}/blobs/uploads/", headers=bearer(tok)) as r:
            assert r.status == 403
            assert (await r.json())["errors"][0]["code"] == "DENIED"
        tok = await token(s, hub, f"repository:{REPO}:pull,push", auth=BASIC)
        async with s.post(f"{hub.url}/v2/{REPO}/blobs/uploads/", headers=bearer(tok)) as r:
            assert r.status == 403  # push not allowed on this emulator, even for a user


async def test_push_allowed_for_users_when_enabled(make_registry: Callable[..., Registry]) -> None:
    with HubEmulator(make_registry(), users={USER: PASSWORD}, allow_push=True) as hub:
        async with aiohttp.ClientSession() as s:
            tok = await token(s, hub, f"repository:{REPO}:pull", auth=BASIC)
            async with s.post(f"{hub.url}/v2/{REPO}/blobs/uploads/", headers=bearer(tok)) as r:
                assert r.status == 401  # pull-only token, but the user may ask for push
                assert f'scope="repository:{REPO}:pull,push"' in r.headers["WWW-Authenticate"]
            tok = await token(s, hub, f"repository:{REPO}:pull,push", auth=BASIC)
            async with s.post(f"{hub.url}/v2/{REPO}/blobs/uploads/", headers=bearer(tok)) as r:
                assert r.status == 202
                assert r.headers["Location"].startswith(f"{hub.url}/v2/{REPO}/blobs/uploads/")
        # the builders' pusher speaks the bearer flow too
        idx = push_sync(hub, REPO, index("pushed"), ["v1"], auth=(USER, PASSWORD))
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{hub.upstream.url}/v2/{REPO}/tags/list") as r:
                assert (await r.json())["tags"] == ["v1"]
            async with s.head(f"{hub.upstream.url}/v2/{REPO}/manifests/v1", headers={"Accept": ACCEPT}) as r:
                assert r.headers["Docker-Content-Digest"] == idx.digest


# -- pull quota and abuse limit -------------------------------------------------------------------


async def test_head_is_free_get_counts_and_exhaustion_gives_429(hub: HubEmulator, seeded: Index) -> None:
    url = f"{hub.url}/v2/{REPO}/manifests/1.0"
    async with aiohttp.ClientSession() as s:
        h = bearer(await token(s, hub))
        for _ in range(2):
            async with s.head(url, headers=h) as r:
                assert r.status == 200
                assert r.headers["ratelimit-limit"] == "100;w=21600"
                assert r.headers["ratelimit-remaining"] == "100;w=21600"
                assert r.headers["docker-ratelimit-source"] == "127.0.0.1"
                assert r.headers["Docker-Content-Digest"] == seeded.digest
                assert r.headers["Content-Length"] == str(seeded.size)
        seen = []
        for _ in range(3):
            async with s.get(url, headers=h) as r:
                assert r.status == 200
                seen.append(r.headers["ratelimit-remaining"])
        assert seen == ["99;w=21600", "98;w=21600", "97;w=21600"]
        assert hub.remaining == 97

        hub.set_limit(10, remaining=1, window=3600)
        async with s.get(url, headers=h) as r:
            assert r.status == 200
            assert r.headers["ratelimit-remaining"] == "0;w=3600"
        async with s.get(url, headers=h) as r:
            assert r.status == 429
            err = (await r.json())["errors"][0]
            assert err["code"] == "TOOMANYREQUESTS"
            assert "pull rate limit" in err["message"]
            assert r.headers["ratelimit-remaining"] == "0;w=3600"
        async with s.head(url, headers=h) as r:
            assert r.status == 200  # HEAD still answers when the quota is spent
        hub.refill()
        async with s.get(url, headers=h) as r:
            assert r.status == 200
            assert r.headers["ratelimit-remaining"] == "9;w=3600"
        hub.disable_ratelimit()
        async with s.get(url, headers=h) as r:
            assert r.status == 200
            assert "ratelimit-limit" not in r.headers and "ratelimit-remaining" not in r.headers
    assert hub.manifest_heads(REPO) == 3
    assert hub.manifest_gets(REPO) == 7
    assert hub.counts[("GET", "manifest", REPO, 429)] == 1


async def test_concurrent_gets_cannot_overspend_the_quota(hub: HubEmulator, seeded: Index) -> None:
    url = f"{hub.url}/v2/{REPO}/manifests/{seeded.digest}"
    hub.set_limit(100, remaining=3)
    async with aiohttp.ClientSession() as s:
        h = bearer(await token(s, hub))

        async def get() -> int:
            async with s.get(url, headers=h) as r:
                await r.read()
                return r.status

        statuses = await asyncio.gather(*(get() for _ in range(12)))
    assert sorted(statuses) == [200] * 3 + [429] * 9  # as on Docker Hub: the quota is taken atomically
    assert hub.remaining == 0


async def test_abuse_limit_is_a_bare_429_with_retry_after(hub: HubEmulator, seeded: Index) -> None:
    async with aiohttp.ClientSession() as s:
        h = bearer(await token(s, hub))
        hub.abuse(2, retry_after=0.25)
        for _ in range(2):
            async with s.head(f"{hub.url}/v2/{REPO}/manifests/1.0", headers=h) as r:
                assert r.status == 429
                assert r.headers["Retry-After"] == "0.25"
                assert "ratelimit-remaining" not in r.headers
        async with s.get(f"{hub.url}/v2/{REPO}/manifests/1.0", headers=h) as r:
            assert r.status == 200
            assert await r.read() == seeded.manifest.data
    assert hub.counts[("HEAD", "manifest", REPO, 429)] == 2
    assert hub.counts[("GET", "manifest", REPO, 200)] == 1  # only K=2 requests were refused
    assert hub.remaining == 99


async def test_hubs_2026_abuse_429_to_a_paid_account(hub: HubEmulator, seeded: Index) -> None:
    hub.disable_ratelimit()
    async with aiohttp.ClientSession() as s:
        h = bearer(await token(s, hub))
        hub.abuse(1, retry_after=985.86e-6, hub_message=True)
        async with s.get(f"{hub.url}/v2/{REPO}/manifests/1.0", headers=h) as r:
            assert r.status == 429
            assert (await r.json())["errors"] == [
                {"code": "TOOMANYREQUESTS", "message": "retry-after: 985.86µs, allowed: 44000/minute"}
            ]
            assert "Retry-After" not in r.headers and "ratelimit-remaining" not in r.headers
        hub.set_abuse_limit(2, hub_message=True)
        statuses, messages = [], []
        for _ in range(4):
            async with s.head(f"{hub.url}/v2/{REPO}/manifests/1.0", headers=h) as r:
                statuses.append(r.status)
            async with s.get(f"{hub.url}/v2/{REPO}/manifests/1.0", headers=h) as r:
                statuses.append(r.status)
                if r.status == 429:
                    messages.append((await r.json())["errors"][0]["message"])
        assert statuses[:2] == [200, 200] and 429 in statuses[2:]
        assert messages and all(
            re.fullmatch(r"retry-after: [0-9.]+(µs|ms|s), allowed: 120/minute", m) for m in messages
        )
    # A free account's abuse 429 carries its quota headers, with pulls left.
    hub.set_limit(100)
    hub.set_abuse_limit(None)
    hub.abuse(1, hub_message=True, match=lambda method, path: method == "GET" and "/manifests/" in path)
    async with aiohttp.ClientSession() as s:
        h = bearer(await token(s, hub))
        async with s.head(f"{hub.url}/v2/{REPO}/manifests/1.0", headers=h) as r:
            assert r.status == 200  # not matched: answered
        async with s.get(f"{hub.url}/v2/{REPO}/manifests/1.0", headers=h) as r:
            assert r.status == 429 and r.headers["ratelimit-remaining"] == "100;w=21600"


@pytest.mark.parametrize(("seconds", "text"), [(985.86e-6, "985.86µs"), (0.25, "250ms"), (1.5, "1.5s"), (90, "1m30s")])
def test_go_duration(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


async def test_unknown_repositories_get_a_token_without_access_then_401_insufficient_scope(
    hub: HubEmulator, seeded: Index
) -> None:
    hub.hide_unknown_repositories()
    async with aiohttp.ClientSession() as s:
        for auth in (None, BASIC):
            tok = await token(s, hub, "repository:library/nosuch:pull", auth=auth)  # granted, no error
            async with s.head(f"{hub.url}/v2/library/nosuch/manifests/1", headers=bearer(tok)) as r:
                assert r.status == 401
                challenge = r.headers["WWW-Authenticate"]
                assert 'scope="repository:library/nosuch:pull"' in challenge
                assert 'error="insufficient_scope"' in challenge
        tok = await token(s, hub)  # a repository the upstream has: as before
        async with s.head(f"{hub.url}/v2/{REPO}/manifests/1.0", headers=bearer(tok)) as r:
            assert r.status == 200
    hub.hide_unknown_repositories(False)
    async with aiohttp.ClientSession() as s:
        tok = await token(s, hub, "repository:library/nosuch:pull")
        async with s.head(f"{hub.url}/v2/library/nosuch/manifests/1", headers=bearer(tok)) as r:
            assert r.status == 404  # the default: what Distribution answers


async def test_the_token_server_throttles_by_count_and_by_rate(hub: HubEmulator) -> None:
    params = {"service": "registry.docker.io", "scope": f"repository:{REPO}:pull"}
    async with aiohttp.ClientSession() as s:
        hub.throttle_tokens(2, retry_after=0.5)
        got = []
        for _ in range(3):
            async with s.get(hub.token_url, params=params) as r:
                got.append((r.status, r.headers.get("Retry-After")))
        assert got == [(429, "0.5"), (429, "0.5"), (200, None)]
        hub.throttle_tokens(1, status=503, retry_after=None)
        async with s.get(hub.token_url, params=params) as r:
            assert r.status == 503 and "Retry-After" not in r.headers
        hub.throttle_tokens(per_second=2, retry_after=1)
        statuses = []
        for _ in range(4):
            async with s.get(hub.token_url, params=params) as r:
                statuses.append(r.status)
        assert statuses[:2] == [200, 200] and 429 in statuses[2:]
        hub.throttle_tokens()
        async with s.get(hub.token_url, params=params) as r:
            assert r.status == 200


# -- blobs and the CDN ----------------------------------------------------------------------------


async def test_cdn_urls_that_expire_and_cdn_5xx(hub: HubEmulator, seeded: Index) -> None:
    blob = seeded.images[0].layers[0]
    url = f"{hub.url}/v2/{REPO}/blobs/{blob.digest}"
    async with aiohttp.ClientSession() as s:
        h = bearer(await token(s, hub))
        hub.expire_cdn_urls(1)
        async with s.get(url, headers=h, allow_redirects=False) as r:
            expired = r.headers["Location"]
        async with s.get(url, headers=h, allow_redirects=False) as r:
            fresh = r.headers["Location"]
        async with s.get(expired) as r:
            assert r.status == 403 and "expired" in await r.text()
        async with s.get(fresh) as r:
            assert r.status == 200 and await r.read() == blob.data
        hub.expire_cdn_urls(1, status=401)
        async with s.get(url, headers=h) as r:
            assert r.status == 401
        hub.cdn_fail(1, 502)
        async with s.get(url, headers=h) as r:
            assert r.status == 502
        hub.expire_cdn_urls(0, status=403)  # expired URLs are answered 403 again
        hub.set_cdn_lifetime(1)
        async with s.get(url, headers=h, allow_redirects=False) as r:
            short = r.headers["Location"]
        async with s.get(short) as r:
            assert r.status == 200
        await asyncio.sleep(2.1)
        async with s.get(short) as r:
            assert r.status == 403  # used after its lifetime
    assert [r.status for r in hub.cdn_records] == [403, 200, 401, 502, 200, 403]


# -- blobs and the CDN ----------------------------------------------------------------------------


async def test_blob_get_redirects_to_cdn_without_authorization(hub: HubEmulator, seeded: Index) -> None:
    blob = seeded.images[0].layers[0]
    assert blob.data is not None
    async with aiohttp.ClientSession() as s:
        h = bearer(await token(s, hub))
        async with s.get(f"{hub.url}/v2/{REPO}/blobs/{blob.digest}", headers=h, allow_redirects=False) as r:
            assert r.status == 307
            location = r.headers["Location"]
            assert location.startswith(f"{hub.cdn_url}/")
        async with s.get(f"{hub.url}/v2/{REPO}/blobs/{blob.digest}", headers=h) as r:  # aiohttp follows
            assert r.status == 200
            assert await r.read() == blob.data
            assert r.url.port == int(hub.cdn_host.split(":")[1])
        async with s.head(f"{hub.url}/v2/{REPO}/blobs/{blob.digest}", headers=h) as r:
            assert r.status == 200 and r.headers["Content-Length"] == str(blob.size)
        async with s.get(f"{hub.url}/v2/{REPO}/blobs/sha256:{'0' * 64}", headers=h) as r:
            assert r.status == 404
            assert (await r.json())["errors"][0]["code"] == "BLOB_UNKNOWN"
        async with s.get(location.replace("sig=", "sig=0")) as r:
            assert r.status == 403  # signed URLs cannot be forged
        async with s.get(location, headers={"Range": "bytes=10-19"}) as r:
            assert r.status == 206 and await r.read() == blob.data[10:20]
        assert hub.blob_gets(blob.digest) == 2  # two GETs on the Hub port (the HEAD is not a GET)
        assert [r.status for r in hub.cdn_records] == [200, 403, 206]
        assert not hub.cdn_saw_authorization
        async with s.get(location, headers={"Authorization": "Bearer leak"}) as r:
            assert r.status == 200
        assert hub.cdn_saw_authorization


# -- faults ---------------------------------------------------------------------------------------


async def _outcomes(hub: HubEmulator, seeded: Index, rounds: int) -> list[str]:
    """Fetch every child manifest and one layer *rounds* times; classify each answer."""
    out = []
    paths = [f"manifests/{c.digest}" for c in seeded.children] + [f"blobs/{seeded.images[0].layers[0].digest}"]
    async with aiohttp.ClientSession() as s:
        h = bearer(await token(s, hub))
        for _ in range(rounds):
            for p in paths:
                want = p.split("/")[1]
                try:
                    async with s.get(f"{hub.url}/v2/{REPO}/{p}", headers=h) as r:
                        body = await r.read()
                        if r.status != 200:
                            out.append(str(r.status))
                        else:
                            out.append("ok" if "sha256:" + hashlib.sha256(body).hexdigest() == want else "flip")
                except (aiohttp.ClientPayloadError, aiohttp.ClientOSError, aiohttp.ServerDisconnectedError):
                    out.append("broken")
    return out


async def test_faults_are_deterministic_for_a_seed(make_registry: Callable[..., Registry]) -> None:
    upstream = make_registry()
    seeded = push_sync(upstream, REPO, index("faults", layers=(200 * 1024,)))
    runs = []
    for seed in (7, 7, 8):
        with HubEmulator(upstream) as hub:
            hub.set_faults(0.5, seed=seed)
            runs.append(await _outcomes(hub, seeded, 6))
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    assert set(runs[0]) == {"ok", "500", "broken", "flip"}  # 30 draws at 50 % show every kind
    assert 0.2 < runs[0].count("ok") / len(runs[0]) < 0.8


@pytest.mark.parametrize("kind", ["reset", "truncate", "flip", "500"])
async def test_each_fault_kind_on_manifests_and_blobs(hub: HubEmulator, seeded: Index, kind: str) -> None:
    hub.set_faults(1.0, seed=1, kinds={kind})
    got = await _outcomes(hub, seeded, 1)
    expected = {"reset": "broken", "truncate": "broken", "flip": "flip", "500": "500"}[kind]
    assert got == [expected] * len(got)
    hub.set_faults(0)
    assert set(await _outcomes(hub, seeded, 1)) == {"ok"}


async def test_truncate_sends_fewer_bytes_than_content_length(hub: HubEmulator, seeded: Index) -> None:
    hub.set_faults(1.0, seed=3, kinds={"truncate"}, paths=("manifests",))
    reader, writer = await asyncio.open_connection("127.0.0.1", int(hub.host.split(":")[1]))
    async with aiohttp.ClientSession() as s:
        tok = await token(s, hub)
    req = f"GET /v2/{REPO}/manifests/{seeded.digest} HTTP/1.1\r\nHost: {hub.host}\r\nAuthorization: Bearer {tok}\r\n"
    writer.write((req + f"Accept: {ACCEPT}\r\n\r\n").encode())
    raw = await reader.read()  # until the server closes
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    assert length == seeded.size
    assert 0 < len(body) < length
    assert seeded.manifest.data.startswith(body)


async def test_fail_always_until_cleared(hub: HubEmulator, seeded: Index) -> None:
    hub.fail_always(r"/manifests/latest$", status=502)
    async with aiohttp.ClientSession() as s:
        h = bearer(await token(s, hub))
        for _ in range(3):
            async with s.head(f"{hub.url}/v2/{REPO}/manifests/latest", headers=h) as r:
                assert r.status == 502
        async with s.head(f"{hub.url}/v2/{REPO}/manifests/1.0", headers=h) as r:
            assert r.status == 200
        hub.fail_always(lambda method, path: method == "GET" and "/blobs/" in path)
        async with s.get(f"{hub.url}/v2/{REPO}/blobs/{seeded.images[0].config.digest}", headers=h) as r:
            assert r.status == 500
        hub.fail_always(None)
        async with s.head(f"{hub.url}/v2/{REPO}/manifests/latest", headers=h) as r:
            assert r.status == 200


# -- counters and proxying ------------------------------------------------------------------------


async def test_counters_per_method_kind_repo_status(hub: HubEmulator, seeded: Index) -> None:
    hub.reset_counts()
    async with aiohttp.ClientSession() as s:
        h = bearer(await token(s, hub))
        await asyncio.gather(*(s.head(f"{hub.url}/v2/{REPO}/manifests/1.0", headers=h) for _ in range(20)))
        async with s.get(f"{hub.url}/v2/{REPO}/manifests/latest", headers=h) as r:
            assert r.status == 200
        async with s.get(f"{hub.url}/v2/{REPO}/manifests/nope", headers=h) as r:
            assert r.status == 404
        async with s.get(f"{hub.url}/v2/{REPO}/tags/list", headers=h) as r:
            assert sorted((await r.json())["tags"]) == ["1.0", "latest"]
        async with s.get(f"{hub.url}/v2/{REPO}/manifests/latest") as r:
            assert r.status == 401
    assert hub.counts == Counter(
        {
            ("GET", "token", "", 200): 1,
            ("HEAD", "manifest", REPO, 200): 20,
            ("GET", "manifest", REPO, 200): 1,
            ("GET", "manifest", REPO, 404): 1,
            ("GET", "tag-list", REPO, 200): 1,
            ("GET", "manifest", REPO, 401): 1,
        }
    )
    assert hub.manifest_heads() == 20 and hub.manifest_gets() == 2 and hub.manifest_gets("library/x") == 0
    assert hub.remaining == 99  # the 404 was not charged
    hub.reset_counts()
    assert hub.counts == Counter() and hub.manifest_heads() == 0


def test_repr_and_addresses_hold_no_secrets(hub: HubEmulator) -> None:
    assert hub.host.startswith("127.0.0.1:") and hub.url == f"http://{hub.host}"
    assert hub.cdn_host != hub.host
    assert PASSWORD not in repr(hub) and PASSWORD not in json.dumps([r.__dict__ for r in hub.records])
