"""`RegistryClient` against the real Docker Hub's manners, as the emulator's modes answer them: abuse 429s
that are not the quota, unknown repositories answered 401 ``insufficient_scope``, a throttled token server,
expiring CDN URLs, and a quota 429 that stops every further GET (charged per GET sent)."""

from __future__ import annotations

import asyncio
import time

import pytest

from _auth import PASSWORD, USER
from hubmirror import AuthError, BudgetExhausted, NotAccessible, NotFound, QuotaExceeded, RegistryError
from hubmirror.budget import PullBudget
from hubmirror.digest import sha256
from hubmirror.registry import Credentials, RegistryClient, RetryPolicy
from hubmirror.testing.hub import HubEmulator
from hubmirror.testing.images import Index, index, layer, push

FAST = RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.01)
#: Backoffs this long would time a test out: it only ends quickly if the server's hint is honoured.
SLOW = RetryPolicy(attempts=5, base_delay=120, max_delay=120)


def manifest_gets(method: str, path: str) -> bool:
    return method == "GET" and "/manifests/" in path


async def seed(hub: HubEmulator, repo: str = "library/alpine", tags: tuple[str, ...] = ("3",)) -> Index:
    return await push(hub.upstream, repo, index(repo, ["linux/amd64", "linux/arm64/v8"]), tags)


def client_for(
    hub: HubEmulator, *, user: bool = False, password: str = PASSWORD, retry: RetryPolicy = FAST
) -> RegistryClient:
    creds = Credentials(USER, password) if user else None
    return RegistryClient(hub.host, credentials=creds, anonymous=not user, retry=retry)


# -- 1. abuse 429s are not the quota ----------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_a_paid_accounts_toomanyrequests_with_hubs_abuse_message_is_backed_off_not_taken_for_the_quota(
    hub: HubEmulator,
) -> None:
    idx = await seed(hub)
    hub.disable_ratelimit()  # a paid account: no ratelimit-* headers at all
    async with client_for(hub, retry=SLOW) as c:
        await c.head_manifest("library/alpine", "3")
        hub.abuse(2, retry_after=0.3, hub_message=True, match=manifest_gets)
        started = time.monotonic()
        got = await c.get_manifest("library/alpine", "3")
        waited = time.monotonic() - started
        assert got.digest == idx.digest
        assert c.stats.abuse_backoffs == 2 and c.stats.retries == 2
        assert c.rate is not None  # the client paces itself from now on
    assert [r.status for r in hub.records if r.method == "GET" and r.kind == "manifest"] == [429, 429, 200]
    assert waited >= 0.5  # the message's "retry-after: 300ms", twice (the SLOW backoff would take minutes)


async def test_a_quota_429_is_told_by_its_headers_or_its_words_not_by_its_code(hub: HubEmulator) -> None:
    await seed(hub)
    hub.set_limit(10, remaining=0)
    async with client_for(hub, retry=SLOW) as c:
        with pytest.raises(QuotaExceeded):  # ratelimit-remaining: 0 and "pull rate limit"
            await c.get_manifest("library/alpine", "3")
    hub.disable_ratelimit()
    hub.abuse(1, hub_message=True, match=manifest_gets)
    async with client_for(hub, retry=SLOW) as c:
        assert (await c.get_manifest("library/alpine", "3")).media_type  # TOOMANYREQUESTS alone: retried
        assert c.stats.abuse_backoffs == 1


# -- 2. unknown repositories answer 401 insufficient_scope ----------------------------------------------


@pytest.mark.parametrize("user", [False, True], ids=["anonymous", "logged-in"])
async def test_an_unknown_repository_is_not_found_or_not_accessible_not_a_login_failure(
    hub: HubEmulator, user: bool
) -> None:
    idx = await seed(hub)
    blob = idx.images[0].layers[0]
    hub.hide_unknown_repositories()
    async with client_for(hub, user=user) as c:
        assert (await c.head_manifest("library/alpine", "3")) is not None  # a repository it has: as before
        for call in (
            c.head_manifest("library/nosuch", "1"),
            c.get_manifest("library/nosuch", "1"),
            c.list_tags("library/nosuch"),
            c.head_blob("library/nosuch", blob.digest),
        ):
            with pytest.raises(NotAccessible) as exc:
                await call
            e = exc.value
            assert isinstance(e, NotFound)
            assert str(e) == f"{hub.host}/library/nosuch: not found, or not accessible with these credentials"
            assert (e.registry, e.repository, e.status) == (hub.host, "library/nosuch", 401)
    assert ("GET", "manifest", "library/nosuch", 401) in hub.counts
    assert hub.manifest_gets("library/nosuch") == 0  # no 404 anywhere: Hub answered 401 each time


