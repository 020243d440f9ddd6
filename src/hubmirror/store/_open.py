"""`open_location`: turn ``oci:PATH[:TAG]`` or an image reference into a store, a repository and a ref."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Collection, Mapping
from pathlib import Path

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
    mirror: bool = False,
) -> Store:
    """A `RegistryStore` on registry *host*: plain HTTP when *insecure* names it, else TLS as *tls* says for
    it (the entry ``""``: every registry without its own); with *mirror*, a content mirror's quick retries
    (`hubmirror.store.mirrored.mirror_options`)."""
    from ..reference import api_host, normalize_registry
    from ..registry.options import ClientOptions
    from .mirrored import mirror_options
    from .registry import RegistryStore

    host = normalize_registry(host)
    settings = tls_for(tls or {}, host)
    if host in insecure or api_host(host) in insecure:
        settings = dataclasses.replace(settings, insecure=True)
    options = ClientOptions(authfile=authfile, tls=settings)
    return RegistryStore(host, mirror_options(options) if mirror else options)
