"""The OCI distribution API client: authentication, credentials, retries and Docker Hub's rate limit."""

from .auth import Challenge, parse_www_authenticate, repository_scope
from .client import RegistryClient
from .credentials import Credentials, store_login
from .options import ClientOptions
from .ratelimit import RateLimit
from .retry import RetryPolicy

__all__ = [
    "Challenge",
    "ClientOptions",
    "Credentials",
    "RateLimit",
    "RegistryClient",
    "RetryPolicy",
    "parse_www_authenticate",
    "repository_scope",
    "store_login",
]
