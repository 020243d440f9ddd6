"""``hubmirror sync`` against the real Docker Hub's manners (issue 18), each an emulator mode: a paid account's
abuse 429s (``TOOMANYREQUESTS``, no quota headers), unknown repositories answered 401 ``insufficient_scope``,
a token server that answers 429/5xx, blob CDN URLs that expire or fail; and (issue 14) a quota 429 from any
registry stops its GETs, and the pull budget is charged for every GET sent. Seen from the command line: the
exit code, what stderr says, and the destination as skopeo and the registry API read it."""

from __future__ import annotations

import json

from test_sync_support import (  # noqa: F401  (env_fixture: the `env` fixture)
    NAMESPACE,
    Env,
    assert_complete,
    env_fixture,
    skopeo,
    skopeo_raw,
)

from hubmirror.digest import sha256

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