async def test_a_login_the_token_server_refuses_is_still_reported_as_rejected_credentials(hub: HubEmulator) -> None:
    await seed(hub)
    hub.hide_unknown_repositories()
    async with client_for(hub, user=True, password="not-the-password") as c:
        with pytest.raises(AuthError) as exc:
            await c.head_manifest("library/nosuch", "1")
    assert not isinstance(exc.value, NotFound)
    assert "were rejected" in str(exc.value) and "not-the-password" not in str(exc.value)


# -- 3. the token server answers 429 or 5xx ---------------------------------------------------------


@pytest.mark.timeout(60)
async def test_the_token_servers_429s_are_retried_honouring_retry_after_and_counted_as_abuse_backoffs(
    hub: HubEmulator,
) -> None:
    idx = await seed(hub)
    hub.throttle_tokens(3, retry_after=0.2)
    async with client_for(hub, retry=SLOW) as c:
        started = time.monotonic()
        head = await c.head_manifest("library/alpine", "3")
        assert head is not None and head.digest == idx.digest
        assert time.monotonic() - started >= 0.55
        assert c.stats.abuse_backoffs == 3
    statuses = [r.status for r in hub.records if r.kind == "token"]
    assert statuses == [429, 429, 429, 200]


async def test_the_token_servers_5xx_are_retried_and_a_lasting_one_fails_in_one_line(hub: HubEmulator) -> None:
    await seed(hub)
    hub.throttle_tokens(2, status=503, retry_after=None)
    async with client_for(hub) as c:
        assert await c.head_manifest("library/alpine", "3") is not None
        assert c.stats.retries == 2 and c.stats.abuse_backoffs == 0
    hub.throttle_tokens(100, status=502, retry_after=None)
    async with client_for(hub) as c:
        with pytest.raises(RegistryError) as exc:
            await c.head_manifest("library/alpine", "3")
    assert not isinstance(exc.value, AuthError)
    assert "answered HTTP 502 (3 attempts)" in str(exc.value) and "\n" not in str(exc.value)


# -- 4. the blob CDN's signed URLs expire -----------------------------------------------------------


@pytest.mark.parametrize("status", [403, 401])
async def test_an_expired_cdn_url_is_replaced_by_a_fresh_redirect(hub: HubEmulator, status: int) -> None:
    big = layer("cdn-expired", 300_000)
    await push(hub.upstream, "library/cdn", index("cdn", ["linux/amd64"], layers=[big]), ["1"])
    hub.expire_cdn_urls(2, status=status)
    async with client_for(hub, retry=SLOW) as c, c.open_blob("library/cdn", big.digest) as stream:
        data = b"".join([chunk async for chunk in stream])
    assert sha256(data) == big.digest
    assert [r.status for r in hub.cdn_records] == [status, status, 200]
    assert hub.blob_gets(big.digest) == 3  # the registry was asked for a fresh redirect each time
    assert not hub.cdn_saw_authorization


async def test_cdn_5xx_are_retried_through_a_fresh_redirect(hub: HubEmulator) -> None:
    big = layer("cdn-5xx", 100_000)
    await push(hub.upstream, "library/cdn", index("cdn", ["linux/amd64"], layers=[big]), ["1"])
    hub.cdn_fail(2, 503)
    async with client_for(hub) as c, c.open_blob("library/cdn", big.digest) as stream:
        assert sha256(b"".join([chunk async for chunk in stream])) == big.digest
    assert [r.status for r in hub.cdn_records] == [503, 503, 200]
    assert hub.blob_gets(big.digest) == 3


