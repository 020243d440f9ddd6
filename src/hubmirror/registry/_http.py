"""Bounded reads of HTTP bodies: nothing a registry sends is read without a limit."""

from __future__ import annotations

import aiohttp

#: Bytes of an error answer (or of ``/v2/``) read at most: enough for any error JSON.
MAX_ERROR_BODY = 64 * 1024
#: Bytes of a token server's answer read at most.
MAX_TOKEN_BODY = 1024 * 1024


async def read_capped(resp: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The body of *resp*, or None when it is longer than *limit* bytes (it is not read further)."""
    length = resp.headers.get("Content-Length")
    if length and length.isdigit() and int(length) > limit:
        return None
    buf = bytearray()
    async for chunk in resp.content.iter_chunked(65536):
        buf += chunk
        if len(buf) > limit:
            return None
    return bytes(buf)


async def read_some(resp: aiohttp.ClientResponse, limit: int = MAX_ERROR_BODY) -> bytes:
    """At most the first *limit* bytes of *resp*'s body (an error answer that never ends is cut off).

    Like ``resp.read()``, a second call returns the same bytes.
    """
    length = resp.headers.get("Content-Length")
    if getattr(resp, "_body", None) is not None or (length and length.isdigit() and int(length) <= limit):
        return (await resp.read())[:limit]
    buf = bytearray()
    while len(buf) < limit:
        chunk = await resp.content.read(limit - len(buf))
        if not chunk:
            break
        buf += chunk
    data = bytes(buf)
    resp._body = data  # what `read()` caches: later readers see these bytes, not an empty stream
    return data
