"""A population of SMTP servers on many loopback addresses, for scan tests and the benchmark.

Linux routes all of 127.0.0.0/8 to ``lo``, so ``127.1.0.1``, ``127.1.0.2``, … are distinct
hosts to a scanner (distinct /24s too). Every member listens on the same port of its own
address; all of them run on ONE asyncio loop in one thread (a thousand ``ServerThread``s would
be a thousand threads). SMTP members are the aiosmtpd behaviour servers of
``relaycheck.testing.servers`` (``open``, ``closed``, …: Postfix's wording), or with
``server="light"`` the ``tests.support.lightsmtp`` servers that say the same bytes for a
fraction of the CPU (aiosmtpd costs milliseconds per connection: a benchmark would measure it
more than the scanner). Three more kinds make the status taxonomy testable:

- ``refused``: nothing listens (the kernel answers RST: status ``refused``);
- ``silent``: accepts and never greets (status ``timeout``);
- ``not-smtp``: greets with an SSH banner (status ``not-smtp``).

Run it in its own process for benchmarks (``python -m tests.support.population``), so the
scanner's CPU and memory are measured alone.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import ipaddress
import json
import resource
import sys
from collections.abc import Mapping
from typing import Any

from relaycheck.testing.loopthread import LoopThread
from relaycheck.testing.servers import BEHAVIOURS, BehaviourHandler, BehaviourSMTP
from tests.support.lightsmtp import LightHost, unsupported

SPECIAL = ("refused", "silent", "not-smtp")
SERVERS = ("aiosmtpd", "light")


def plan(count: int, mix: Mapping[str, int], base: str = "127.1.0.1") -> dict[str, str]:
    """``count`` loopback addresses from ``base`` (skipping .0 and .255), behaviours dealt out in
    proportion to ``mix`` (weights), interleaved so every /24 gets a share. Deterministic."""
    start = int(ipaddress.IPv4Address(base))
    addresses: list[str] = []
    value = start
    while len(addresses) < count:
        if value & 0xFF not in (0, 255):
            addresses.append(str(ipaddress.IPv4Address(value)))
        value += 1
    weights = [(name, w) for name, w in mix.items() if w > 0]
    total = sum(w for _, w in weights)
    result: dict[str, str] = {}
    credit = {name: 0.0 for name, _ in weights}
    for address in addresses:  # smooth weighted round robin
        for name, w in weights:
            credit[name] += w
        chosen = max(credit, key=lambda n: credit[n])
        credit[chosen] -= total
        result[address] = chosen
    return result


class _Stats:
    def __init__(self) -> None:
        self.accepted = 0
        self.active = 0
        self.peak = 0

    def opened(self) -> None:
        self.accepted += 1
        self.active += 1
        self.peak = max(self.peak, self.active)

    def closed(self) -> None:
        self.active -= 1


class _CountedSMTP(BehaviourSMTP):
    stats: _Stats

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.stats.opened()
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.stats.closed()
        super().connection_lost(exc)


class _Silent(asyncio.Protocol):
    def __init__(self, stats: _Stats, greeting: bytes | None) -> None:
        self.stats = stats
        self.greeting = greeting

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.stats.opened()
        if self.greeting is not None:
            assert isinstance(transport, asyncio.Transport)
            transport.write(self.greeting)

    def connection_lost(self, exc: Exception | None) -> None:
        self.stats.closed()


class Population(LoopThread):
    """``with Population({"127.1.0.1": "open", ...}) as pop:`` then scan ``pop.port``."""

    def __init__(self, members: Mapping[str, str], port: int = 0, server: str = "aiosmtpd") -> None:
        """``server``: "aiosmtpd" (``BehaviourSMTP``) or "light" (``LightSMTP``, same replies, far
        less CPU per connection; not every behaviour)."""
        unknown = {b for b in members.values() if b not in BEHAVIOURS and b not in SPECIAL}
        if unknown:
            raise ValueError(f"unknown behaviours: {sorted(unknown)}")
        if server not in SERVERS:
            raise ValueError(f"unknown server {server!r}: one of {', '.join(SERVERS)}")
        if server == "light":
            refused = {b: why for b in set(members.values()) if b in BEHAVIOURS and (why := unsupported(BEHAVIOURS[b]))}
            if refused:
                reasons = "; ".join(f"{b} {why}" for b, why in sorted(refused.items()))
                raise ValueError(f"behaviours the light server does not support: {reasons}")
        super().__init__("smtp-population")
        self.members = dict(members)
        self.port = port
        self.server = server
        self.stats = _Stats()
        self.handlers: dict[str, BehaviourHandler] = {}
        self._servers: list[asyncio.Server] = []

    def address(self, ip: str) -> str:
        return f"{ip}:{self.port}"

    def _factory(self, ip: str, behaviour: str) -> Any:
        if behaviour in ("silent", "not-smtp"):
            greeting = b"SSH-2.0-OpenSSH_9.6p1 Debian-3\r\n" if behaviour == "not-smtp" else None
            return lambda: _Silent(self.stats, greeting)
        handler = self.handlers[ip] = BehaviourHandler(BEHAVIOURS[behaviour], literal=f"[{ip}]")
        if self.server == "light":
            return LightHost(BEHAVIOURS[behaviour], handler, self.stats).protocol

        def make() -> _CountedSMTP:
            server = _CountedSMTP(handler, BEHAVIOURS[behaviour], loop=self._loop)
            server.stats = self.stats
            return server

        return make

    async def _bind_all(self, port: int) -> int:
        listening = [(ip, b) for ip, b in self.members.items() if b != "refused"]
        for ip, behaviour in listening:
            server = await self._loop.create_server(self._factory(ip, behaviour), ip, port, backlog=1024)
            self._servers.append(server)
            port = port or server.sockets[0].getsockname()[1]
        return port

    async def _close_all(self) -> None:
        for server in self._servers:
            server.close()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()

    async def setup(self) -> None:
        for _attempt in range(10):  # port 0 on the first address, then that port on the others
            try:
                self.port = await self._bind_all(self.port)
                return
            except OSError as exc:
                await self._close_all()
                if exc.errno != errno.EADDRINUSE or self.port:
                    raise
        raise OSError("no common free port for the population")

    async def teardown(self) -> None:
        await self._close_all()


def main(argv: list[str] | None = None) -> int:
    """Serve a planned population until stdin closes; print ``{"port": N}`` when ready and the
    connection counts at the end (one JSON line each, on stdout)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--mix", default="open=5,closed=95", help="behaviour=weight,...")
    parser.add_argument("--base", default="127.1.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--server", choices=SERVERS, default="aiosmtpd",
                        help="aiosmtpd: the behaviour servers; light: the same replies, much less CPU")
    args = parser.parse_args(argv)
    mix = {k: int(v) for k, v in (part.split("=") for part in args.mix.split(","))}
    with Population(plan(args.count, mix, args.base), port=args.port, server=args.server) as population:
        for handler in population.handlers.values():
            handler.keep_commands = False  # serving until told to stop: no ever-growing command log
        print(json.dumps({"port": population.port}), flush=True)
        sys.stdin.read()
        stats = population.stats
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"accepted": stats.accepted, "peak_connections": stats.peak,
                      "cpu_s": round(usage.ru_utime + usage.ru_stime, 3)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
