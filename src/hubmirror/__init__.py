"""hubmirror: keep a private registry in step with Docker Hub's Official Images, within the pull quota."""

from ._errors import (
    AuthError,
    BudgetExhausted,
    ConfigError,
    CredentialsError,
    DigestMismatch,
    HubmirrorError,
    InvalidReference,
    LibraryError,
    ManifestTooLarge,
    NotAccessible,
    NotFound,
    QuotaExceeded,
    RegistryError,
    StateError,
    StateLocked,
    StateUnavailable,
    StoreError,
    UnsupportedManifest,
)

__version__ = "0.1.0"

__all__ = [
    "AuthError",
    "BudgetExhausted",
    "ConfigError",
    "CredentialsError",
    "DigestMismatch",
    "HubmirrorError",
    "InvalidReference",
    "LibraryError",
    "ManifestTooLarge",
    "NotAccessible",
    "NotFound",
    "QuotaExceeded",
    "RegistryError",
    "StateError",
    "StateLocked",
    "StateUnavailable",
    "StoreError",
    "UnsupportedManifest",
    "__version__",
]
