"""OCI platforms: parse ``os/arch[/variant]``, normalise as containerd does, and match."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._errors import HubmirrorError

# containerd's normalisation: arm64 has default variant v8, arm has default v7.
_DEFAULT_VARIANT = {"arm64": "v8", "arm": "v7"}
_ARCH_ALIASES = {"aarch64": "arm64", "x86_64": "amd64", "x86-64": "amd64", "i386": "386", "armhf": "arm"}


@dataclass(frozen=True, order=True)
class Platform:
    """An OCI platform. ``os_version`` is only set for Windows images."""

    os: str
    architecture: str
    variant: str = ""
    os_version: str = ""

    @classmethod
    def parse(cls, text: str) -> Platform:
        """Parse ``linux/arm64/v8``, ``linux/amd64``, ``windows/amd64``; raise on anything else."""
        parts = text.strip().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise HubmirrorError(f"invalid platform {text!r}: expected OS/ARCH[/VARIANT]")
        return cls(parts[0].lower(), parts[1].lower(), parts[2].lower() if len(parts) == 3 else "")

    @classmethod
    def from_json(cls, obj: Mapping[str, Any] | None) -> Platform | None:
        """The platform of an index descriptor (its ``platform`` object), or None."""
        if not obj:
            return None
        return cls(
            str(obj.get("os", "")),
            str(obj.get("architecture", "")),
            str(obj.get("variant", "") or ""),
            str(obj.get("os.version", "") or ""),
        )

    def normalized(self) -> Platform:
        """containerd's normal form: ``arm64`` → ``arm64/v8``, ``arm`` → ``arm/v7``, aliases folded."""
        arch = _ARCH_ALIASES.get(self.architecture, self.architecture)
        variant = self.variant or _DEFAULT_VARIANT.get(arch, "")
        if arch == "amd64" and variant == "v1":
            variant = ""
        return Platform(self.os, arch, variant, self.os_version)

    def matches(self, wanted: Platform) -> bool:
        """True if this platform satisfies *wanted* (os, arch, variant after normalisation).

        ``os_version`` is ignored unless *wanted* names one.
        """
        a, b = self.normalized(), wanted.normalized()
        if (a.os, a.architecture, a.variant) != (b.os, b.architecture, b.variant):
            return False
        return not b.os_version or a.os_version == b.os_version

    @property
    def is_unknown(self) -> bool:
        """True for ``unknown/unknown``, the platform of attestation manifests."""
        return self.os == "unknown" and self.architecture == "unknown"

    def __str__(self) -> str:
        s = f"{self.os}/{self.architecture}"
        if self.variant:
            s += f"/{self.variant}"
        return s
