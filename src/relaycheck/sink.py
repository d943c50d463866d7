"""relaycheck's receiving sink: an aiosmtpd server that takes mail only for the confirm domain.

In delivery mode (``--confirm ADDRESS --sink HOST:PORT``) every accepted relay probe sends one
test message carrying a token; the sink records which tokens arrived and the path they took
(their ``Received:`` headers). It accepts recipients at its own domain only, so it can never
be used as a relay itself, and it never forwards anything.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes
from email.policy import compat32
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # aiosmtpd is imported when a sink starts: the check and scan paths never need it
    from aiosmtpd.smtp import SMTP, Envelope, Session

TOKEN_HEADER = "X-Relaycheck-Token"
TOKEN_PATTERN = re.compile(r"\brc-[0-9a-f]{24}\b")
MAX_MESSAGE = 256 * 1024  # test messages are tiny; refuse anything larger


@dataclass(frozen=True)
class Arrival:
    """One test message that reached the operator's mailbox."""

    token: str
    received: tuple[str, ...]  # the Received: headers, newest first: the path it took
    peer: str  # who delivered it to us (sink) or "imap"
    mail_from: str
    rcpt_tos: tuple[str, ...]
    subject: str


def parse_arrival(raw: bytes, *, peer: str, mail_from: str, rcpt_tos: tuple[str, ...]) -> Arrival | None:
    """The token and path of a received message, or None when it is not one of ours."""
    message = message_from_bytes(raw, policy=compat32)
    header = str(message.get(TOKEN_HEADER, "")).strip()
    match = TOKEN_PATTERN.search(header) or TOKEN_PATTERN.search(str(message.get("Subject", "")))
    if match is None:
        return None
    received = tuple(" ".join(str(h).split()) for h in message.get_all("Received", []))
    return Arrival(match.group(0), received, peer, mail_from, rcpt_tos, str(message.get("Subject", "")))


@dataclass
class SinkHandler:
    domain: str
    arrivals: dict[str, Arrival] = field(default_factory=dict)
    on_arrival: Callable[[Arrival], None] | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if address.rpartition("@")[2].lower().rstrip(".") != self.domain:
            return "550 5.7.1 relaycheck sink: relay access denied"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        peer = str(session.peer[0]) if session.peer else "?"
        arrival = parse_arrival(
            raw, peer=peer, mail_from=str(envelope.mail_from), rcpt_tos=tuple(map(str, envelope.rcpt_tos))
        )
        if arrival is None:
            return "250 2.0.0 Ok: not a relaycheck test message, discarded"
        self.arrivals.setdefault(arrival.token, arrival)
        self._changed.set()
        if self.on_arrival is not None:
            self.on_arrival(arrival)
        return "250 2.0.0 Ok: relaycheck token received"

    async def wait_for(self, tokens: set[str], timeout: float) -> dict[str, Arrival]:
        """Wait until every token arrived or ``timeout`` passes; return those that arrived."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while not tokens <= self.arrivals.keys():
            left = end - loop.time()
            if left <= 0:
                break
            self._changed.clear()
            try:
                async with asyncio.timeout(left):
                    await self._changed.wait()
            except TimeoutError:
                break
        return {t: a for t, a in self.arrivals.items() if t in tokens}


class Sink:
    """The sink server on the running event loop (``async with Sink(...) as sink``)."""

    via = "sink"

    def __init__(self, domain: str, host: str = "127.0.0.1", port: int = 0, hostname: str = "relaycheck-sink") -> None:
        self.handler = SinkHandler(domain.lower().rstrip("."))
        self.host = host
        self.port = port
        self.hostname = hostname
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Sink:
        from aiosmtpd.smtp import SMTP

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: SMTP(self.handler, hostname=self.hostname, data_size_limit=MAX_MESSAGE, loop=loop),
            self.host,
            self.port,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def check_ready(self) -> None:
        """The sink is listening once the context is entered: nothing more to check."""

    async def wait_for(self, tokens: set[str], timeout: float) -> dict[str, Arrival]:
        return await self.handler.wait_for(tokens, timeout)
