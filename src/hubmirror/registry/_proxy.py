"""Proxies from the environment (``HTTPS_PROXY``, ``HTTP_PROXY``, ``NO_PROXY``), looked up once per host.

aiohttp's ``trust_env`` does the same lookup (plus ``~/.netrc``) on every request, in a worker thread;
with thousands of blob and manifest requests that cost seconds of CPU. Proxy settings do not change
while hubmirror runs, so the answer per (scheme, host) is cached.
"""

from __future__ import annotations

import functools
import urllib.request
from urllib.parse import urlsplit


def proxy_for(url: str) -> str | None:
    """The proxy URL to use for *url*, or None (no proxy set, or ``NO_PROXY`` covers the host)."""
    parts = urlsplit(url)
    return _proxy(parts.scheme, parts.netloc)


@functools.lru_cache(maxsize=512)
def _proxy(scheme: str, netloc: str) -> str | None:
    host = netloc.rsplit("@", 1)[-1]
    if urllib.request.proxy_bypass(host):
        return None
    return urllib.request.getproxies().get(scheme)
