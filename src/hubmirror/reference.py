"""Image references: parse and normalise ``[registry/]repository[:tag][@digest]`` as docker does (§D.1).

``ubuntu``, ``docker.io/ubuntu`` and ``index.docker.io/library/ubuntu`` all become
``docker.io/library/ubuntu:latest``; the API host of ``docker.io`` is ``registry-1.docker.io``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from ._errors import InvalidReference
from .digest import is_digest

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
LEGACY_HUB = "index.docker.io"
#: The key under which docker keeps Docker Hub credentials in config.json and credential stores.
DOCKER_HUB_AUTH_KEY = "https://index.docker.io/v1/"

_HUB_ALIASES = frozenset({DOCKER_HUB, LEGACY_HUB, DOCKER_HUB_API, "registry.hub.docker.com"})

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_PATH_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_DOMAIN_COMPONENT = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
_DOMAIN_RE = re.compile(rf"^(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9A-Fa-f:.]+\])(?::[0-9]+)?$")
_MAX_NAME = 255


def is_tag(value: str) -> bool:
    """True if *value* is a valid tag (``[A-Za-z0-9_][A-Za-z0-9._-]{0,127}``)."""
    return bool(_TAG_RE.match(value))


def normalize_registry(registry: str) -> str:
    """``index.docker.io`` and the other Docker Hub aliases → ``docker.io``; others unchanged."""
    return DOCKER_HUB if registry.lower() in _HUB_ALIASES else registry


def api_host(registry: str) -> str:
    """The host that serves the registry API: ``registry-1.docker.io`` for Docker Hub."""
    return DOCKER_HUB_API if normalize_registry(registry) == DOCKER_HUB else registry


@dataclass(frozen=True)
class Reference:
    """A normalised image reference. ``tag`` and ``digest`` may both be set (``name:tag@sha256:…``)."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str, default_tag: str | None = "latest") -> Reference:
        """Parse *text*; a reference with neither tag nor digest gets *default_tag*.

        Raises `InvalidReference` quoting *text* when it does not follow the reference grammar.
        """
        original = text
        if not isinstance(text, str) or not text or text != text.strip():
            raise InvalidReference(f"invalid reference {original!r}: empty or surrounded by whitespace")
        digest: str | None = None
        if "@" in text:
            text, digest = text.split("@", 1)
            if not is_digest(digest):
                raise InvalidReference(f"invalid reference {original!r}: bad digest {digest!r}")
        tag: str | None = None
        slash = text.rfind("/")
        colon = text.rfind(":")
        if colon > slash:
            text, tag = text[:colon], text[colon + 1 :]
            if not is_tag(tag):
                raise InvalidReference(f"invalid reference {original!r}: bad tag {tag!r}")
        if not text:
            raise InvalidReference(f"invalid reference {original!r}: no repository name")
        registry, path = _split_domain(text)
        if not _DOMAIN_RE.match(registry):
            raise InvalidReference(f"invalid reference {original!r}: bad registry {registry!r}")
        host, sep, port = registry.rpartition(":")
        if sep and port.isdigit() and not host.endswith(":") and not 0 < int(port) <= 65535:
            raise InvalidReference(f"invalid reference {original!r}: port {port} is out of range (1-65535)")
        if path != path.lower() and _PATH_RE.match(path.lower()):
            raise InvalidReference(f"invalid reference {original!r}: repository name must be lowercase")
        if not _PATH_RE.match(path):
            raise InvalidReference(f"invalid reference {original!r}: bad repository name {path!r}")
        if len(registry) + 1 + len(path) > _MAX_NAME:
            raise InvalidReference(f"invalid reference {original!r}: name longer than {_MAX_NAME} characters")
        if tag is None and digest is None and default_tag is not None:
            tag = default_tag
        return cls(registry, path, tag, digest)

    @property
    def name(self) -> str:
        """``registry/repository`` without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def api_host(self) -> str:
        """The host to talk to: ``registry-1.docker.io`` for ``docker.io``, else the registry itself."""
        return api_host(self.registry)

    @property
    def ref(self) -> str:
        """What to ask the registry for: the digest if set, else the tag."""
        ref = self.digest or self.tag
        if ref is None:
            raise InvalidReference(f"reference {self.name!r} has neither a tag nor a digest")
        return ref

    def with_tag(self, tag: str) -> Reference:
        """The same repository at *tag* (any digest is dropped: the tag is what will be resolved)."""
        if not is_tag(tag):
            raise InvalidReference(f"invalid tag {tag!r} for {self.name!r}")
        return replace(self, tag=tag, digest=None)

    def with_digest(self, digest: str) -> Reference:
        """The same repository pinned to *digest* (the tag, if any, is kept for display)."""
        if not is_digest(digest):
            raise InvalidReference(f"invalid digest {digest!r} for {self.name!r}")
        return replace(self, digest=digest)

    def __str__(self) -> str:
        s = self.name
        if self.tag:
            s += f":{self.tag}"
        if self.digest:
            s += f"@{self.digest}"
        return s


def _split_domain(name: str) -> tuple[str, str]:
    """distribution/reference ``splitDockerDomain``: the first component is a registry if it looks like one."""
    first, sep, rest = name.partition("/")
    if not sep or ("." not in first and ":" not in first and first != "localhost" and first == first.lower()):
        registry, path = DOCKER_HUB, name
    else:
        registry, path = first, rest
    registry = normalize_registry(registry) if registry.lower() == LEGACY_HUB else registry
    if registry == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    return registry, path
