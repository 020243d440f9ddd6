"""Per-registry TLS settings: a CA file, a client certificate (and key), and ``insecure``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from ..reference import api_host, normalize_registry

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class TLSSettings:
    """How to reach one registry over TLS; used for every request to it, token requests included.

    *ca_file* is trusted besides the system CAs; *cert_file* (+ *key_file*, unless the key is in the
    certificate file) is presented as the client certificate. *insecure* True: HTTPS without
    verification, then plain HTTP; False: verified HTTPS only, even on loopback; None: the default
    (plain HTTP on loopback unless a CA or client certificate is given, else verified HTTPS).
    """

    ca_file: PathLike | None = None
    cert_file: PathLike | None = None
    key_file: PathLike | None = None
    insecure: bool | None = None


def tls_for(settings: Mapping[str, TLSSettings], registry: str) -> TLSSettings:
    """The settings of *registry* (by its name or API host), else those under ``""`` (every registry)."""
    for key in (registry, normalize_registry(registry), api_host(registry), ""):
        if key in settings:
            return settings[key]
    return TLSSettings()
