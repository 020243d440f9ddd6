"""Tag-list pagination by ``Link: rel="next"`` (relative URLs), as registry v3 and Hub page.

Distribution v2.8 (the test registries) never pages, so this test serves pages from a small aiohttp
application that speaks exactly the paging part of the API.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from hubmirror.registry import RegistryClient, RetryPolicy

TAGS = [f"t{i:03d}" for i in range(25)]


@pytest.fixture
async def paging_registry() -> AsyncIterator[tuple[str, list[str]]]:
    seen: list[str] = []

    async def v2(_: web.Request) -> web.Response:
        return web.json_response({})

    async def tags(request: web.Request) -> web.Response:
        seen.append(request.path_qs)
        n = int(request.query.get("n", "10"))
        last = request.query.get("last")
        start = TAGS.index(last) + 1 if last else 0
        page = TAGS[start : start + n]
        headers = {}
        if start + n < len(TAGS):
            # relative Link, sometimes without the leading path, as registries send it
            headers["Link"] = f'</v2/{request.match_info["name"]}/tags/list?n={n}&last={page[-1]}>; rel="next"'
        return web.json_response({"name": request.match_info["name"], "tags": page}, headers=headers)

    app = web.Application()
    app.router.add_get("/v2/", v2)
    app.router.add_get("/v2/{name:.+}/tags/list", tags)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


async def test_list_tags_follows_relative_links(paging_registry: tuple[str, list[str]]) -> None:
    host, seen = paging_registry
    async with RegistryClient(host, anonymous=True, retry=RetryPolicy(attempts=2, base_delay=0.001)) as c:
        assert await c.list_tags("library/many") == TAGS
    assert len(seen) == 3  # 10 + 10 + 5
    assert seen[1] == "/v2/library/many/tags/list?n=10&last=t009"
