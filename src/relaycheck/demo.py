"""``relaycheck demo``: real verdicts against local aiosmtpd servers, no network needed.

Each demo server is a ``testing.servers`` behaviour on a loopback port; the demo checks them
with the normal engine and says whether every verdict came out as its behaviour implies.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from relaycheck.model import VerdictKind
from relaycheck.testing.servers import ServerThread

DEMO_LOCAL_DOMAIN = "relay.test"
DEMO_OUTSIDE = ("relaytest@outside-a.test", "relaytest@outside-b.test")


@dataclass(frozen=True)
class DemoServer:
    behaviour: str
    expected: VerdictKind
    address: str


DEMO_BEHAVIOURS: tuple[tuple[str, VerdictKind], ...] = (
    ("open", VerdictKind.OPEN),
    ("closed", VerdictKind.CLOSED),
    ("percent-only", VerdictKind.OPEN),
    ("greylisting", VerdictKind.INCONCLUSIVE),
    ("relay-denied-4xx", VerdictKind.CLOSED),
)


@contextmanager
def demo_servers() -> Iterator[list[DemoServer]]:
    with ExitStack() as stack:
        servers = []
        for behaviour, expected in DEMO_BEHAVIOURS:
            thread = stack.enter_context(ServerThread(behaviour))
            servers.append(DemoServer(behaviour, expected, thread.address))
        yield servers
