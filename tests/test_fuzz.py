"""Fuzzing of the parsers that read untrusted input: the config file, image references, platforms,
manifests and Docker Hub's ``ratelimit-*`` headers (the library file parser: tests/library/test_properties.py).

Each parser either succeeds or raises the project's own error, whose message names what was wrong; none
crashes with a Python error. Examples are bounded and there is no deadline, so that the suite stays fast
and steady on a loaded CI machine.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hubmirror import ConfigError, HubmirrorError, InvalidReference, UnsupportedManifest
from hubmirror.config import SyncConfig, parse_config
from hubmirror.digest import is_digest
from hubmirror.media import DOCKER_MANIFEST, MANIFEST_TYPES, OCI_INDEX, OCI_MANIFEST, Manifest, detect_media_type
from hubmirror.platform import Platform
from hubmirror.reference import Reference
from hubmirror.registry.ratelimit import RateLimit

#: Examples per test; ``HUBMIRROR_FUZZ_EXAMPLES=5000 scripts/test tests/test_fuzz.py`` for a deeper run.
EXAMPLES = int(os.environ.get("HUBMIRROR_FUZZ_EXAMPLES", "150"))
FAST = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------------------------------------- config

KEYS = [f.alias or n for n, f in SyncConfig.model_fields.items()] + ["ratelimit", "nope", "password"]
SUBKEYS = ["reserve", "min_remaining", "wait", "max_wait", "username_env", "password_env", "authfile", "helper", "x"]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["python", "linux/amd64", "r:5000/m", "oci:/tmp/x", "17 */6 * * *", "6h", "yes", "", "~", "("]),
    st.text(max_size=20),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from([*SUBKEYS, "docker.io"]), inner, max_size=4)
    ),
    max_leaves=12,
)
configs = st.dictionaries(st.sampled_from(KEYS), values, max_size=8)
ERROR_LINE = re.compile(r"^fuzz\.yaml(:\d+)?: (invalid YAML|the config must be a mapping|.*\S+: .+)")


def check_config(text: str) -> None:
    try:
        cfg = parse_config(text, name="fuzz.yaml")
    except ConfigError as e:
        lines = str(e).splitlines()
        assert lines
        for line in lines:
            assert ERROR_LINE.match(line), line
        return
    assert isinstance(cfg, SyncConfig)
    try:
        cfg.merge({})  # a valid config survives the CLI merge (dump and re-validate) unchanged in kind …
    except ConfigError as e:  # … or its settings contradict each other (checked on the merged config): lines
        for line in str(e).splitlines():
            assert ERROR_LINE.match(line), line


@FAST
@given(configs)
@example({"images": "\x1e"})  # a control character quoted in the message must not split its line
@example({"\x85key\u2028": 1})
def test_config_from_generated_yaml(data: dict[str, Any]) -> None:
    check_config(yaml.safe_dump(data, allow_unicode=True))


@FAST
@given(configs, st.data())
@example({}, None)  # type: ignore[arg-type]
def test_config_from_mutated_yaml(data: dict[str, Any], draw: st.DataObject | None) -> None:
    text = yaml.safe_dump(data)
    if draw is not None:
        for _ in range(draw.draw(st.integers(1, 4))):
            pos = draw.draw(st.integers(0, len(text)))
            text = (
                text[:pos]
                + draw.draw(st.sampled_from([":", "- ", "\n", "  ", "&a ", "*a", "!!binary ", "{", "'"]))
                + text[pos:]
            )
    check_config(text)


@settings(max_examples=max(60, EXAMPLES // 2), deadline=None)
@given(st.text(max_size=200))
@example("a: &a [*a]\n")  # a recursive alias
@example("images: &a [x, x]\nplatforms: &b [*a, *a, *a]\ninclude_tags: [*b, *b, *b, *b]\n")
@example("? [a, b]\n: 1\n")  # a non-string key
@example("state: !!binary aGVsbG8=\n")
@example("commit: 2024-01-01\nconcurrency: .inf\n")
def test_config_from_arbitrary_text(text: str) -> None:
    check_config(text)


def test_config_alias_bomb_is_refused_quickly() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    lines.append("images: *a8\n")
    try:
        parse_config("\n".join(lines), name="fuzz.yaml")
    except ConfigError as e:
        assert "fuzz.yaml" in str(e)
    else:  # pragma: no cover - an expansion of 10**9 items must not be accepted
        raise AssertionError("the alias bomb was accepted")


# ---------------------------------------------------------------------------------------------- references

ref_chars = st.sampled_from([*list("abcz09.-_/:@AZ "), "sha256:", "a" * 64, "localhost", "docker.io/", "\n", "é"])
references = st.lists(ref_chars, max_size=30).map("".join) | st.text(max_size=80)


@FAST
@given(references)
@example("python:3.13\n")
@example("a@sha256:" + "a" * 64 + "\n")
def test_reference_parse(text: str) -> None:
    try:
        ref = Reference.parse(text)
    except InvalidReference as e:
        assert repr(text) in str(e) or repr(text)[:40] in str(e)
        return
    assert ref.tag is None or re.fullmatch(r"[\w][\w.-]{0,127}", ref.tag, re.ASCII)
    assert ref.digest is None or is_digest(ref.digest)
    assert "\n" not in str(ref) and Reference.parse(str(ref)) == ref


@FAST
@given(st.text(max_size=40))
def test_platform_parse(text: str) -> None:
    try:
        p = Platform.parse(text)
    except HubmirrorError as e:
        assert repr(text) in str(e)
        return
    assert p.os and p.architecture


# ---------------------------------------------------------------------------------------------- manifests

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
digests = st.sampled_from(["sha256:" + "a" * 64, "sha512:" + "b" * 128, "sha256:" + "a" * 64 + "\n", "sha256:x", ""])
descriptor = st.fixed_dictionaries(
    {},
    optional={
        "mediaType": st.sampled_from(sorted(MANIFEST_TYPES)) | json_values,
        "digest": digests | json_values,
        "size": st.integers(-5, 2**40) | st.sampled_from([1e400, -1e400, 1.5, "12", True]) | json_values,
        "platform": st.fixed_dictionaries({}, optional={"os": json_values, "architecture": json_values}) | json_values,
        "annotations": st.dictionaries(st.text(max_size=30), json_values, max_size=2) | json_values,
        "urls": st.lists(st.text(max_size=10), max_size=2) | json_values,
    },
)
manifest_docs = st.fixed_dictionaries(
    {},
    optional={
        "schemaVersion": st.sampled_from([2, 1, "2"]) | json_values,
        "mediaType": st.sampled_from(sorted(MANIFEST_TYPES)) | json_values,
        "manifests": st.lists(descriptor, max_size=3) | json_values,
        "config": descriptor | json_values,
        "layers": st.lists(descriptor, max_size=3) | json_values,
        "subject": descriptor | json_values,
    },
)


def check_manifest(data: bytes, declared: str) -> None:
    media_type = detect_media_type(data, declared)
    assert isinstance(media_type, str)
    m = Manifest(data, media_type)
    try:
        m.check_supported()
    except UnsupportedManifest as e:
        assert m.digest in str(e)
        return
    # Accepted: everything the copier reads from it is well formed.
    for d in [*m.children, *m.blobs]:
        assert is_digest(d.digest) and re.fullmatch(r"sha(256|512):[a-f0-9]+", d.digest), d.digest
        assert isinstance(d.size, int) and d.size >= 0
        assert isinstance(d.media_type, str)
        d.is_attestation, d.attests, d.is_foreign, d.platform  # noqa: B018


@FAST
@given(manifest_docs, st.sampled_from([OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST, "application/json", ""]))
def test_manifest_documents(doc: dict[str, Any], declared: str) -> None:
    check_manifest(json.dumps(doc).encode(), declared)


@settings(max_examples=max(80, EXAMPLES // 2), deadline=None)
@given(st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()), st.sampled_from([OCI_INDEX, ""]))
def test_manifest_arbitrary_bytes(data: bytes, declared: str) -> None:
    check_manifest(data, declared)


# ---------------------------------------------------------------------------------------------- ratelimit

header_values = st.one_of(
    st.text(max_size=30),
    st.builds(
        lambda n, w, extra: f"{n}{w}{extra}",
        st.integers(-5, 10**30).map(str) | st.sampled_from(["", " 7 ", "٣", "²", "1_000", "0x10"]),
        st.sampled_from(["", ";w=21600", ";w=", ";w=²", ";w=-1", "; w = 60", ";w=٣"]),
        st.sampled_from(["", ",100;w=60", ";comment", ", ", "\x00"]),
    ),
)
header_names = st.sampled_from(
    ["ratelimit-limit", "RateLimit-Limit", "ratelimit-remaining", "RATELIMIT-REMAINING", "docker-ratelimit-source"]
)


@FAST
@given(st.dictionaries(header_names, header_values, max_size=5))
@example({"ratelimit-limit": "100;w=²", "ratelimit-remaining": "7"})
@example({"ratelimit-limit": "٣", "ratelimit-remaining": "7"})
def test_ratelimit_headers(headers: dict[str, str]) -> None:
    rl = RateLimit.from_headers(headers)
    if rl is None:
        return
    assert rl.limit >= 0 and rl.remaining >= 0
    assert rl.window is None or rl.window >= 0
