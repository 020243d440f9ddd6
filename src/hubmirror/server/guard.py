"""Connection limits for ``hubmirror serve`` that aiohttp's server does not have: a cap on open connections
and a deadline for each request head.

aiohttp closes a keep-alive connection that stays idle for ``keepalive_timeout`` (an hour by default), but
nothing bounds how many connections are open, and older aiohttp versions never time out a connection that
never completes its first request head (aiohttp PR #13681 added that timer): slow or half-open clients
could hold every file descriptor, and then nothing answers, not even ``/healthz``, and the sync itself
cannot open a socket or a file.

`ConnectionGuard` wraps the protocol of each connection (`ConnectionGuard.site`):

* a connection must deliver a complete request head within ``header_timeout`` seconds of connecting, and
  the next one within ``header_timeout`` of the previous response (an idle keep-alive connection is closed
  then too); a request being handled is not timed out here (the webhook reads its body against its own
  deadline);
* at most ``max_connections`` are open: a new connection beyond that closes the connection idle for the
  longest time (one not handling a request), or, when every one is handling a request, is answered 503
  and closed at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

_BUSY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\nRetry-After: 1\r\n\r\n"


class _Guarded(asyncio.Protocol):
    """One connection: forwards everything to aiohttp's protocol (*inner*) once the guard admits it."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self.guard = guard
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self.admitted = False
        self.busy = 0  # requests being handled
        self.deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self.guard._admit(self):
            self.admitted = True
            self.inner.connection_made(transport)
        else:
            transport.write(_BUSY)
            transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard._drop(self)
        if self.admitted:
            self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.admitted:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.admitted else None

    def pause_writing(self) -> None:
        if self.admitted:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.admitted:
            self.inner.resume_writing()

    def close(self, why: str) -> None:
        if self.transport is not None and not self.transport.is_closing():
            log.debug("closing connection from %s: %s", self.transport.get_extra_info("peername"), why)
            self.transport.abort()


class ConnectionGuard:
    """Caps open connections at *max_connections* and gives each request head *header_timeout* seconds."""

    def __init__(self, *, max_connections: int, header_timeout: float) -> None:
        if max_connections < 1 or header_timeout <= 0:
            raise ValueError("max_connections must be at least 1 and header_timeout positive")
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self._open: dict[asyncio.Protocol, _Guarded] = {}  # by aiohttp's protocol
        self._idle: OrderedDict[_Guarded, None] = OrderedDict()  # longest idle first
        # Counters (for tests and the log).
        self.refused = 0
        self.evicted = 0
        self.timed_out = 0

    @property
    def open(self) -> int:
        return len(self._open)

    # -- connections --------------------------------------------------------------------------------

    def protocol_factory(self, inner: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """The factory for ``loop.create_server``: aiohttp's protocol (from *inner*), guarded."""
        return lambda: _Guarded(self, inner())

    def _admit(self, conn: _Guarded) -> bool:
        if len(self._open) >= self.max_connections:
            if not self._idle:
                self.refused += 1
                if self.refused == 1 or self.refused % 1000 == 0:
                    log.warning(
                        "%d connections are handling requests (--max-connections); refused a new one "
                        "(%d refused so far)",
                        len(self._open),
                        self.refused,
                    )
                return False
            oldest = next(iter(self._idle))
            self.evicted += 1
            self._forget(oldest)
            oldest.close("idle, and a new connection needed the room")
        self._open[conn.inner] = conn
        self._arm(conn)
        return True

    def _drop(self, conn: _Guarded) -> None:
        if self._open.get(conn.inner) is conn:
            self._forget(conn)

    def _forget(self, conn: _Guarded) -> None:
        self._open.pop(conn.inner, None)
        self._idle.pop(conn, None)
        if conn.deadline is not None:
            conn.deadline.cancel()
            conn.deadline = None

    def _arm(self, conn: _Guarded) -> None:
        """*conn* waits for a request head: idle, with a deadline."""
        self._idle[conn] = None
        self._idle.move_to_end(conn)
        if conn.deadline is not None:
            conn.deadline.cancel()
        conn.deadline = asyncio.get_running_loop().call_later(self.header_timeout, self._expire, conn)

    def _expire(self, conn: _Guarded) -> None:
        conn.deadline = None
        if conn.busy == 0 and self._open.get(conn.inner) is conn:
            self.timed_out += 1
            self._forget(conn)
            conn.close(f"no complete request within {self.header_timeout:g} s")

    # -- requests -----------------------------------------------------------------------------------

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Marks the connection busy while its request is handled (no deadline, never evicted)."""
        conn = self._open.get(request.protocol)
        if conn is None:  # not a guarded connection (a test client's own site)
            return await handler(request)
        conn.busy += 1
        self._idle.pop(conn, None)
        if conn.deadline is not None:
            conn.deadline.cancel()
            conn.deadline = None
        try:
            return await handler(request)
        finally:
            conn.busy -= 1
            if conn.busy == 0 and self._open.get(conn.inner) is conn:
                self._arm(conn)

    # -- listening ----------------------------------------------------------------------------------

    def site(self, runner: web.BaseRunner, host: str, port: int, *, backlog: int = 128) -> web.BaseSite:
        """A TCP site of *runner* whose connections this guard watches."""
        return _GuardedSite(runner, self, host, port, backlog=backlog)


class _GuardedSite(web.BaseSite):
    def __init__(self, runner: web.BaseRunner, guard: ConnectionGuard, host: str, port: int, *, backlog: int) -> None:
        super().__init__(runner, backlog=backlog)
        self._guard, self._host, self._port = guard, host, port

    @property
    def name(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server: Any = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self._guard.protocol_factory(server), self._host, self._port, backlog=self._backlog, reuse_address=True
        )


__all__ = ["ConnectionGuard"]
