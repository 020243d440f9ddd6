"""``hubmirror sync`` against the real Docker Hub's manners (issue 18), each an emulator mode: a paid account's
abuse 429s (``TOOMANYREQUESTS``, no quota headers), unknown repositories answered 401 ``insufficient_scope``,
a token server that answers 429/5xx, blob CDN URLs that expire or fail; and (issue 14) a quota 429 from any
registry stops its GETs, and the pull budget is charged for every GET sent. Seen from the command line: the
exit code, what stderr says, and the destination as skopeo and the registry API read it."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from test_sync_support import (  # noqa: F401  (env_fixture: the `env` fixture)
    NAMESPACE,
    Env,
    assert_complete,
    env_fixture,
    skopeo,
    skopeo_raw,
)

from hubmirror.digest import sha256
from hubmirror.testing import images as img
from hubmirror.testing.hub import HubEmulator
from hubmirror.testing.registry import Registry

#: A run that deferred work exits 2 (75, EX_TEMPFAIL, once issue 14's exit codes are in).
DEFERRED = (2, 75)


def manifest_gets(method: str, path: str) -> bool:
    return method == "GET" and "/manifests/" in path


#: The SharedTags with a Windows entry: written as a Linux-only index (another digest), by default.
FILTERED = {"pyish:3.14", "pyish:3", "pyish:latest"}


def assert_mirrored(env: Env, seeded: dict[str, str]) -> None:
    """Every selected tag seeded is at the destination, complete (children and blobs), with the source's
    digest (a SharedTag with a Windows entry: its Linux-only index); and skopeo reads two of them."""
    assert seeded
    for ref, digest in seeded.items():
        repo, tag = ref.split(":")
        if "windows" in tag:
            assert env.dest_digest(repo, tag) is None  # not selected by default
            continue
        got = assert_complete(env.dest, f"{NAMESPACE}/{repo}", tag)
        assert ref in FILTERED or got == digest, ref
    for ref in ("pyish:3.14-slim", "tiny:latest"):
        if ref in seeded:
            repo, tag = ref.split(":")
            assert sha256(skopeo_raw(f"docker://{env.dest.host}/{NAMESPACE}/{repo}:{tag}")) == seeded[ref]


def one_line(stderr: str) -> None:
    assert "Traceback" not in stderr


# -- 1. abuse 429s to a paid account ----------------------------------------------------------------


@skopeo
def test_a_paid_account_answered_toomanyrequests_by_the_abuse_limit_backs_off_and_copies_everything(
    env: Env,
) -> None:
    seeded = env.seed()
    env.hub.disable_ratelimit()  # paid: no ratelimit-* headers
    # Hub's 2026 abuse 429 on manifest GETs: TOOMANYREQUESTS, "retry-after: 50ms, allowed: 44000/minute".
    env.hub.abuse(4, retry_after=0.05, hub_message=True, match=manifest_gets)

    p = env.cli("--json")

    assert p.returncode == 0, p.stderr
    one_line(p.stderr)
    rep = json.loads(p.stdout)
    assert rep["deferred"] == [] and rep["failed"] == []
    assert rep["abuse_backoffs"][env.hub.host] >= 4
    assert [r.status for r in env.hub.records if r.status == 429] == [429] * 4
    assert_mirrored(env, seeded)


# -- 2. unknown repositories: 401 insufficient_scope ------------------------------------------------


@pytest.mark.parametrize("login", [False, True], ids=["anonymous", "logged-in"])
def test_an_unknown_repository_in_a_list_is_reported_as_not_found_or_not_accessible(env: Env, login: bool) -> None:
    seeded = env.seed(repos=["tiny"])
    env.hub.hide_unknown_repositories()
    listing = env.root / "images.txt"
    listing.write_text("tiny:1.0\nnosuch:1\n")
    creds = {}
    if login:
        prefix = "HUBMIRROR_" + env.hub.host.replace(".", "_").replace(":", "_") + "_"
        creds = {prefix + "USERNAME": "hubuser", prefix + "PASSWORD": "s3cret-pa55"}
        env.hub._users["hubuser"] = "s3cret-pa55"

    p = env.cli("--list", str(listing), "--json", env=creds)

    assert p.returncode == 1, p.stderr
    one_line(p.stderr)
    message = f"{env.hub.host}/library/nosuch: not found, or not accessible with these credentials"
    assert message in " ".join(p.stderr.split())
    for wrong in ("refused anonymous access", "no credentials were found", "were rejected", "hubmirror login"):
        assert wrong not in p.stderr
    rep = json.loads(p.stdout)
    assert rep["failed"] == ["docker.io/library/nosuch:1"]
    [failed] = [i for i in rep["items"] if i["outcome"] == "failed"]
    assert failed["reason"] == message
    assert env.dest_digest("tiny", "1.0") == seeded["tiny:1.0"]
    assert "s3cret-pa55" not in p.stdout + p.stderr


def test_a_login_the_token_server_refuses_is_still_reported_as_such(env: Env) -> None:
    env.seed(repos=["tiny"])
    env.hub.hide_unknown_repositories()
    listing = env.root / "images.txt"
    listing.write_text("tiny:1.0\n")
    prefix = "HUBMIRROR_" + env.hub.host.replace(".", "_").replace(":", "_") + "_"

    p = env.cli("--list", str(listing), env={prefix + "USERNAME": "hubuser", prefix + "PASSWORD": "wrong-pa55"})

    assert p.returncode == 1, p.stderr
    assert "were rejected" in p.stderr and "not found, or not accessible" not in p.stderr
    assert "wrong-pa55" not in p.stderr


# -- 3. the token server answers 429 or 5xx ---------------------------------------------------------


@skopeo
@pytest.mark.parametrize(("status", "retry_after"), [(429, 0.1), (503, None)])
def test_a_throttled_token_server_is_waited_for_and_everything_is_copied(
    env: Env, status: int, retry_after: float | None
) -> None:
    seeded = env.seed()
    env.hub.throttle_tokens(3, status=status, retry_after=retry_after)

    p = env.cli("--json")

    assert p.returncode == 0, p.stderr
    one_line(p.stderr)
    assert [r.status for r in env.hub.records if r.kind == "token"][:4] == [status] * 3 + [200]
    rep = json.loads(p.stdout)
    assert rep["abuse_backoffs"][env.hub.host] == (3 if status == 429 else 0)
    assert_mirrored(env, seeded)


# -- 4. blob CDN URLs that expire, and CDN 5xx ----------------------------------------------------------


@skopeo
def test_expired_cdn_urls_and_cdn_errors_are_replaced_by_fresh_redirects(env: Env) -> None:
    seeded = env.seed()
    env.hub.expire_cdn_urls(5)
    env.hub.cdn_fail(2, 503)

    p = env.cli("--json")

    assert p.returncode == 0, p.stderr
    one_line(p.stderr)
    assert "hubmirror login" not in p.stderr and "rejected" not in p.stderr
    statuses = [r.status for r in env.hub.cdn_records]
    assert statuses.count(403) == 5 and statuses.count(503) == 2
    assert_mirrored(env, seeded)


# -- all at once -----------------------------------------------------------------------------------


@skopeo
def test_paid_account_with_abuse_429s_expiring_cdn_urls_and_a_throttled_token_server(env: Env) -> None:
    seeded = env.seed()
    env.hub.disable_ratelimit()
    env.hub.set_abuse_limit(6, hub_message=True)  # every kind of request, the Hub's way
    env.hub.abuse(3, retry_after=0.05, hub_message=True, match=manifest_gets)
    env.hub.throttle_tokens(2, retry_after=0.1)
    env.hub.expire_cdn_urls(4)
    env.hub.cdn_fail(1, 502)

    p = env.cli("--hub-rate", "0", "--json")

    assert p.returncode == 0, p.stderr
    one_line(p.stderr)
    rep = json.loads(p.stdout)
    assert rep["failed"] == [] and rep["deferred"] == []
    assert rep["abuse_backoffs"][env.hub.host] >= 5
    assert_mirrored(env, seeded)


# -- issue 14: stop GETs at the first quota 429 of any registry; charge each GET sent ---------------------


def test_a_pull_through_cache_with_a_quota_gets_no_get_after_its_first_quota_429(
    env: Env, make_registry: Callable[..., Registry]
) -> None:
    with HubEmulator(make_registry()) as cache:  # a registry that is not the source, with Hub's quota
        for i in range(20):
            img.push_sync(cache.upstream, "team/app", img.image(f"app-{i}"), [f"{i}"])
        cache.set_limit(100, remaining=2)
        listing = env.root / "images.txt"
        listing.write_text("".join(f"{cache.host}/team/app:{i}\n" for i in range(20)))

        p = env.cli("--list", str(listing), "--json")

        rep = json.loads(p.stdout)
        assert p.returncode == rep["exit_code"] in DEFERRED, p.stderr
        one_line(p.stderr)
        assert len(rep["successful"]) == 2 and len(rep["deferred"]) == 18
        gets = [r.status for r in cache.records if r.method == "GET" and r.kind == "manifest"]
        assert gets.count(200) == 2
        # What was already on the wire when the first 429 came may get one too; nothing after it.
        assert 1 <= gets.count(429) <= 4 and len(gets) <= 6, gets


def test_the_pull_budget_counts_every_manifest_get_sent_retries_included(env: Env) -> None:
    env.seed(repos=["pyish"])
    env.hub.set_faults(0.5, seed=11, kinds=["500"], paths=["manifests"])  # half the GETs fail once or more

    p = env.cli("--images", "pyish", "--max-pulls", "6", "--json")

    rep = json.loads(p.stdout)
    assert p.returncode == rep["exit_code"] in DEFERRED, p.stderr
    one_line(p.stderr)
    assert rep["deferred"]  # the budget ran out: the retries were charged too
    faulted = sum(1 for r in env.hub.records if r.kind == "manifest" and r.method == "GET" and r.status == 500)
    assert faulted > 0
    assert env.hub.manifest_gets() <= 6  # every GET on the wire, the failed ones too, within --max-pulls
