"""``hubmirror check`` from the command line against the Hub emulator, real registries as content mirror and
destination: every line says what was checked; needed failures (an unknown image, a destination that refuses
the credentials or deletes) exit 1 with what to do; a mirror's miss and a paid account's missing quota headers
are not failures."""

from __future__ import annotations

import subprocess

from test_sync_support import HUBMIRROR, Env

from _auth import PASSWORD, USER
from hubmirror.testing import images as img


def _check(env: Env, *args: str, dest: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HUBMIRROR, "check", "--source", env.hub.host, "--dest", dest or env.dest_prefix, *args],
        capture_output=True,
        text=True,
        env=env.cli_env(),
        timeout=120,
        check=False,
    )


def _lines(out: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in out.stderr.splitlines() if line.strip()]


def test_everything_answers_as_expected(env: Env) -> None:
    env.seed(repos=["tiny"])
    mirror = env.make_registry()
    out = _check(env, "--images", "tiny", "--content-mirror", mirror.host, "--insecure", mirror.host, "--prune")
    assert out.returncode == 0, out.stderr
    lines = _lines(out)
    text = "\n".join(lines)
    assert f"ok   source {env.hub.host}: token: anonymous" in text
    assert "pull quota" in text and "pulls left per 6 h (per IP, anonymous)" in text
    assert f"content mirror {mirror.host}: sample digest" in text and "a miss is normal" in text  # warn, not fail
    assert f"ok   destination {env.dest_prefix}: push to mirror/hubmirror-check" in text
    assert "ok   destination" in text and "delete (for --prune)" in text
    assert lines[-1] == "check: all needed checks passed"
    assert env.hub.manifest_gets() == 0  # HEADs only: the check spends no pull


def test_a_paid_account_without_quota_headers_and_a_mirror_holding_the_sample(env: Env) -> None:
    seeded = env.seed(repos=["tiny"])
    env.hub.disable_ratelimit()
    mirror = env.make_registry()
    ix = env.indexes("tiny")["1.0"]
    img.push_sync(mirror, "library/tiny", ix, [])  # the mirror holds the sample's digest
    out = _check(env, "--images", "tiny", "--content-mirror", mirror.host, "--insecure", mirror.host)
    assert out.returncode == 0, out.stderr
    text = out.stderr
    assert "no ratelimit headers: not limited" in text
    assert f"ok   content mirror {mirror.host}: sample digest {seeded['tiny:latest'][:19]}" in text


def test_needed_failures_say_what_to_do_and_exit_1(env: Env) -> None:
    env.seed(repos=["tiny"])
    unknown = _check(env, "--images", "nosuch", "--no-content-mirrors")
    assert unknown.returncode == 1
    assert any(line.startswith("fail source") and "library/nosuch" in line for line in _lines(unknown))

    no_delete = env.make_registry(delete=False)
    refused = _check(env, "--images", "tiny", "--no-content-mirrors", "--prune", dest=f"{no_delete.host}/mirror")
    assert refused.returncode == 1
    [line] = [x for x in _lines(refused) if "delete (for --prune)" in x]
    assert line.startswith("fail") and "storage.delete.enabled" in line

    locked = env.make_registry(username=USER, password=PASSWORD)
    denied = _check(env, "--images", "tiny", "--no-content-mirrors", dest=f"{locked.host}/mirror")
    assert denied.returncode == 1
    where = f"fail destination {locked.host}/mirror"
    assert any(x.startswith(where) and "hubmirror login" in x for x in _lines(denied)), denied.stderr
    assert PASSWORD not in denied.stderr


def test_check_against_the_emulators_real_hub_modes(env: Env) -> None:
    """A paid account answered with Hub's 2026 abuse 429s and a token server that throttles: every needed check
    still passes (backed off, retried); an unknown repository is 'not found, or not accessible'."""
    env.seed(repos=["tiny"])
    env.hub.disable_ratelimit()
    env.hub.abuse(3, hub_message=True)
    env.hub.throttle_tokens(2, retry_after=0.2)
    ok = _check(env, "--images", "tiny", "--no-content-mirrors")
    assert ok.returncode == 0, ok.stderr
    assert "no ratelimit headers: not limited" in ok.stderr

    env.hub.hide_unknown_repositories()
    missing = _check(env, "--images", "nosuch", "--no-content-mirrors")
    assert missing.returncode == 1
    [line] = [x for x in _lines(missing) if x.startswith("fail source")]
    assert "not found, or not accessible with these credentials" in line
    assert "refused anonymous access" not in missing.stderr


def test_the_tags_api_answering_429_is_a_warning_with_when_to_retry(env: Env) -> None:
    from hubmirror.testing.tags_api import tags_api_modes

    env.seed(repos=["tiny"])
    api = ("--images", "tiny", "--no-content-mirrors", "--hub-api", env.hub.url)
    fine = _check(env, *api)
    assert fine.returncode == 0, fine.stderr
    assert any(x.startswith("ok   Docker Hub tags API: library/tiny") for x in _lines(fine)), fine.stderr
    tags_api_modes(env.hub).throttle(None, retry_in=30)
    busy = _check(env, *api)
    assert busy.returncode == 0, busy.stderr  # not needed: tag sources fall back
    [line] = [x for x in _lines(busy) if "Docker Hub tags API" in x]
    assert line.startswith("warn") and "HTTP 429 (retry after" in line
