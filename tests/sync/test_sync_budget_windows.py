"""The pull budget always makes progress, from the command line against the Hub emulator:

- a quota window far smaller than the work (10 pulls, reserve 5, 63 manifests, one index of 19): every run
  spends its allowance, images bigger than a window are copied across windows, nothing is fetched twice;
- a quota mostly spent by someone else (20 of 100 left): items that do not fit are passed over and smaller
  ones are taken, and the next run finishes without fetching anything again;
- a `--list` mixing Hub images and another registry's, with the Hub quota spent: the other registry's
  images are copied, the Hub's deferred.

The manifest shapes are those of official images (platform images plus one attestation each); blobs are
small.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter

from test_sync_support import Env, env_fixture, manifests_of, skopeo, skopeo_raw  # noqa: F401  (the `env` fixture)
from typer.testing import CliRunner

from hubmirror.cli import app
from hubmirror.state import State
from hubmirror.testing import images as img

_HEAD = "Maintainers: Test Maintainer <test@example.invalid> (@test)\nGitRepo: https://example.invalid/{name}.git\n"

#: hello-world: one index of 9 platforms + 9 attestations (19 manifests); memcached: two of 8 platforms
#: (17 each); satosa: two of 2 platforms (5 each): 63 manifests in all.
WINDOW_LIBRARY = {
    "pyish": "",
    "tiny": "",
    "hello-world": _HEAD.format(name="hello-world")
    + """GitCommit: 4444444444444444444444444444444444444444

Tags: linux, latest
Architectures: amd64, arm32v5, arm32v6, arm32v7, arm64v8, i386, ppc64le, riscv64, s390x
Directory: amd64/hello-world
""",
    "memcached": _HEAD.format(name="memcached")
    + """GitCommit: 5555555555555555555555555555555555555555

Tags: 1.6.39, 1.6, 1, latest, 1.6.39-trixie, 1.6-trixie, 1-trixie, trixie
Architectures: amd64, arm32v5, arm32v7, arm64v8, i386, mips64le, ppc64le, s390x
Directory: 1/debian

Tags: 1.6.39-alpine, 1.6-alpine, 1-alpine, alpine
Architectures: amd64, arm32v6, arm32v7, arm64v8, i386, ppc64le, riscv64, s390x
Directory: 1/alpine
""",
    "satosa": _HEAD.format(name="satosa")
    + """GitCommit: 6666666666666666666666666666666666666666

Tags: 8.5.1-bookworm, 8.5-bookworm, 8-bookworm, bookworm, 8.5.1, 8.5, 8, latest
Architectures: amd64, arm64v8
Directory: 8.5/bookworm

