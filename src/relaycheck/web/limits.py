"""Abuse controls kept in memory: requests per minute per client, client identity behind a proxy,
the request-body cap, open event streams per client.

Everything here is per process: run one ``relaycheck serve`` process per database (docs/web.md).
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from starlette.types import Message


def is_trusted(address: str, trusted: Iterable[str]) -> bool:
    """Whether ``address`` is one of the operator's reverse proxies."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(t, strict=False) for t in trusted)


def client_key(peer: str | None, forwarded_for: str | None, trusted: Iterable[str]) -> str:
    """The address a client is counted under.

    ``X-Forwarded-For`` is believed only when the direct peer is a trusted proxy; then the
    rightmost entry that is not itself a trusted proxy is the client (entries further left are
    whatever the client chose to send). IPv6 clients are counted per /64, the usual size of
    one customer's network.
    """
    address = peer or "unknown"
    if forwarded_for and is_trusted(address, trusted):
        for hop in reversed([h.strip() for h in forwarded_for.split(",") if h.strip()]):
            address = hop
            if not is_trusted(hop, trusted):
                break
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:100]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{ip}/64", strict=False))
    return str(ip)


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """A token bucket per client: ``per_minute`` requests, refilled continuously."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic, max_clients: int = 100_000):
        self.capacity = float(max(1, per_minute))
        self.rate = self.capacity / 60.0
        self.clock = clock
        self.max_clients = max_clients
        self._buckets: dict[str, _Bucket] = {}

    def take(self, key: str) -> float:
        """Spend one request for ``key``: 0 when allowed, else seconds until the next one is."""
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_clients:
                self._prune(now)
            bucket = self._buckets[key] = _Bucket(self.capacity, now)
        bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate

    def _prune(self, now: float) -> None:
        full = [k for k, b in self._buckets.items() if b.tokens + (now - b.updated) * self.rate >= self.capacity]
        for key in full:
            del self._buckets[key]
        if len(self._buckets) >= self.max_clients:  # under attack from many addresses: forget the oldest
            for key in sorted(self._buckets, key=lambda k: self._buckets[k].updated)[: self.max_clients // 10]:
                del self._buckets[key]


def retry_after(seconds: float) -> str:
    """A ``Retry-After`` header value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))


class BodyTooLarge(Exception):
    """A request body went over the cap (raised by ``read_capped``)."""


async def read_capped(receive: Callable[[], Awaitable[Message]], cap: int) -> tuple[bytes, bool]:
    """Read a whole request body from ASGI ``receive``, at most ``cap`` bytes.

    Returns (body, disconnected). Raises ``BodyTooLarge`` as soon as the bytes received pass
    ``cap``, whether the client announced a length or sends chunks: nothing beyond the cap is
    ever kept in memory.
    """
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks), True
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > cap:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), False


def declared_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    """The Content-Length a request announces; None when absent (chunked) or unreadable."""
    for name, value in headers:
        if name.lower() == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isascii() and text.isdigit() else None
    return None


@dataclass
class StreamSlots:
    """Open event streams, at most ``per_client`` per client and ``total`` in all.

    ``take`` and ``give_back`` are called from the event loop only (no await between the test
    and the count), so the caps hold under any number of simultaneous requests.
    """

    total: int
    per_client: int
    _open: dict[str, int] = field(default_factory=dict)
    _count: int = 0

    def take(self, client: str) -> str | None:
        """Reserve a slot: None when taken, else which cap was hit ("client" or "total")."""
        if self._open.get(client, 0) >= self.per_client:
            return "client"
        if self._count >= self.total:
            return "total"
        self._open[client] = self._open.get(client, 0) + 1
        self._count += 1
        return None

    def give_back(self, client: str) -> None:
        left = self._open.get(client, 0) - 1
        if left > 0:
            self._open[client] = left
        else:
            self._open.pop(client, None)
        self._count = max(0, self._count - 1)

    @property
    def count(self) -> int:
        return self._count