async def test_a_resume_whose_cdn_url_expired_goes_on_with_range_from_a_fresh_redirect(hub: HubEmulator) -> None:
    big = layer("cdn-resume", 900_000)
    await push(hub.upstream, "library/cdn", index("cdn", ["linux/amd64"], layers=[big]), ["1"])
    hub.set_faults(1.0, kinds=["truncate"], paths=["blobs"])
    async with client_for(hub) as c, c.open_blob("library/cdn", big.digest) as stream:
        first = await anext(stream)  # the cut response is under way
        hub.set_faults(0)
        hub.expire_cdn_urls(1)  # the resume's first redirect: expired
        data = first + b"".join([chunk async for chunk in stream])
    assert sha256(data) == big.digest
    assert [r.status for r in hub.cdn_records] == [200, 403, 206]


async def test_a_cdn_that_keeps_refusing_fails_the_blob_in_one_line_without_blaming_the_login(
    hub: HubEmulator,
) -> None:
    big = layer("cdn-refused", 10_000)
    await push(hub.upstream, "library/cdn", index("cdn", ["linux/amd64"], layers=[big]), ["1"])
    hub.expire_cdn_urls(100)
    async with client_for(hub, user=True) as c:
        with pytest.raises(RegistryError) as exc:
            async with c.open_blob("library/cdn", big.digest) as stream:
                async for _ in stream:
                    pass
    message = str(exc.value)
    assert not isinstance(exc.value, AuthError)
    assert "blob CDN" in message and "HTTP 403" in message and "4 fresh redirects" in message
    assert "login" not in message and "rejected" not in message and "sig=" not in message and "\n" not in message
    assert hub.blob_gets(big.digest) == 4


# -- issue 14: a quota 429 stops every further GET; each GET sent is charged ------------------------------


async def test_after_a_quota_429_no_manifest_get_is_sent_until_the_quota_shows_pulls_again(hub: HubEmulator) -> None:
    idx = await seed(hub)
    hub.set_limit(10, remaining=1)
    async with client_for(hub, retry=SLOW) as c:
        await c.get_manifest("library/alpine", "3")
        with pytest.raises(QuotaExceeded):
            await c.get_manifest("library/alpine", idx.children[0].digest)
        for child in idx.children:
            with pytest.raises(QuotaExceeded) as exc:
                await c.get_manifest("library/alpine", child.digest)
            assert "not sent" in str(exc.value) and exc.value.repository == "library/alpine"
        assert hub.manifest_gets() == 2  # one served, one 429: nothing after it
        assert await c.head_manifest("library/alpine", "3") is not None  # HEADs are free and still go out
        with pytest.raises(QuotaExceeded):
            await c.get_manifest("library/alpine", "3")  # the HEAD showed 0 left: still stopped
        hub.refill()
        await c.head_manifest("library/alpine", "3")  # shows pulls left again
        assert (await c.get_manifest("library/alpine", "3")).digest == idx.digest
    assert hub.manifest_gets() == 3


async def test_a_quota_429_stops_gets_for_its_window_when_nothing_says_pulls_are_back(hub: HubEmulator) -> None:
    idx = await seed(hub)
    hub.set_limit(10, remaining=0, window=1)
    async with client_for(hub, retry=SLOW) as c:
        with pytest.raises(QuotaExceeded):
            await c.get_manifest("library/alpine", "3")
        with pytest.raises(QuotaExceeded):
            await c.get_manifest("library/alpine", "3")
        assert hub.manifest_gets() == 1
        await asyncio.sleep(1.2)  # the window (w=1) has passed
        assert (await c.get_manifest("library/alpine", "3")).digest == idx.digest
    assert hub.manifest_gets() == 2


async def test_the_pull_gate_is_charged_for_every_manifest_get_sent_retries_included(hub: HubEmulator) -> None:
    await seed(hub)
    budget = PullBudget(lambda: None, max_pulls=2)
    async with client_for(hub) as c:
        c.pull_gate = budget
        await c.head_manifest("library/alpine", "3")
        hub.fail_always("/manifests/", 503)
        with pytest.raises(BudgetExhausted):
            await c.get_manifest("library/alpine", "3")  # two GETs, each a pull; the third is not sent
    assert hub.manifest_gets() == budget.granted == 2
