"""Tag policies and version parsing (no registries): the documented rules, one case each."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from hubmirror._errors import ConfigError
from hubmirror.config import parse_config
from hubmirror.platform import Platform
from hubmirror.sources import SemverRange, TagInfo, TagPolicy, artifact_subject, parse_version


@pytest.mark.parametrize(
    ("tag", "numbers", "pre", "variant"),
    [
        ("v1.2.3", (1, 2, 3), "", ""),
        ("1.27", (1, 27, 0), "", ""),
        ("1.27.3-alpine", (1, 27, 3), "", "alpine"),
        ("1.28.0-rc.1-alpine", (1, 28, 0), "rc.1", "alpine"),
        ("2.0.0-beta2", (2, 0, 0), "beta2", ""),
        ("3-slim-bookworm", (3, 0, 0), "", "slim-bookworm"),
    ],
)
def test_versions_in_tags(tag: str, numbers: tuple[int, ...], pre: str, variant: str) -> None:
    v = parse_version(tag)
    assert v is not None and (v.numbers, v.prerelease, v.variant) == (numbers, pre, variant)


@pytest.mark.parametrize("tag", ["latest", "bookworm", "sha-1a2b3c", "v", "1.2.3.4.5"])
def test_tags_without_a_version(tag: str) -> None:
    assert parse_version(tag) is None


@pytest.mark.parametrize(
    ("rng", "yes", "no"),
    [
        (">=1.27 <2", ["1.27", "1.27.0", "1.99.9"], ["1.26.9", "2.0.0", "2"]),
        ("~1.27", ["1.27.0", "1.27.9"], ["1.28.0", "1.26.0"]),
        ("^1.2", ["1.2.0", "1.9.9"], ["2.0.0", "1.1.9"]),
        ("1.27", ["1.27.0", "1.27.5", "1.27"], ["1.28.0", "1.2.7"]),
        ("1.x || >= 3", ["1.0.1", "3.1.0"], ["2.0.0"]),
        ("!=1.5.0 >1", ["1.5.1", "2"], ["1.5.0", "1.0.0"]),
    ],
)
def test_semver_ranges(rng: str, yes: list[str], no: list[str]) -> None:
    r = SemverRange.parse(rng)
    for tag in yes:
        v = parse_version(tag)
        assert v is not None and r.matches(v), tag
    for tag in no:
        v = parse_version(tag)
        assert v is not None and not r.matches(v), tag


@pytest.mark.parametrize("rng", ["", ">=", "1.2.3.x.y", "latest", ">=1 ||"])
def test_bad_ranges_are_config_errors(rng: str) -> None:
    with pytest.raises(ConfigError, match="semver range"):
        SemverRange.parse(rng)


def test_prereleases_only_when_allowed_and_ordered_below_their_release() -> None:
    tags = [TagInfo(t) for t in ("2.0.0-rc10", "2.0.0-rc2", "2.0.0", "1.9.0")]
    kept, dropped = TagPolicy(semver=SemverRange.parse(">=1")).apply(tags)
    assert [t.name for t in kept] == ["2.0.0", "1.9.0"]
    assert {d.tag: d.policy for d in dropped} == {"2.0.0-rc10": "prerelease", "2.0.0-rc2": "prerelease"}
    kept, _ = TagPolicy(semver=SemverRange.parse(">=1"), prerelease=True, keep=3).apply(tags)
    assert [t.name for t in kept] == ["2.0.0", "2.0.0-rc10", "2.0.0-rc2"]


def test_keep_by_push_time_when_the_source_gives_it() -> None:
    def at(day: int) -> datetime:
        return datetime(2026, 1, day, tzinfo=UTC)

    tags = [TagInfo("main", pushed=at(9)), TagInfo("9.0", pushed=at(1)), TagInfo("nightly", pushed=at(5))]
    kept, dropped = TagPolicy(keep=2).apply(tags)
    assert [t.name for t in kept] == ["main", "nightly"]
    assert dropped[0].policy == "keep" and "push time" in dropped[0].reason
    kept, _ = TagPolicy(keep=1, keep_by="semver").apply(tags)
    assert [t.name for t in kept] == ["9.0"]


def test_platforms_drop_only_tags_known_to_lack_them() -> None:
    amd, arm = Platform.parse("linux/amd64"), Platform.parse("linux/arm64")
    tags = [TagInfo("a", platforms=(amd,)), TagInfo("b", platforms=(arm, amd)), TagInfo("c")]
    kept, dropped = TagPolicy(platforms=[arm]).apply(tags)
    assert [t.name for t in kept] == ["b", "c"]
    assert [(d.tag, d.policy) for d in dropped] == [("a", "platforms")]


def test_signature_and_referrer_tags_name_their_subject() -> None:
    hexd = "ab" * 32
    assert artifact_subject(f"sha256-{hexd}.sig") == (f"sha256:{hexd}", "sig")
    assert artifact_subject(f"sha256-{hexd}") == (f"sha256:{hexd}", "referrers")
    assert artifact_subject("sha256-abc.sig") is None


def test_config_sources_each_with_their_own_policies() -> None:
    cfg = parse_config(
        """
dest: registry.local:5000/mirror
sources:
  - hub: grafana/grafana
    include: ['11\\..*']
    keep: 3
  - registry: ghcr.io/org/app
    semver: '>=1.27 <2'
    immutable: ['\\d+\\.\\d+\\.\\d+']
    signatures: false
  - repo: python
    platforms: linux/amd64
""",
        name="hubmirror.yaml",
    )
    hub, reg, py = cfg.tag_sources()
    assert (hub.kind, hub.name, hub.keep, hub.uses_hub_api) == ("hub", "docker.io/grafana/grafana", 3, True)
    assert (reg.name, reg.semver, reg.signatures, reg.uses_hub_api) == ("ghcr.io/org/app", ">=1.27 <2", False, False)
    assert reg.is_immutable("1.2.3") and not reg.is_immutable("1.2")
    amd64 = (Platform.parse("linux/amd64"),)
    assert (py.name, py.uses_hub_api, py.platforms) == ("docker.io/library/python", True, amd64)
    assert not cfg.reads_library


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("- hub: a/b\n    registry: x.io/a", "hubmirror.yaml:3: sources[0]: give exactly one of: repo, registry, hub"),
        ("- hub: a/b\n    semver: '>>1'", "hubmirror.yaml:4: sources[0].semver: invalid semver range"),
        ("- repo: python\n    immutable: ['.*']", "immutable is not allowed for docker.io/library"),
        (
            "- hub: a/b\n    keeep: 3",
            "unknown key, did you mean keep? (allowed: exclude, hub, immutable, include, keep",
        ),
    ],
)
def test_config_source_errors_name_the_line(entry: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(f"dest: r.local/m\nsources:\n  {entry}\n", name="hubmirror.yaml")
    assert message in str(e.value)
