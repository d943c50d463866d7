"""Abuse controls kept in memory: requests per minute per client, client identity behind a proxy.

Everything here is per process: run one ``relaycheck serve`` process per database (docs/web.md).
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass


def client_key(peer: str | None, forwarded_for: str | None, trusted: Iterable[str]) -> str:
    """The address a client is counted under.

    ``X-Forwarded-For`` is believed only when the direct peer is a trusted proxy; then the
    rightmost entry that is not itself a trusted proxy is the client (entries further left are
    whatever the client chose to send). IPv6 clients are counted per /64, the usual size of
    one customer's network.
    """
    trusted_nets = [ipaddress.ip_network(t, strict=False) for t in trusted]

    def is_trusted(address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in trusted_nets)

    address = peer or "unknown"
    if forwarded_for and is_trusted(address):
        for hop in reversed([h.strip() for h in forwarded_for.split(",") if h.strip()]):
            address = hop
            if not is_trusted(hop):
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
