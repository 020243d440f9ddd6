"""The exception hierarchy: every error hubmirror raises on purpose is a `HubmirrorError`.

Messages name the thing at fault (a reference, a file and line, a registry and repository) and never
contain a password or token.
"""

from __future__ import annotations


class HubmirrorError(Exception):
    """Base class of every error hubmirror raises on purpose."""


class InvalidReference(HubmirrorError):
    """An image reference that cannot be parsed; the message quotes it."""


class ConfigError(HubmirrorError):
    """A configuration file or flag that is not valid; the message names the key and line."""


class CredentialsError(HubmirrorError):
    """Credentials could not be read (config.json, a credential helper, the environment)."""


class LibraryError(HubmirrorError):
    """A library file (official-images) that cannot be parsed."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None) -> None:
        self.file = file
        self.line = line
        where = file or ""
        if line is not None:
            where = f"{where}:{line}" if where else f"line {line}"
        super().__init__(f"{where}: {message}" if where else message)
        self.reason = message


class RegistryError(HubmirrorError):
    """A registry answered with an error, or could not be reached."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        registry: str | None = None,
        repository: str | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.registry = registry
        self.repository = repository
        super().__init__(message)


class AuthError(RegistryError):
    """Authentication or authorisation failed (401/403, token endpoint refused)."""


class NotFound(RegistryError):
    """A manifest, blob or repository does not exist (404)."""


class NotAccessible(NotFound):
    """A pull refused with 401 ``insufficient_scope`` even with a fresh token: the repository does not exist,
    or these credentials may not read it. Docker Hub answers so for a repository that does not exist (its
    token server grants a token with no access), so it is not a login failure. ``registry`` and
    ``repository`` name the repository."""


class QuotaExceeded(RegistryError):
    """Docker Hub's pull quota is used up (429 TOOMANYREQUESTS). Not retried: stop GETs, defer work."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: object) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kwargs)  # type: ignore[arg-type]


class ManifestTooLarge(RegistryError):
    """A manifest over the 4 MiB cap."""


class DigestMismatch(HubmirrorError):
    """Content whose digest or size differs from what was asked for; nothing of it is stored."""


class UnsupportedManifest(HubmirrorError):
    """A manifest hubmirror will not copy (schema 1, unknown media type)."""


class StoreError(HubmirrorError):
    """A store (OCI layout directory) that cannot be read or written."""


class StateError(HubmirrorError):
    """The sync state database cannot be used (corrupt, or locked by another sync)."""


class StateLocked(StateError):
    """Another sync holds the lock on this state."""


class StateUnavailable(StateError):
    """The state database went away (its connection was lost: a PostgreSQL server restarted, stopped, the
    network) and did not come back within the reconnect window. It stops a run: no work goes on without its
    record; what was pushed is recorded, or settled by the next run (tag intents)."""


class BudgetExhausted(HubmirrorError):
    """The run's pull budget (``--max-pulls``, or the Hub quota minus the reserve) is spent: defer the rest."""
