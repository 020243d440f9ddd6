"""Content mirrors with the manners of the real ones (issue 18 item 6; reference §F.1), from the command line,
against the emulators of `hubmirror.testing.mirrors` in front of real registries: an ECR-like mirror with a
per-second limit is paced by its 429s (or by its configured rate) and used, not dropped; a stale login and
expiring tokens there are met by reading it anonymously; a gcr-like mirror's misses (404 and 500) are
normal, not failures, and the dry run's mirror count is an upper bound. Every tag is read back by skopeo."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from test_sync_support import Env, assert_complete, manifests_of, skopeo, skopeo_raw

from hubmirror.digest import sha256
from hubmirror.testing import images as img
from hubmirror.testing.mirrors import EcrLikeMirror, GcrLikeMirror
from hubmirror.testing.official import seed_library
from hubmirror.testing.registry import Registry

_HEAD = "Maintainers: Test Maintainer <test@example.invalid> (@test)\nGitRepo: https://example.invalid/{name}.git\n"
#: Two small images: 6 manifests (2 indexes, 2 images... with attestations), a dozen blobs.
SMALL = {
    "pyish": "",
    "tiny": "",
    "duo": _HEAD.format(name="duo") + f"GitCommit: {'5' * 40}\n\nTags: 1.0, latest\nArchitectures: amd64, arm64v8\n"
    "Directory: 1\n",
    "uno": _HEAD.format(name="uno") + f"GitCommit: {'6' * 40}\n\nTags: 2.0, 2\nArchitectures: amd64\nDirectory: 2\n",
}
SMALL_NAMES = ("duo", "uno")
#: Official-like shapes: 10 platforms, each with its attestation manifest (21 manifests per index).
ARCHES = "amd64, arm32v5, arm32v6, arm32v7, arm64v8, i386, mips64le, ppc64le, riscv64, s390x"
OFFICIAL = {
    name: _HEAD.format(name=name)
    + f"GitCommit: {'4' * 40}\n\nTags: 1.0, 1, latest\nArchitectures: {ARCHES}\nDirectory: 1\n"
    for name in ("alpha", "beta", "gamma")
}


def setup(env: Env, files: dict[str, str], prefix: str = "") -> tuple[dict[str, str], Registry]:
    """*files* as the library, seeded on the Hub emulator and on a registry behind a mirror emulator."""
    env.commit(files)
    seeded = env.seed()
    upstream = env.make_registry()
    img.run_sync(seed_library(upstream, env.library(), prefix=prefix))
    env.hub.reset_counts()
    return seeded, upstream


def hub_gets(env: Env) -> list[str]:
    return [r.ref for r in env.hub.records if r.method == "GET" and r.kind == "manifest"]


def mirror_entry(report: Path, name: str) -> dict[str, Any]:
    [entry] = [s for s in json.loads(report.read_text())["content_sources"] if s["name"] == name]
    return entry


def read_back(env: Env, seeded: dict[str, str]) -> None:
    """Every tag at the destination, read by skopeo, is the image the Hub has."""
    for key, digest in seeded.items():
        name, tag = key.split(":")
        assert sha256(skopeo_raw(f"docker://{env.dest.host}/mirror/{name}:{tag}")) == digest, key


def total_manifests(env: Env, names: tuple[str, ...]) -> int:
    return sum(len(manifests_of(ix)) for n in names for ix in {i.digest: i for i in env.indexes(n).values()}.values())


@skopeo
def test_an_ecr_like_mirror_with_a_per_second_limit_is_slowed_by_its_429s_and_used_not_dropped(env: Env) -> None:
    seeded, upstream = setup(env, SMALL, prefix="docker")
    report = env.root / "report.json"
    with EcrLikeMirror(upstream, per_second=8) as ecr:
        name = f"{ecr.host}/docker"

        p = env.cli("--content-mirror", name, "--report", str(report))

        assert p.returncode == 0, p.stderr
        assert ecr.throttled >= 1  # it was sent too fast at first: its 429s slowed hubmirror down
    entry = mirror_entry(report, name)
    assert entry["dropped"] is None and entry["errors"] == 0, entry
    assert entry["throttled"] == ecr.throttled and entry["rate"] is not None and entry["rate"] <= 5
    assert entry["manifests"] == total_manifests(env, SMALL_NAMES)
    assert hub_gets(env) == [] and env.hub.cdn_gets() == 0  # everything came from the mirror: no pull
    read_back(env, seeded)


@skopeo
def test_an_ecr_like_mirror_paced_at_its_configured_rate_sends_no_429(env: Env) -> None:
    seeded, upstream = setup(env, SMALL, prefix="docker")
    report = env.root / "report.json"
    with EcrLikeMirror(upstream, per_second=8) as ecr:
        name = f"{ecr.host}/docker"
        config = env.root / "hubmirror.yaml"
        config.write_text(yaml.safe_dump({"content_mirrors": [{"mirror": name, "rate": 6}]}))

        p = env.cli("--config", str(config), "--report", str(report))

        assert p.returncode == 0, p.stderr
        assert ecr.throttled == 0 and ecr.max_per_second() <= 8
    entry = mirror_entry(report, name)
    assert (entry["dropped"], entry["throttled"], entry["rate"]) == (None, 0, 6)
    assert entry["manifests"] == total_manifests(env, SMALL_NAMES)
    assert hub_gets(env) == []
    read_back(env, seeded)


@skopeo
def test_an_ecr_like_mirror_refusing_a_stale_login_and_expired_tokens_is_read_anonymously(env: Env) -> None:
    seeded, upstream = setup(env, SMALL, prefix="docker")
    report = env.root / "report.json"
    # A `docker login` of the mirror that has expired (403), and tokens honoured for a second only (400).
    with EcrLikeMirror(upstream, stale_logins=True, token_lifetime=1.0) as ecr:
        name = f"{ecr.host}/docker"
        port = ecr.host.rsplit(":", 1)[1]
        login = {f"HUBMIRROR_127_0_0_1_{port}_USERNAME": "AWS", f"HUBMIRROR_127_0_0_1_{port}_PASSWORD": "expired"}

        p = env.cli("--content-mirror", f"{name},rate=8", "--report", str(report), env=login)

        assert p.returncode == 0, p.stderr
        assert ecr.count(status=403) >= 1 and ecr.count(status=400) >= 1
    assert f"content mirror {name} refused the credentials" in p.stderr and "docker logout" in p.stderr
    assert "expired" not in p.stderr.replace("an expired `docker login", "")  # the secret is never printed
    entry = mirror_entry(report, name)
    assert entry["dropped"] is None and entry["errors"] == 0, entry
    assert entry["manifests"] == total_manifests(env, SMALL_NAMES)
    assert hub_gets(env) == []
    read_back(env, seeded)


def _blobs_of(reg: Registry, repo: str, digests: set[str]) -> set[str]:
    """The blobs the image manifests among *digests* reference (read from *reg*)."""
    from test_sync_support import get_manifest

    out: set[str] = set()
    for d in digests:
        m = json.loads(get_manifest(reg, repo, d))
        if "layers" in m:
            out |= {m["config"]["digest"], *(layer["digest"] for layer in m["layers"])}
    return out


@skopeo
def test_a_gcr_like_mirror_that_misses_is_not_dropped_and_the_dry_run_count_is_an_upper_bound(env: Env) -> None:
    seeded, upstream = setup(env, {"pyish": "", "tiny": "", **OFFICIAL})
    alpha, beta, gamma = (env.indexes(n)["latest"] for n in ("alpha", "beta", "gamma"))
    held = manifests_of(alpha) | manifests_of(gamma) | {beta.digest}  # beta: its index only, as after a rebuild
    held |= _blobs_of(upstream, "library/alpha", manifests_of(alpha))
    held |= _blobs_of(upstream, "library/gamma", manifests_of(gamma))
    report = env.root / "report.json"
    with GcrLikeMirror(upstream, holds=held, miss="mixed") as gcr:
        dry = env.cli("--content-mirror", gcr.host, "--dry-run")

        assert dry.returncode == 0, dry.stderr
        assert "up to 63 manifests from mirrors (an upper bound" in " ".join(dry.stderr.split())
        assert hub_gets(env) == []

        p = env.cli("--content-mirror", gcr.host, "--report", str(report))

        assert p.returncode == 0, p.stderr
        assert gcr.count(status=500) >= 1 and gcr.count(status=404) >= 1  # both kinds of miss were answered
    entry = mirror_entry(report, gcr.host)
    assert entry["dropped"] is None and entry["errors"] == 0, entry
    assert entry["misses"] >= len(manifests_of(beta)) - 1
    assert entry["manifests"] == len(manifests_of(alpha) | manifests_of(gamma)) + 1
    assert sorted(hub_gets(env)) == sorted(manifests_of(beta) - {beta.digest})  # exactly what it lacks, once
    for n in ("alpha", "beta", "gamma"):
        assert_complete(env.dest, f"mirror/{n}", "latest")
    read_back(env, seeded)
