"""The dry run's pull estimate against what the run spends (issue 16, item 7): within 10 % for official-shaped
indexes (10 platforms, an attestation each: 21 manifests) from an image list, a tag source and the library."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_sync_support import Env

from hubmirror.media import OCI_INDEX
from hubmirror.plan import WorkItem
from hubmirror.plan.estimate import _attestations
from hubmirror.testing import images as img

#: Ten platforms, as the big official images have them (each image gets an attestation manifest).
TEN = (
    "linux/amd64",
    "linux/arm/v5",
    "linux/arm/v6",
    "linux/arm/v7",
    "linux/arm64/v8",
    "linux/386",
    "linux/mips64le",
    "linux/ppc64le",
    "linux/riscv64",
    "linux/s390x",
)


def official(seed: str, generation: int = 0) -> img.Index:
    """An official-shaped index: ten platforms, an attestation each (21 manifests), a shared base layer."""
    return img.index(seed, TEN, layers=(256,), base=[img.base_layer("debian", 512)], generation=generation)


def estimate_and_spend(env: Env, *args: str, dest: str | None = None) -> tuple[int, int, int, str]:
    """(the dry run's items' pulls, the pulls in its summary line, the run's manifest GETs, dry run stderr)."""
    env.hub.reset_counts()
    dry = env.cli(*args, "--dry-run", "--json", dest=dest)
    assert dry.returncode == 0, dry.stderr
    planned = sum(int(i["pulls"]) for i in json.loads(dry.stdout)["items"])
    line = next(ln for ln in dry.stderr.splitlines() if "pulls needed ≈" in ln)
    summary = int(line.split("pulls needed ≈ ", 1)[1].split(";")[0].split(":")[0].strip())
    assert env.hub.manifest_gets() == 0, "the dry run spent pulls"
    run = env.cli(*args, "--json", dest=dest)
    assert run.returncode == 0, run.stderr
    spent = int(json.loads(run.stdout)["totals"]["manifest_gets"])
    return planned, summary, spent, dry.stderr


def within(estimate: int, spent: int, share: float = 0.10) -> bool:
    print(f"estimate {estimate}, spent {spent}: error {(estimate - spent) / spent:+.1%}")
    return abs(estimate - spent) <= share * spent


def test_image_list_of_official_images_is_estimated_within_ten_percent(env: Env, tmp_path: Path) -> None:
    for name in ("alpha", "beta", "gamma"):
        img.push_sync(env.hub.upstream, f"library/{name}", official(name), ["1.0", "1", "latest"])
    listing = tmp_path / "images.txt"
    listing.write_text("".join(f"docker.io/library/{n}:1.0\n" for n in ("alpha", "beta", "gamma")))
    args = ("--list", str(listing), "--hub-api", env.hub.url, "--library", str(env.root / "none"))

    planned, summary, spent, _ = estimate_and_spend(env, *args)

    assert spent == 3 * 21
    assert within(planned, spent) and within(summary, spent), (planned, summary, spent)
    assert env.hub.tags_api_requests("library/alpha") == 2  # dry run and run: the tags API told the platforms

    # Changed tags (rebuilt upstream): the index the destination holds tells their shape.
    for name in ("beta", "gamma"):
        img.push_sync(env.hub.upstream, f"library/{name}", official(name, 1), ["1.0", "1", "latest"])
    planned, summary, spent, _ = estimate_and_spend(env, *args)
    assert spent == 2 * 21
    assert within(planned, spent) and within(summary, spent), (planned, summary, spent)

    # No tags API: the size of each index (its HEAD's Content-Length) tells its entries.
    no_api = ("--list", str(listing), "--hub-api", "", "--library", str(env.root / "none"))
    planned, summary, spent, _ = estimate_and_spend(env, *no_api, dest=f"{env.dest.host}/other")
    assert spent == 3 * 21
    assert within(planned, spent) and within(summary, spent), (planned, summary, spent)


def test_tag_source_of_official_images_is_estimated_within_ten_percent(env: Env) -> None:
    """On Docker Hub (its tags API lists each tag's platforms) and on another registry (tags/list: the index's
    size tells its entries)."""
    other = env.make_registry()
    for tag in ("1.0", "1.1", "1.2"):
        img.push_sync(env.hub.upstream, "library/delta", official(f"delta/{tag}"), [tag])
        img.push_sync(other, "team/epsilon", official(f"epsilon/{tag}"), [tag])
    hub = ("--repo", "docker.io/library/delta", "--hub-api", env.hub.url, "--library", str(env.root / "none"))
    registry = ("--repo", f"{other.host}/team/epsilon", "--library", str(env.root / "none"))

    for args in (hub, registry):
        planned, summary, spent, dry = estimate_and_spend(env, *args)
        if args is hub:  # no HEAD on the source: the check says so, the summary's "0 HEADs" is no surprise
            assert "checking 3 tags (digests from the tags API: no HEAD on the source;" in dry, dry

        assert spent == 3 * 21
        assert within(planned, spent) and within(summary, spent), (args, planned, summary, spent)


#: A python-like repository: one Linux entry on ten platforms (an OCI index with attestations, 21 manifests)
#: and four Windows entries, each a Docker manifest list of one image and no attestation (2 manifests), as
#: Docker Hub serves the official Windows images.
WINDOWS = ("windowsservercore-ltsc2022", "windowsservercore-ltsc2025", "nanoserver-ltsc2022", "nanoserver-ltsc2025")
PYLIKE = (
    "Maintainers: Test Maintainer <test@example.invalid> (@test)\nGitRepo: https://example.invalid/pylike.git\n"
    "GitCommit: 4444444444444444444444444444444444444444\n\n"
    "Tags: 3.14-trixie, 3.14\n"
    "Architectures: amd64, arm32v5, arm32v6, arm32v7, arm64v8, i386, mips64le, ppc64le, riscv64, s390x\n"
    "Directory: 3.14/trixie\n"
    + "".join(
        f"\nTags: 3.14-{w}\nArchitectures: windows-amd64\nDirectory: 3.14/windows/{w}\nConstraints: {w}\n"
        for w in WINDOWS
    )
)


def test_library_is_estimated_within_ten_percent(env: Env) -> None:
    """Windows images have no attestations: the index's size says so (the library file cannot)."""
    env.commit({"pylike": PYLIKE})
    env.seed(repos=["pylike"])
    for w in WINDOWS:
        windows = img.index(f"pylike/{w}", ("windows/amd64",), fmt="docker", layers=(256,))
        img.push_sync(env.hub.upstream, "library/pylike", windows, [f"3.14-{w}"])

    planned, summary, spent, _ = estimate_and_spend(env, "--images", "pylike", "--windows")

    assert spent == 21 + 4 * 2
    assert within(planned, spent) and within(summary, spent), (planned, summary, spent)


@pytest.mark.parametrize("indent", [None, 2, 3])
@pytest.mark.parametrize(("platforms", "attested"), [(10, True), (10, False), (2, True), (1, False)])
def test_the_index_size_tells_how_many_images_have_an_attestation(
    indent: int | None, platforms: int, attested: bool
) -> None:
    """With the platforms known, compact or indented JSON: the right attestation count from the size alone."""
    ix = img.index("sized", TEN[:platforms], attestations=attested)
    obj = json.loads(ix.manifest.data)
    data = json.dumps(obj, indent=indent, separators=(",", ":") if indent is None else None).encode()
    item = WorkItem("hub", "library/sized", ix.digest, OCI_INDEX, "sized", [], None, size=len(data))

    assert _attestations(item, platforms) == (platforms if attested else 0)
