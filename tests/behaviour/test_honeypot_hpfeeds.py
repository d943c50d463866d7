"""hpfeeds publishing: every session record reaches a real hpfeeds broker (the hpfeeds package's
own, on loopback) on the configured channel, as the same JSON line the log gets."""

from __future__ import annotations

import asyncio
import json
import smtplib
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from relaycheck.honeypot.publish import HpfeedsTarget
from relaycheck.testing.loopthread import LoopThread

from .honeypot_support import HoneypotThread, make_settings

pytest.importorskip("hpfeeds", reason="the 'hpfeeds' extra is not installed")

CHANNEL = "relaycheck.honeypot"


class BrokerThread(LoopThread):
    """An hpfeeds broker and a subscriber to CHANNEL, on their own loop."""

    def __init__(self) -> None:
        super().__init__("hpfeeds-broker")
        self.port = 0
        self.received: list[tuple[str, str, bytes]] = []
        self._changed = threading.Condition()
        self._tasks: list[asyncio.Task[Any]] = []
        self._reader: Any = None

    async def setup(self) -> None:
        from hpfeeds.asyncio import ClientSession
        from hpfeeds.broker.auth.memory import Authenticator
        from hpfeeds.broker.server import Server

        auth = Authenticator(
            {
                "sensor": {"secret": "s3cret", "pubchans": [CHANNEL], "subchans": [], "owner": "lab"},
                "reader": {"secret": "r3ad", "pubchans": [], "subchans": [CHANNEL], "owner": "lab"},
            }
        )
        server = Server(auth=auth)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        server.add_endpoint_test(sock)
        self._tasks.append(asyncio.ensure_future(server.serve_forever()))
        await server.when_started
        self._reader = ClientSession("127.0.0.1", self.port, "reader", "r3ad")
        self._reader.subscribe(CHANNEL)
        await self._reader.when_connected
        self._tasks.append(asyncio.ensure_future(self._read()))

    async def _read(self) -> None:
        while True:
            message = await self._reader.read()
            with self._changed:
                self.received.append(message)
                self._changed.notify_all()

    async def teardown(self) -> None:
        if self._reader is not None:  # the subscriber's own reconnecting task ends too
            self._reader.closing = True
            if self._reader.protocol is not None:
                self._reader.protocol.transport.close()
            self._tasks.append(self._reader._ensure_connected)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def wait(self, count: int, timeout: float = 30) -> list[tuple[str, str, bytes]]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.received) < count:
                left = deadline - time.monotonic()
                assert left > 0, f"{len(self.received)} of {count} records published"
                self._changed.wait(left)
            return list(self.received)


def test_records_are_published_to_the_broker(tmp_path: Path) -> None:
    with BrokerThread() as broker:
        target = HpfeedsTarget("127.0.0.1", broker.port, "sensor", "s3cret", CHANNEL)
        settings = make_settings(tmp_path, hpfeeds=target, tags={"site": "lab"})
        with HoneypotThread(settings) as honeypot:
            assert honeypot.running is not None and honeypot.running.publisher is not None
            assert honeypot.running.publisher.connected
            with smtplib.SMTP("127.0.0.1", honeypot.port, local_hostname="nmap.scanme.org", timeout=10) as client:
                client.ehlo("nmap.scanme.org")
                client.mail("antispam@nmap.scanme.org")
                client.rcpt("relaytest@nmap.scanme.org")
            [record] = honeypot.wait_records(1)
            [(ident, channel, payload)] = broker.wait(1)
    assert (ident, channel) == ("sensor", CHANNEL)
    published = json.loads(payload)
    assert published["session"] == record.session and published["site"] == "lab"
    assert (published["classification"], published["tool"]) == ("scanner", "nmap")
    assert payload == (tmp_path / "sessions.jsonl").read_bytes()


def test_an_unreachable_broker_does_not_stop_the_honeypot(tmp_path: Path) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]  # bound, never listening: connections are refused
    target = HpfeedsTarget("127.0.0.1", port, "sensor", "x", CHANNEL)
    settings = make_settings(tmp_path, hpfeeds=target, hpfeeds_wait=0.2)
    try:
        with HoneypotThread(settings) as honeypot:
            with smtplib.SMTP("127.0.0.1", honeypot.port, timeout=10) as client:
                client.noop()
            honeypot.wait_records(1)
    finally:
        closed.close()
    assert len((tmp_path / "sessions.jsonl").read_bytes().splitlines()) == 1
