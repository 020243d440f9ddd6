"""Content digests: parse, compute, and verify streams of bytes as they pass."""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterable, AsyncIterator

from ._errors import DigestMismatch

# fullmatch, not ``$``: "sha256:…\n" (a trailing newline) is not a digest and must never reach a URL.
_DIGEST_RE = re.compile(r"sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128}")


def is_digest(value: str) -> bool:
    """True if *value* is a well-formed sha256 or sha512 digest."""
    return isinstance(value, str) and _DIGEST_RE.fullmatch(value) is not None


def sha256(data: bytes) -> str:
    """The ``sha256:…`` digest of *data*."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def hasher(digest: str) -> hashlib._Hash:
    """A fresh hash object for the algorithm of *digest*."""
    algo = digest.split(":", 1)[0]
    if algo not in ("sha256", "sha512"):
        raise DigestMismatch(f"unsupported digest algorithm in {digest!r}")
    return hashlib.new(algo)


def verify_bytes(data: bytes, digest: str, what: str = "content") -> None:
    """Raise `DigestMismatch` unless *data* hashes to *digest*."""
    h = hasher(digest)
    h.update(data)
    got = f"{digest.split(':', 1)[0]}:{h.hexdigest()}"
    if got != digest:
        raise DigestMismatch(f"{what}: expected {digest}, got {got}")


async def verified(
    chunks: AsyncIterable[bytes], digest: str, size: int | None, what: str | None = None
) -> AsyncIterator[bytes]:
    """Pass *chunks* through, checking size and digest; the last chunk is held back until both match.

    Because the final chunk is only yielded after the check, a consumer that commits on the last byte
    (an upload's closing PUT, a rename into place) never commits unverified content. The chunks are
    passed on as they are (no copies); *what* names the content in errors (default ``blob DIGEST``).
    """
    h = hasher(digest)
    update = h.update
    limit = size if size is not None else -1
    total = 0
    held: bytes | None = None
    async for chunk in chunks:
        if not chunk:
            continue
        total += len(chunk)
        if 0 <= limit < total:
            raise DigestMismatch(f"{what or f'blob {digest}'}: more than the expected {size} bytes")
        update(chunk)
        if held is not None:
            yield held
        held = chunk
    if size is not None and total != size:
        raise DigestMismatch(f"{what or f'blob {digest}'}: got {total} bytes, expected {size}")
    got = f"{digest.split(':', 1)[0]}:{h.hexdigest()}"
    if got != digest:
        raise DigestMismatch(f"{what or f'blob {digest}'} does not match its digest (got {got})")
    if held is not None:
        yield held