Tags: 8.5.1-alpine, 8.5-alpine, 8-alpine, alpine
Architectures: amd64, arm64v8
Directory: 8.5/alpine
""",
}
REPOS = ("hello-world", "memcached", "satosa")
RESERVE = 5


def _setup(env: Env) -> set[str]:
    """Commit and seed the 63-manifest library; the digests of every manifest the sync must fetch."""
    env.commit(WINDOW_LIBRARY)
    env.seed()
    total: set[str] = set()
    for repo in REPOS:
        for ix in env.indexes(repo).values():
            total |= manifests_of(ix)
    assert len(total) == 63
    assert max(len(manifests_of(ix)) for ix in env.indexes("hello-world").values()) == 19
    return total


def pulls(env: Env) -> list[str]:
    """The digests (or tags) of every manifest GET the emulator served, in order."""
    return [r.ref for r in env.hub.records if r.method == "GET" and r.kind == "manifest" and r.status == 200]


def quota_429s(env: Env) -> int:
    return sum(1 for r in env.hub.records if r.status == 429)


def run_cli(env: Env, *args: str) -> int:
    """``hubmirror sync …`` as `Env.cli` runs it, in this process (the same command line, without paying
    for a new interpreter on each of many runs)."""
    return CliRunner().invoke(app, env.cli_args(*args)[1:], env=env.cli_env()).exit_code


def _assert_every_tag_at_the_source_digest(env: Env) -> None:
    for repo in REPOS:
        for tag, ix in env.indexes(repo).items():
            raw = skopeo_raw(f"docker://{env.dest_prefix}/{repo}:{tag}")
            assert "sha256:" + hashlib.sha256(raw).hexdigest() == ix.digest, f"{repo}:{tag}"


@skopeo
def test_ten_pulls_a_window_mirror_63_manifests_run_after_run_without_waste(env: Env) -> None:
    total = _setup(env)
    env.hub.set_limit(10, window=3600)

    dry = env.cli("--dry-run")
    assert dry.returncode == 0, dry.stderr
    text = " ".join(dry.stderr.split())
    assert "pulls needed ≈ 63" in text
    # 5 now, then 58 more at 5 a window: 13 windows of 10 per hour, with the time it is done
    assert "13 quota windows at 10 per 1 h" in text and "done by about" in text, text
    assert "budget now: 5 pulls" in text and "begun and continued across windows (≈ 5 pulls)" in text, text
    assert pulls(env) == []

    spent_per_run: list[int] = []
    codes: list[int] = []
    for n in range(math.ceil(63 / RESERVE) + 2):
        before = len(pulls(env))
        if n == 0:  # the first run in a process of its own, as a user runs it
            p = env.cli()
            assert p.returncode in (0, 75), p.stderr
            code = p.returncode
        else:
            code = run_cli(env)
        codes.append(code)
        spent_per_run.append(len(pulls(env)) - before)
        if code != 75:
            break
        assert 1 <= spent_per_run[-1] <= 10 - RESERVE, spent_per_run
        env.hub.refill()  # the next quota window

    assert codes[-1] == 0, (codes, spent_per_run)
    assert set(codes[:-1]) <= {75}
    assert len(codes) <= math.ceil(63 / RESERVE) + 2
    assert sum(spent_per_run) <= 63 + 2
    assert quota_429s(env) == 0
    fetched = Counter(pulls(env))
    assert set(fetched) == total
    assert max(fetched.values()) == 1, [d for d, n in fetched.items() if n > 1]  # no GET wasted
    _assert_every_tag_at_the_source_digest(env)
    with State.open(env.state_path) as state:
        assert state.deferred() == []
        assert all(state.kept_manifest(d) is None for d in total)
    print(f"\n10/window, reserve 5: {len(codes)} runs, pulls per run {spent_per_run}, {sum(spent_per_run)} in all")


@skopeo
def test_twenty_of_a_hundred_left_spends_them_then_finishes_without_fetching_twice(env: Env) -> None:
    total = _setup(env)
    env.hub.set_limit(100, remaining=20)  # someone else sharing the IP spent 80

    first = env.cli()

    assert first.returncode == 75, first.stderr
    spent = pulls(env)
    assert 10 <= len(spent) <= 15, len(spent)
    assert quota_429s(env) == 0

    env.hub.refill()
    second = env.cli()

    assert second.returncode == 0, second.stderr
    assert quota_429s(env) == 0
    fetched = Counter(pulls(env))
    assert set(fetched) == total
    assert max(fetched.values()) == 1, [d for d, n in fetched.items() if n > 1]
    _assert_every_tag_at_the_source_digest(env)
    print(f"\n20 of 100 left: first run {len(spent)} pulls, second {len(pulls(env)) - len(spent)}")


@skopeo
def test_a_list_mixing_hub_and_another_registry_copies_the_other_when_the_hub_quota_is_spent(env: Env) -> None:
    env.seed()
    other = env.make_registry()
    app = img.run_sync(img.push(other, "team/app", img.index("team-app", ["linux/amd64", "linux/arm64/v8"]), ["1"]))
    listing = env.root / "images.txt"
    listing.write_text(f"docker.io/library/tiny:1.0\n{other.host}/team/app:1\ndocker.io/library/pyish:3.14-slim\n")
    env.hub.set_limit(100, remaining=RESERVE)  # nothing above the reserve

    p = env.cli("--list", str(listing))

    assert p.returncode == 75, p.stderr
    assert "deferred" in p.stderr
    assert pulls(env) == [] and quota_429s(env) == 0
    raw = skopeo_raw(f"docker://{env.dest_prefix}/team/app:1")
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == app.digest
    assert env.dest_digest("tiny", "1.0") is None and env.dest_digest("pyish", "3.14-slim") is None
    with State.open(env.state_path) as state:
        deferred = sorted(t for d in state.deferred() for t in d.tags)
    assert deferred == ["1.0", "3.14-slim"]
