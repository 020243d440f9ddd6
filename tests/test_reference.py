"""Reference parsing and normalisation, as docker does it (reference §D.1, §E.22)."""

from __future__ import annotations

import pytest

from hubmirror import InvalidReference
from hubmirror.reference import Reference

D = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("text", "normal", "registry", "repository", "tag", "digest"),
    [
        ("ubuntu", "docker.io/library/ubuntu:latest", "docker.io", "library/ubuntu", "latest", None),
        ("python:3.12", "docker.io/library/python:3.12", "docker.io", "library/python", "3.12", None),
        ("docker.io/python", "docker.io/library/python:latest", "docker.io", "library/python", "latest", None),
        (
            "index.docker.io/library/python",
            "docker.io/library/python:latest",
            "docker.io",
            "library/python",
            "latest",
            None,
        ),
        ("index.docker.io/python:3", "docker.io/library/python:3", "docker.io", "library/python", "3", None),
        ("rocket.chat:6", "docker.io/library/rocket.chat:6", "docker.io", "library/rocket.chat", "6", None),
        ("bitnami/redis", "docker.io/bitnami/redis:latest", "docker.io", "bitnami/redis", "latest", None),
        ("tomcat:8.5.10RC1", "docker.io/library/tomcat:8.5.10RC1", "docker.io", "library/tomcat", "8.5.10RC1", None),
        ("localhost/foo", "localhost/foo:latest", "localhost", "foo", "latest", None),
        ("localhost:5000/a/b:tag", "localhost:5000/a/b:tag", "localhost:5000", "a/b", "tag", None),
        (
            "127.0.0.1:5000/mirror/library/python:3",
            "127.0.0.1:5000/mirror/library/python:3",
            "127.0.0.1:5000",
            "mirror/library/python",
            "3",
            None,
        ),
        (
            "registry.example.com/team/app",
            "registry.example.com/team/app:latest",
            "registry.example.com",
            "team/app",
            "latest",
            None,
        ),
        ("Registry.Example.com/app", "Registry.Example.com/app:latest", "Registry.Example.com", "app", "latest", None),
        (f"alpine@{D}", f"docker.io/library/alpine@{D}", "docker.io", "library/alpine", None, D),
        (f"alpine:3.20@{D}", f"docker.io/library/alpine:3.20@{D}", "docker.io", "library/alpine", "3.20", D),
        (f"host:5000/a@{D}", f"host:5000/a@{D}", "host:5000", "a", None, D),
        (
            "a__b/c--d/e.f_g:T_1.x-y",
            "docker.io/a__b/c--d/e.f_g:T_1.x-y",
            "docker.io",
            "a__b/c--d/e.f_g",
            "T_1.x-y",
            None,
        ),
        ("x:" + "t" * 128, "docker.io/library/x:" + "t" * 128, "docker.io", "library/x", "t" * 128, None),
    ],
)
def test_normalises_like_docker(
    text: str, normal: str, registry: str, repository: str, tag: str | None, digest: str | None
) -> None:
    ref = Reference.parse(text)
    assert str(ref) == normal
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag, digest)
    assert Reference.parse(str(ref)) == ref  # the normal form is a fixed point


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty"),
        (" ubuntu", "whitespace"),
        ("Ubuntu", "lowercase"),
        ("library/Python:3", "lowercase"),
        ("ubuntu:", "bad tag"),
        ("ubuntu:-x", "bad tag"),
        ("ubuntu:" + "t" * 129, "bad tag"),
        ("ubuntu:a+b", "bad tag"),
        ("ubuntu@sha256:abc", "bad digest"),
        ("ubuntu@md5:" + "a" * 32, "bad digest"),
        ("a//b", "bad repository"),
        ("a/b/", "bad repository"),
        ("-a", "bad repository"),
        ("a..b", "bad repository"),
        ("a___b", "bad repository"),
        ("host:5000/", "bad repository"),
        ("host:port/a", "bad registry"),
        (":tag", "no repository"),
        ("reg.io/" + "a" * 260, "longer than"),
    ],
)
def test_bad_references_quote_the_input(text: str, why: str) -> None:
    with pytest.raises(InvalidReference) as exc:
        Reference.parse(text)
    assert repr(text) in str(exc.value)
    assert why in str(exc.value)


def test_api_host_and_ref() -> None:
    hub = Reference.parse("python:3.12")
    assert hub.api_host == "registry-1.docker.io"
    assert hub.ref == "3.12"
    assert Reference.parse("127.0.0.1:5000/a:1").api_host == "127.0.0.1:5000"
    pinned = Reference.parse(f"python:3.12@{D}")
    assert pinned.ref == D  # a digest wins over the tag
    assert Reference.parse("python", default_tag=None).tag is None
    with pytest.raises(InvalidReference, match="neither a tag nor a digest"):
        _ = Reference.parse("python", default_tag=None).ref


def test_with_tag_and_with_digest() -> None:
    ref = Reference.parse(f"python:3@{D}")
    moved = ref.with_tag("3.12")
    assert str(moved) == "docker.io/library/python:3.12"
    assert moved.ref == "3.12"
    pinned = Reference.parse("python:3").with_digest(D)
    assert str(pinned) == f"docker.io/library/python:3@{D}"
    with pytest.raises(InvalidReference, match="'bad tag!'"):
        ref.with_tag("bad tag!")
    with pytest.raises(InvalidReference, match="'sha256:xyz'"):
        ref.with_digest("sha256:xyz")
