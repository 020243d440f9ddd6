"""`open_location`: turn ``oci:PATH[:TAG]`` or an image reference into a store, a repository and a ref."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from .._errors import InvalidReference
from ..digest import is_digest
from ..registry.tls import TLSSettings, tls_for
from ._base import Store
from .ocidir import OCILayoutStore

_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")


def split_oci(text: str) -> tuple[Path, str | None]:
    """``oci:PATH[:TAG|@DIGEST]`` → (PATH, TAG or DIGEST or None)."""
    rest = text[4:]
    if not rest:
        raise InvalidReference(f"invalid location {text!r}: oci: needs a directory path")
    if "@" in rest:
        path, _, digest = rest.rpartition("@")
        if is_digest(digest) and path:
            return Path(path), digest
    path, sep, tag = rest.rpartition(":")
    if sep and path and "/" not in tag and _TAG.match(tag):
        return Path(path), tag
    return Path(rest), None


def open_location(
    text: str,
    *,
    authfile: str | None = None,
    insecure: Collection[str] = (),
    tls: Mapping[str, TLSSettings] | None = None,
    default_tag: str | None = "latest",
) -> tuple[Store, str, str | None]:
    """(store, repository, ref) for *text*.

    ``oci:PATH[:TAG]`` opens an `OCILayoutStore` on PATH with repository ``""`` (ref None without a
    tag). Anything else, optionally prefixed ``docker://``, is an image reference on a registry; the
    ref is its digest if it has one, else its tag (*default_tag* when it names neither). Registries
    listed in *insecure* are spoken to over plain HTTP; *tls* gives TLS settings per registry (the
    entry ``""`` applies to every registry without one of its own). Raises `InvalidReference`.
    """
    if text.startswith("oci:"):
        path, ref = split_oci(text)
        return OCILayoutStore(path), "", ref
    from ..reference import Reference

    if text.startswith("docker://"):
        text = text[len("docker://") :]
    reference = Reference.parse(text, default_tag=default_tag)
    store = open_registry(reference.registry, authfile=authfile, insecure=insecure, tls=tls)
    return store, reference.repository, reference.digest or reference.tag


def open_registry(
    host: str,
    *,
    authfile: str | None = None,
    insecure: Collection[str] = (),
    tls: Mapping[str, TLSSettings] | None = None,
    **kw: Any,
) -> Store:
    """A `RegistryStore` on registry *host*: plain HTTP when *insecure* names it, else TLS as *tls* says for
    it (the entry ``""``: every registry without its own). *kw* go to `RegistryStore`."""
    from ..reference import api_host, normalize_registry
    from .registry import RegistryStore

    host = normalize_registry(host)
    settings = tls_for(tls or {}, host)
    return RegistryStore(
        host,
        authfile=authfile,
        insecure=True if (host in insecure or api_host(host) in insecure) else settings.insecure,
        ca_file=settings.ca_file,
        cert_file=settings.cert_file,
        key_file=settings.key_file,
        **kw,
    )
