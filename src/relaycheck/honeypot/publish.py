"""Optional hpfeeds publishing (the ``hpfeeds`` extra): each session record, as the same JSON
line ``sessions.jsonl`` gets, published to a honeynet broker's channel.

The hpfeeds client reconnects by itself; a record finished while the broker is unreachable is
not published (it is in ``sessions.jsonl`` all the same). The secret comes from the environment
(``RELAYCHECK_HPFEEDS_SECRET``), never from the command line, where other users could read it.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

from relaycheck.honeypot.model import SessionRecord
from relaycheck.honeypot.record import record_line

SECRET_VARIABLE = "RELAYCHECK_HPFEEDS_SECRET"
DEFAULT_CHANNEL = "relaycheck.honeypot"


@dataclass(frozen=True)
class HpfeedsTarget:
    host: str
    port: int
    ident: str
    secret: str
    channel: str = DEFAULT_CHANNEL


class HpfeedsPublisher:
    """Publishes records on the running event loop."""

    def __init__(self, target: HpfeedsTarget, tags: dict[str, str]) -> None:
        from hpfeeds.asyncio import ClientSession

        self.target = target
        self.tags = tags
        self.published = 0
        self._session: Any = ClientSession(target.host, target.port, target.ident, target.secret)

    @property
    def connected(self) -> bool:
        return self._session.protocol is not None

    async def wait_connected(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._session.when_connected)
        return self.connected

    def publish(self, record: SessionRecord) -> None:
        if self.connected:
            self._session.publish(self.target.channel, record_line(record, self.tags))
            self.published += 1

    async def close(self) -> None:
        self._session.closing = True
        if self._session.protocol is not None:
            self._session.protocol.transport.close()
        reconnecting = self._session._ensure_connected  # its retry loop, when never connected
        reconnecting.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            async with asyncio.timeout(5):
                await reconnecting
