"""Politeness machinery: a global connection-rate limiter, per-key concurrency caps, and the
event loop that enforces the rate on every TCP connect the engine makes.

The engine opens its own connections (up to ``max_connections`` per target, more after a drop,
for the STARTTLS phase or ``--data-probe``), so counting targets would undercount connections.
The scan therefore runs on ``GatedEventLoop``, whose ``create_connection`` charges the rate
limiter and records the connect outcome for the target being tested (a context variable set
by the runner; the engine's tasks inherit it). Waiting for the rate must not eat the engine's
connect timeout, so a target *prepays* its usual number of connections before it starts
(``Prepaid``), and only extra connections are charged at connect time — as debt that later
targets wait for, never as a wait inside the engine's timeout.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from relaycheck.scan.records import ConnectStats


class ConnectRateLimiter:
    """GCRA token bucket: on average ``rate`` tokens per second, bursts of up to ``burst``.

    ``reserve(n)`` books ``n`` tokens and returns how long to wait before using them, so there
    is no background task and the cost is O(1). ``rate <= 0`` means unlimited.
    """

    def __init__(self, rate: float, burst: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = max(1.0, burst)
        self._clock = clock
        self._tat = clock()  # theoretical arrival time of the next token
        self.taken = 0

    def reserve(self, n: int = 1) -> float:
        self.taken += n
        if self.rate <= 0:
            return 0.0
        now = self._clock()
        interval = 1.0 / self.rate
        self._tat = max(self._tat, now) + n * interval
        return max(0.0, self._tat - self.burst * interval - now)

    async def acquire(self, n: int = 1) -> None:
        delay = self.reserve(n)
        if delay > 0:
            await asyncio.sleep(delay)


class KeyedLimiter:
    """At most ``limit`` holders per key (a host, a /24); idle keys are forgotten (O(active))."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: dict[Hashable, int] = {}
        self._waiters: dict[Hashable, deque[asyncio.Future[None]]] = {}

    @asynccontextmanager
    async def hold(self, key: Hashable) -> AsyncIterator[None]:
        if self.limit <= 0:
            yield
            return
        if self._held.get(key, 0) >= self.limit:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(key, deque()).append(waiter)
            try:
                await waiter  # the releasing holder hands its slot over (count unchanged)
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._release(key)  # handed over, but we are leaving: pass it on
                else:
                    queue = self._waiters.get(key)
                    if queue is not None and waiter in queue:
                        queue.remove(waiter)
                raise
        else:
            self._held[key] = self._held.get(key, 0) + 1
        try:
            yield
        finally:
            self._release(key)

    def _release(self, key: Hashable) -> None:
        queue = self._waiters.get(key)
        while queue:
            waiter = queue.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._waiters.pop(key, None)
        count = self._held[key] - 1
        if count:
            self._held[key] = count
        else:
            del self._held[key]

    @property
    def active_keys(self) -> int:
        return len(self._held)


@dataclass
class Prepaid:
    """Connections a target has already paid for at the rate limiter, and what it saw of them."""

    tokens: int
    stats: ConnectStats


current_target: contextvars.ContextVar[Prepaid | None] = contextvars.ContextVar("relaycheck_target", default=None)


class ConnectGate:
    """The connect gate, mixed into an event loop class: TCP connects are rate-limited and
    accounted per target."""

    limiter: ConnectRateLimiter | None = None

    async def create_connection(self, *args: Any, **kwargs: Any) -> Any:
        paid = current_target.get()
        if paid is not None and paid.tokens > 0:
            paid.tokens -= 1
        elif self.limiter is not None:
            self.limiter.reserve(1)  # debt: later targets wait for it, this connect does not
        stats = paid.stats if paid is not None else None
        if stats is not None:
            stats.attempts += 1
        try:
            transport, protocol = await super().create_connection(*args, **kwargs)  # type: ignore[misc]
        except OSError as exc:
            if stats is not None and exc.errno is not None:
                stats.errnos.append(exc.errno)
            raise
        if stats is not None:
            stats.opened += 1
        return transport, protocol


class GatedEventLoop(ConnectGate, asyncio.SelectorEventLoop):
    """The standard library's selector loop, gated."""


@functools.cache  # one class per process (every Dask chunk and worker asks for it)
def gated_loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """The loop class a scan runs on: gated uvloop when installed (libuv does the socket work in C:
    a scan spends much of its time in the event loop), else the gated selector loop."""
    try:
        import uvloop
    except ImportError:
        return GatedEventLoop
    return type("GatedUvloop", (ConnectGate, uvloop.Loop), {"__doc__": "uvloop's loop, gated."})
