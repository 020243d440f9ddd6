"""The emulators' common lifecycle: an asyncio server on an event loop of its own, in a background thread, so
that synchronous tests (and subprocesses) can talk to it."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Self

#: How long `ThreadedServer.start` waits for the server to listen, and `stop` for its thread to end.
START_TIMEOUT = 20.0


class ThreadedServer:
    """Subclasses give `_setup` (start listening; runs on the server's loop before `start` returns) and
    `_teardown` (close what `_setup` opened), and may name themselves (`_name`, `_thread_name`)."""

    #: How errors name the server.
    _name = ""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _thread_name(self) -> str:
        return self._name or type(self).__name__

    async def _setup(self) -> None:
        raise NotImplementedError

    async def _teardown(self) -> None:
        raise NotImplementedError

    def start(self) -> Self:
        """Start serving in a background thread; returns once `_setup` is done (its ports accept)."""
        if self._thread is not None:
            return self
        loop = asyncio.new_event_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._setup())
            except BaseException as e:
                ready.set_exception(e)
                loop.close()
                return
            ready.set_result(None)
            loop.run_forever()
            loop.run_until_complete(self._teardown())
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name=self._thread_name(), daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not ready.done():  # set on the server's thread before it serves; no race on `done()`
            if not self._thread.is_alive() or time.monotonic() > deadline:
                break
            self._thread.join(0.01)
        if not ready.done():
            raise RuntimeError(f"{self._name or type(self).__name__} did not start")
        ready.result()
        return self

    def stop(self) -> None:
        """Stop serving and join the thread. Safe to call twice."""
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(START_TIMEOUT)
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
