"""``relaycheck demo``: real verdicts against local aiosmtpd servers, no network needed.

Each demo server is a ``testing.servers`` behaviour on its own loopback address (127.0.0.2…),
with a host name, and a loopback DNS server (``testing.dnsserver``) answers the PTR, forward
and blocklist lookups, so the hygiene checks run for real too. The demo checks the servers with
the normal engine and says whether every verdict came out as its behaviour implies.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace

from relaycheck.model import VerdictKind
from relaycheck.testing.dnsserver import DnsServerThread
from relaycheck.testing.servers import BEHAVIOURS, ServerThread

DEMO_LOCAL_DOMAIN = "relay.test"
DEMO_OUTSIDE = ("relaytest@outside-a.test", "relaytest@outside-b.test")
DEMO_DNSBL_ZONE = "dnsbl.relaycheck.test"


@dataclass(frozen=True)
class DemoServer:
    behaviour: str
    expected: VerdictKind
    address: str
    hostname: str


@dataclass(frozen=True)
class DemoLab:
    servers: list[DemoServer]
    resolver: str  # IP:PORT of the demo DNS server


DEMO_BEHAVIOURS: tuple[tuple[str, VerdictKind], ...] = (
    ("open", VerdictKind.OPEN),
    ("closed", VerdictKind.CLOSED),
    ("percent-only", VerdictKind.OPEN),
    ("greylisting", VerdictKind.INCONCLUSIVE),
    ("relay-denied-4xx", VerdictKind.CLOSED),
)


def _start(behaviour: str, number: int) -> tuple[ServerThread, str]:
    """The server on 127.0.0.<number+2> when the machine routes it (Linux), else 127.0.0.1."""
    hostname = f"mx{number + 1}.{DEMO_LOCAL_DOMAIN}"
    base = BEHAVIOURS[behaviour]
    chosen = replace(base, hostname=hostname, local_domains=frozenset({DEMO_LOCAL_DOMAIN, hostname}))
    try:
        return ServerThread(chosen, host=f"127.0.0.{number + 2}").start(), hostname
    except OSError:
        return ServerThread(chosen, host="127.0.0.1").start(), hostname


def _records(servers: list[DemoServer]) -> dict[tuple[str, str], list[str]]:
    records: dict[tuple[str, str], list[str]] = {}
    for server in servers:
        ip = server.address.rsplit(":", 1)[0]
        reverse = ".".join(reversed(ip.split("."))) + ".in-addr.arpa"
        records[(reverse, "PTR")] = [server.hostname + "."]
        records[(server.hostname, "A")] = [ip]
        if server.expected is VerdictKind.OPEN and server.behaviour == "open":
            listed = ".".join(reversed(ip.split("."))) + "." + DEMO_DNSBL_ZONE
            records[(listed, "A")] = ["127.0.0.2"]
            records[(listed, "TXT")] = ['"Listed: open relay seen relaying spam (demo listing)"']
    return records


@contextmanager
def demo_lab() -> Iterator[DemoLab]:
    with ExitStack() as stack:
        servers = []
        for number, (behaviour, expected) in enumerate(DEMO_BEHAVIOURS):
            thread, hostname = _start(behaviour, number)
            stack.callback(thread.stop)
            servers.append(DemoServer(behaviour, expected, thread.address, hostname))
        dns = stack.enter_context(DnsServerThread(_records(servers)))
        yield DemoLab(servers, dns.address)
