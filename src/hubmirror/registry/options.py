"""`ClientOptions`: how to reach one registry, named once and passed through the layers to `RegistryClient`."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .client import RegistryClient
from .credentials import Credentials
from .retry import RetryPolicy
from .tls import TLSSettings

if TYPE_CHECKING:
    import aiohttp


@dataclass(frozen=True)
class ClientOptions:
    """The options of a `RegistryClient` that callers choose (see it for the rules of each).

    *credentials* are used as given; without them they are looked up lazily (in *authfile*, or the
    default places) unless *anonymous*. *tls* applies to every request to the registry, token requests
    included. *retry* and *timeout* default to the client's; *rate* paces requests (per second).
    """

    credentials: Credentials | None = None
    authfile: str | os.PathLike[str] | None = None
    anonymous: bool = False
    tls: TLSSettings = field(default_factory=TLSSettings)
    retry: RetryPolicy | None = None
    timeout: aiohttp.ClientTimeout | None = None
    rate: float | None = None

    def client(self, host: str) -> RegistryClient:
        """A new `RegistryClient` of registry *host* with these options."""
        return RegistryClient(
            host,
            credentials=self.credentials,
            authfile=self.authfile,
            anonymous=self.anonymous,
            insecure=self.tls.insecure,
            ca_file=self.tls.ca_file,
            cert_file=self.tls.cert_file,
            key_file=self.tls.key_file,
            retry=self.retry,
            timeout=self.timeout,
            rate=self.rate,
        )


__all__ = ["ClientOptions"]
