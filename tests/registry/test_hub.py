"""`RegistryClient` through the Docker Hub emulator: tokens, quota, 429s, redirects, faults."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator

import pytest

from _auth import PASSWORD, USER
from hubmirror import AuthError, DigestMismatch, QuotaExceeded, RegistryError
from hubmirror.digest import sha256
from hubmirror.registry import ClientOptions, Credentials, RegistryClient, RetryPolicy
from hubmirror.registry.auth import Token
from hubmirror.registry.client import MAX_THROTTLES
from hubmirror.store.registry import RegistryStore
from hubmirror.testing.hub import HubEmulator
from hubmirror.testing.images import Index, index, layer, push
from hubmirror.testing.registry import Registry

FAST = RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.01)


@pytest.fixture
def push_hub(make_registry: Callable[..., Registry]) -> Iterator[HubEmulator]:
    """A Hub emulator that lets `USER` push (for mounts)."""
    with HubEmulator(make_registry(), users={USER: PASSWORD}, allow_push=True) as emulator:
        yield emulator


async def seed(hub: HubEmulator, repo: str = "library/alpine", tags: tuple[str, ...] = ("3",)) -> Index:
    return await push(hub.upstream, repo, index(repo, ["linux/amd64", "linux/arm64/v8"]), tags)


def client_for(hub: HubEmulator, *, user: bool = False, retry: RetryPolicy = FAST) -> RegistryClient:
    creds = Credentials(USER, PASSWORD) if user else None
    return RegistryClient(hub.host, credentials=creds, anonymous=not user, retry=retry)


async def test_anonymous_token_pull_and_ratelimit(hub: HubEmulator) -> None:
    idx = await seed(hub)
    async with client_for(hub) as c:
        head = await c.head_manifest("library/alpine", "3")
        assert head is not None and (head.digest, head.media_type) == (idx.digest, idx.media_type)
        rl = c.ratelimit
        assert rl is not None and (rl.limit, rl.remaining, rl.window, rl.source) == (100, 100, 21600, "127.0.0.1")
        got = await c.get_manifest("library/alpine", "3")
        assert got.data == idx.manifest.data
        assert c.ratelimit is not None and c.ratelimit.remaining == 99  # a GET is a pull, a HEAD is not
        for _ in range(3):
            await c.head_manifest("library/alpine", "3")
        assert c.auth_scheme == "bearer"
        assert hub.token_requests() == 1  # one token per scope set, reused
        assert c.token_fetches == 1
        assert (c.stats.manifest_gets, c.stats.manifest_heads) == (1, 4)
        assert hub.manifest_gets() == 1
    assert {r.user for r in hub.records if r.kind == "manifest"} == {None}


async def test_authenticated_token_and_wrong_password(hub: HubEmulator) -> None:
    await seed(hub)
    async with client_for(hub, user=True) as c:
        assert await c.head_manifest("library/alpine", "3") is not None
    assert {r.user for r in hub.records if r.kind == "manifest"} == {USER}
    bad = RegistryClient(hub.host, credentials=Credentials(USER, "not-the-Pa55word"), retry=FAST)
    async with bad:
        with pytest.raises(AuthError) as exc:
            await bad.head_manifest("library/alpine", "3")
        with pytest.raises(AuthError):
            await bad.check_login()
    assert exc.value.status == 401
    assert "not-the-Pa55word" not in str(exc.value) and USER in str(exc.value)


async def test_expired_token_is_refreshed_after_401(hub: HubEmulator) -> None:
    idx = await seed(hub)
    async with client_for(hub) as c:
        assert (await c.get_manifest("library/alpine", "3")).digest == idx.digest
        hub.expire_tokens()
        assert (await c.get_manifest("library/alpine", idx.children[0].digest)).digest == idx.children[0].digest
        assert hub.token_requests() == 2
        assert c.stats.retries == 0  # a re-challenge is not a retry


def test_token_refreshed_before_expiry() -> None:
    t = Token("secret-token-value", expires_at=1000.0, lifetime=300.0)
    assert t.fresh(now=900.0)
    assert not t.fresh(now=971.0)  # within 30 s of expiry: fetch a new one first
    short = Token("y", expires_at=100.0, lifetime=60.0)  # default lifetime: refresh in the last 12 s
    assert short.fresh(now=87.0) and not short.fresh(now=89.0)
    assert "secret-token-value" not in repr(t)


async def test_mount_uses_one_token_for_source_and_target(push_hub: HubEmulator) -> None:
    blob = layer("mount-me", 20_000)
    idx = await push(push_hub.upstream, "library/debian", index("debian", ["linux/amd64"], layers=[blob]), ["12"])
    del idx
    async with client_for(push_hub, user=True) as c:
        assert await c.head_blob("mirror/debian", blob.digest) is None
        before = push_hub.token_requests()
        assert await c.mount_blob("mirror/debian", blob.digest, "library/debian") is True
        assert push_hub.token_requests() == before + 1
        assert await c.head_blob("mirror/debian", blob.digest) == blob.size


async def test_blob_redirect_does_not_leak_authorization(hub: HubEmulator) -> None:
    big = layer("big", 2 * 1024 * 1024 + 17)
    await push(hub.upstream, "library/big", index("big", ["linux/amd64"], layers=[big]), ["1"])
    store = RegistryStore(hub.host, ClientOptions(credentials=Credentials(USER, PASSWORD), retry=FAST))
    try:
        desc = (
            await store.get_manifest("library/big", (await store.get_manifest("library/big", "1")).children[0].digest)
        ).layers[0]
        assert desc.digest == big.digest
        async with store.open_blob("library/big", desc) as stream:
            data = b"".join([chunk async for chunk in stream])
        assert data == b"".join(big.chunks())
        assert hub.cdn_gets(big.digest) == 1
        assert not hub.cdn_saw_authorization
        assert store.stats.blob_gets == 1 and store.stats.blob_bytes_read == big.size
    finally:
        await store.close()


async def test_quota_429_raises_at_once_and_heads_still_work(hub: HubEmulator) -> None:
    idx = await seed(hub)
    hub.set_limit(10, remaining=0)
    async with client_for(hub, retry=RetryPolicy(attempts=5, base_delay=60)) as c:
        with pytest.raises(QuotaExceeded) as exc:
            await c.get_manifest("library/alpine", "3")
        assert exc.value.code == "TOOMANYREQUESTS" and exc.value.status == 429
        assert "pull rate limit" in str(exc.value)
        assert hub.manifest_gets() == 1 and c.stats.retries == 0  # not retried
        assert c.ratelimit is not None and (c.ratelimit.limit, c.ratelimit.remaining) == (10, 0)
        head = await c.head_manifest("library/alpine", "3")  # HEAD is free and still answered
        assert head is not None and head.digest == idx.digest


@pytest.mark.timeout(60)
async def test_bare_429_is_retried_honouring_retry_after(hub: HubEmulator) -> None:
    idx = await seed(hub)
    # base_delay is huge: the test only finishes quickly because Retry-After (0 s) is honoured.
    async with client_for(hub, retry=RetryPolicy(attempts=5, base_delay=120)) as c:
        await c.head_manifest("library/alpine", "3")
        hub.abuse(2, retry_after=0)
        got = await c.get_manifest("library/alpine", "3")
        assert got.digest == idx.digest
        assert c.stats.retries == 2
    async with client_for(hub) as c2:
        await c2.head_manifest("library/alpine", "3")
        hub.abuse(MAX_THROTTLES + FAST.attempts + 5, retry_after=0)
        with pytest.raises(RegistryError) as exc:
            await c2.head_manifest("library/alpine", "3")
        assert exc.value.status == 429 and not isinstance(exc.value, QuotaExceeded)
        # abuse 429s are retried MAX_THROTTLES times (slowing down), then like any other error
        assert c2.stats.retries == MAX_THROTTLES + FAST.attempts - 1


async def test_server_errors_are_retried_then_reported(hub: HubEmulator) -> None:
    await seed(hub)
    async with client_for(hub) as c:
        await c.head_manifest("library/alpine", "3")
        hub.reset_counts()
        hub.fail_always("/manifests/", 503)
        with pytest.raises(RegistryError) as exc:
            await c.get_manifest("library/alpine", "3")
        assert exc.value.status == 503 and "library/alpine:3" in str(exc.value)
        assert hub.manifest_gets() == FAST.attempts
        hub.fail_always(None)
        assert (await c.get_manifest("library/alpine", "3")).media_type == "application/vnd.oci.image.index.v1+json"


async def test_corrupted_manifest_is_a_digest_mismatch(hub: HubEmulator) -> None:
    await seed(hub)
    hub.set_faults(1.0, kinds=["flip"], paths=["manifests"])
    async with client_for(hub) as c:
        with pytest.raises(DigestMismatch, match="library/alpine:3"):
            await c.get_manifest("library/alpine", "3")


async def test_interrupted_blob_download_is_an_error(hub: HubEmulator) -> None:
    big = layer("cut", 600_000)
    await push(hub.upstream, "library/cut", index("cut", ["linux/amd64"], layers=[big]), ["1"])
    hub.set_faults(1.0, kinds=["truncate"], paths=["blobs"])
    async with client_for(hub) as c:
        with pytest.raises(RegistryError, match="interrupted"):
            async with c.open_blob("library/cut", big.digest) as stream:
                async for _ in stream:
                    pass


async def test_cut_blob_downloads_resume_with_range(hub: HubEmulator) -> None:
    blobs = [layer(f"resume-{i}", 700_000) for i in range(4)]
    await push(hub.upstream, "library/res", index("res", ["linux/amd64"], layers=blobs), ["1"])
    hub.set_faults(0.4, seed=7, kinds=["truncate", "reset"], paths=["blobs"])
    async with client_for(hub) as c:
        for blob in blobs:
            async with c.open_blob("library/res", blob.digest) as stream:
                data = b"".join([chunk async for chunk in stream])
            assert sha256(data) == blob.digest
        resumes = c.stats.retries
    resumed = [r for r in hub.cdn_records if r.status == 206]
    assert resumes > 0 and len(resumed) == resumes  # each cut download went on from where it stopped


async def test_no_secret_in_errors_logs_or_reprs(hub: HubEmulator, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    await seed(hub)
    texts: list[str] = []
    store = RegistryStore(hub.host, ClientOptions(credentials=Credentials(USER, PASSWORD), retry=FAST))
    try:
        await store.get_manifest("library/alpine", "3")
        hub.expire_tokens()
        await store.head_manifest("library/alpine", "3")
        hub.abuse(1, retry_after=0)
        await store.list_tags("library/alpine")
        for fail in (
            store.get_manifest("library/alpine", "nope"),
            store.put_manifest("x/y", "1", (await store.get_manifest("library/alpine", "3"))),
        ):
            try:
                await fail
            except RegistryError as e:
                texts += [str(e), repr(e)]
        texts += [repr(store), repr(store.client), repr(store.client._auth), repr(store.client._credentials)]
    finally:
        await store.close()
    bad = RegistryClient(hub.host, credentials=Credentials(USER, PASSWORD + "x"), retry=FAST)
    try:
        await bad.head_manifest("library/alpine", "3")
    except AuthError as e:
        texts += [str(e), repr(e)]
    finally:
        await bad.close()
    tokens = list(hub._tokens)  # what the emulator issued
    assert tokens and len(texts) >= 7
    haystack = "\n".join(texts) + caplog.text + os.linesep.join(str(r.__dict__) for r in caplog.records)
    for secret in [PASSWORD, *tokens]:
        assert secret not in haystack
