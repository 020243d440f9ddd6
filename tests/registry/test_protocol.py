"""Unit tests of the protocol details: challenges, scopes, rate-limit headers, retry classification, URLs."""

from __future__ import annotations

import json

import pytest

from hubmirror import AuthError, NotFound, QuotaExceeded, RegistryError
from hubmirror.registry.auth import merge_scopes, parse_www_authenticate, repository_scope
from hubmirror.registry.client import is_loopback, next_link, with_query
from hubmirror.registry.ratelimit import RateLimit
from hubmirror.registry.retry import (
    RetryPolicy,
    error_for,
    is_quota_429,
    is_retryable,
    parse_duration,
    parse_errors,
    parse_retry_after,
    retry_after_hint,
)

HUB_QUOTA_BODY = json.dumps(
    {
        "errors": [
            {
                "code": "TOOMANYREQUESTS",
                "message": "You have reached your pull rate limit. You may increase the limit by authenticating "
                "and upgrading: https://www.docker.com/increase-rate-limits",
            }
        ]
    }
).encode()


# -- WWW-Authenticate ------------------------------------------------------------------------------


def test_hub_bearer_challenge() -> None:
    [c] = parse_www_authenticate(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/alpine:pull,push"'
    )
    assert c.scheme == "bearer"
    assert c.realm == "https://auth.docker.io/token"
    assert c.service == "registry.docker.io"
    assert c.scopes == ["repository:library/alpine:pull,push"]  # the comma stays inside the quoted value


def test_challenge_quirks() -> None:
    # spaces around '=', unquoted values, escaped quotes, upper-case names, two challenges in one header
    cs = parse_www_authenticate(
        'BEARER Realm = "https://a/token" , Service=reg, error="insufficient_scope", Basic realm="say \\"hi\\""'
    )
    assert [c.scheme for c in cs] == ["bearer", "basic"]
    assert cs[0].params == {"realm": "https://a/token", "service": "reg", "error": "insufficient_scope"}
    assert cs[1].realm == 'say "hi"'


def test_challenge_with_several_scopes_and_host_port() -> None:
    [c] = parse_www_authenticate(
        'Bearer realm="https://r:8443/t?x=1",scope="repository:a/b:pull repository:reg:5000/c:pull,push"'
    )
    assert c.realm == "https://r:8443/t?x=1"
    assert c.scopes == ["repository:a/b:pull", "repository:reg:5000/c:pull,push"]


def test_token68_and_empty() -> None:
    cs = parse_www_authenticate("Negotiate abc123==, Basic realm=x")
    assert (cs[0].scheme, cs[0].token68) == ("negotiate", "abc123==")
    assert cs[1].realm == "x"
    assert parse_www_authenticate("") == []


def test_merge_scopes_joins_actions_per_repository() -> None:
    merged = merge_scopes(
        [
            repository_scope("dst/app", ["pull"]),
            repository_scope("dst/app", ["push"]),
            repository_scope("reg:5000/src", ["pull"]),
        ]
    )
    assert merged == frozenset({"repository:dst/app:pull,push", "repository:reg:5000/src:pull"})


# -- rate-limit headers ----------------------------------------------------------------------------


def test_ratelimit_headers() -> None:
    rl = RateLimit.from_headers(
        {"RateLimit-Limit": "100;w=21600", "ratelimit-remaining": "76;w=21600", "docker-ratelimit-source": "192.0.2.1"}
    )
    assert rl is not None
    assert (rl.limit, rl.remaining, rl.window, rl.source) == (100, 76, 21600, "192.0.2.1")
    listed = RateLimit.from_headers({"ratelimit-limit": "200;w=21600, 10;w=60", "ratelimit-remaining": "0"})
    assert listed is not None and (listed.limit, listed.remaining, listed.window) == (200, 0, 21600)
    assert RateLimit.from_headers({"content-type": "x"}) is None  # no headers: not limited
    assert RateLimit.from_headers({"ratelimit-limit": "lots", "ratelimit-remaining": "1"}) is None


# -- error classification and retries --------------------------------------------------------------


def test_quota_429_is_not_retried_and_raises_quota_exceeded() -> None:
    assert is_quota_429(429, HUB_QUOTA_BODY)
    assert is_quota_429(429, b"You have reached your unauthenticated pull rate limit.")
    assert not is_retryable(429, HUB_QUOTA_BODY)
    err = error_for(429, HUB_QUOTA_BODY, {"Retry-After": "120"}, what="GET manifest library/a:1", registry="hub")
    assert isinstance(err, QuotaExceeded)
    assert (err.code, err.status, err.retry_after) == ("TOOMANYREQUESTS", 429, 120.0)
    assert "GET manifest library/a:1" in str(err) and "pull rate limit" in str(err)


def test_bare_429_and_5xx_are_retried() -> None:
    assert is_retryable(429, b"Too Many Requests\n")
    for status in (500, 502, 503, 504, 408):
        assert is_retryable(status)
    for status in (400, 401, 403, 404, 405, 501):
        assert not is_retryable(status)
    bare = error_for(429, b"Too Many Requests", {}, what="x", registry="hub")
    assert type(bare) is RegistryError and bare.status == 429


def hub_error(code: str, message: str) -> bytes:
    return json.dumps({"errors": [{"code": code, "message": message}]}).encode()


#: Docker Hub's abuse limit since 2026 (terraform-provider-terrifi #50, hub-feedback #2511).
ABUSE_BODY = hub_error("TOOMANYREQUESTS", "retry-after: 985.86µs, allowed: 44000/minute")


