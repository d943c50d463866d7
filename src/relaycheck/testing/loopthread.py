"""Servers on their own event loop in a thread, so synchronous and async callers can both use them.

Readiness is an event set once ``setup`` has bound the sockets (or failed, in which case
``start`` re-raises the failure in the caller's thread): never a guess with a sleep.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Self


class LoopThread:
    """Subclasses implement ``setup`` (bind, on the loop) and ``teardown`` (close)."""

    start_timeout = 60.0

    def __init__(self, name: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    async def setup(self) -> None:
        raise NotImplementedError

    async def teardown(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self.setup())
        except BaseException as exc:  # reported to the starting thread by start()
            self._failure = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self.teardown())
        self._loop.close()

    def start(self) -> Self:
        self._thread.start()
        self._ready.wait(timeout=self.start_timeout)
        if self._failure is not None:
            raise self._failure
        return self

    def stop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
