"""Proxies come from the environment, as docker and curl read them, and NO_PROXY exempts hosts."""

from __future__ import annotations

import pytest

from hubmirror.registry import _proxy


@pytest.fixture(autouse=True)
def fresh_cache(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    for var in ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    _proxy._proxy.cache_clear()
    yield
    _proxy._proxy.cache_clear()


def test_https_proxy_is_used_for_registries_and_no_proxy_exempts_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "registry.local,.corp.example")
    assert _proxy.proxy_for("https://registry-1.docker.io/v2/") == "http://proxy.internal:3128"
    assert _proxy.proxy_for("https://registry.local:5000/v2/") is None
    assert _proxy.proxy_for("https://mirror.corp.example/v2/") is None
    assert _proxy.proxy_for("http://127.0.0.1:5000/v2/") is None  # no HTTP_PROXY set


def test_no_proxy_configured_means_direct() -> None:
    assert _proxy.proxy_for("https://registry-1.docker.io/v2/") is None