def test_toomanyrequests_alone_is_the_abuse_limit_not_the_quota() -> None:
    # A paid account: no ratelimit-* headers, the abuse limit's message. Back off and retry.
    assert not is_quota_429(429, ABUSE_BODY, {})
    assert is_retryable(429, ABUSE_BODY, {})
    assert type(error_for(429, ABUSE_BODY, {}, what="GET manifest library/a:1", registry="hub")) is RegistryError
    # The quota: the headers say nothing is left, or the message speaks of the pull rate limit.
    spent = {"ratelimit-limit": "100;w=21600", "ratelimit-remaining": "0;w=21600"}
    assert is_quota_429(429, ABUSE_BODY, spent)
    assert is_quota_429(429, hub_error("TOOMANYREQUESTS", "You have reached your pull rate limit."), {})
    assert is_quota_429(429, b"toomanyrequests: You have reached your unauthenticated pull rate limit", {})
    left = {"ratelimit-limit": "100;w=21600", "ratelimit-remaining": "42;w=21600"}
    assert not is_quota_429(429, hub_error("TOOMANYREQUESTS", "Too Many Requests"), left)
    assert not is_quota_429(429, HUB_QUOTA_BODY, {}, pull=False)  # a HEAD or a blob is never a pull


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("985.86µs", 985.86e-6),
        ("985.86μs", 985.86e-6),  # Greek mu, as Go also accepts
        ("250us", 250e-6),
        ("12ms", 0.012),
        ("1.5s", 1.5),
        ("1m30s", 90.0),
        ("2h0m1s", 7201.0),
        ("7", 7.0),
        ("0s", 0.0),
    ],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "1x", "5 s", "ms", "1s2"])
def test_not_go_durations(text: str) -> None:
    assert parse_duration(text) is None


def test_retry_after_hint_reads_the_header_and_hubs_message() -> None:
    assert retry_after_hint({}, ABUSE_BODY) == pytest.approx(985.86e-6)
    assert retry_after_hint({"Retry-After": "2"}, b"") == 2.0
    assert (
        retry_after_hint({"retry-after": "2"}, hub_error("TOOMANYREQUESTS", "retry-after: 3s, allowed: 1/minute"))
        == 3.0
    )
    assert retry_after_hint({}, b"Too Many Requests\n") is None
    assert retry_after_hint(None, b"retry-after: 1m, allowed: 60/minute") == 60.0
    body = hub_error("TOOMANYREQUESTS", "retry-after: 1.5s, allowed: 44000/minute")
    err = error_for(
        429, body, {"ratelimit-remaining": "0", "ratelimit-limit": "1"}, what="GET manifest a:1", registry="h"
    )
    assert isinstance(err, QuotaExceeded) and err.retry_after == 1.5


def test_error_classes_and_codes() -> None:
    body = b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"x"}}]}'
    nf = error_for(404, body, {}, what="GET manifest a/b:x", registry="r", repository="a/b")
    assert isinstance(nf, NotFound)
    assert (nf.code, nf.status, nf.repository) == ("MANIFEST_UNKNOWN", 404, "a/b")
    assert "MANIFEST_UNKNOWN: manifest unknown" in str(nf)
    assert isinstance(error_for(401, b"", {}, what="x", registry="r"), AuthError)
    denied = error_for(403, b'{"errors":[{"code":"DENIED","message":"no"}]}', {}, what="x", registry="r")
    assert isinstance(denied, AuthError) and denied.code == "DENIED"
    other = error_for(400, b'{"errors":[{"code":"MANIFEST_INVALID"}]}', {}, what="PUT", registry="r")
    assert type(other) is RegistryError and other.code == "MANIFEST_INVALID"
    assert parse_errors(b"<html>") == []
    assert "<html" not in str(error_for(502, b"<html>bad gateway</html>", {}, what="x", registry="r"))


def test_retry_after_and_backoff() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("0.25") == 0.25
    assert parse_retry_after(None) is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("soon") is None
    policy = RetryPolicy(attempts=5, base_delay=1.0, max_delay=8.0, jitter=False)
    assert [policy.delay(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert policy.delay(1, retry_after=3.0) == 3.0
    assert RetryPolicy(max_retry_after=60).delay(1, retry_after=3600) == 60
    jittered = RetryPolicy(base_delay=1.0)
    assert all(1.0 <= jittered.delay(2) <= 2.0 for _ in range(50))


# -- URLs ------------------------------------------------------------------------------------------


def test_location_digest_is_appended_keeping_state() -> None:
    d = "sha256:" + "0" * 64
    loc = "http://r/v2/a/blobs/uploads/u?_state=abc%3D%3D&x=1"
    assert with_query(loc, digest=d) == loc + "&digest=sha256%3A" + "0" * 64
    assert with_query("/v2/a/blobs/uploads/u", digest=d) == "/v2/a/blobs/uploads/u?digest=sha256%3A" + "0" * 64


def test_link_header() -> None:
    assert next_link(['</v2/a/tags/list?n=2&last=b>; rel="next"']) == "/v2/a/tags/list?n=2&last=b"
    assert next_link(['<https://x/p1>; rel="prev", <https://x/p3>; rel=next']) == "https://x/p3"
    assert next_link(['<https://x/p1>; rel="prev"']) is None
    assert next_link([]) is None


@pytest.mark.parametrize(
    ("host", "loop"),
    [
        ("localhost", True),
        ("localhost:5000", True),
        ("127.0.0.1:5000", True),
        ("127.1.2.3", True),
        ("[::1]:5000", True),
        ("::1", True),
        ("10.0.0.1:5000", False),
        ("registry-1.docker.io", False),
        ("localhost.example.com", False),
    ],
)
def test_loopback_hosts(host: str, loop: bool) -> None:
    assert is_loopback(host) is loop
