"""--deliver-probes: only relay tests reach the smarthost (a loopback aiosmtpd sink), at most the
daily cap, and every attempt is logged."""

from __future__ import annotations

import asyncio
import json
import smtplib
import threading
from pathlib import Path

from aiosmtpd.smtp import SMTP, Envelope, Session

from relaycheck.honeypot.deliver import Smarthost
from relaycheck.testing.loopthread import LoopThread

from .honeypot_support import HoneypotThread, make_settings


class SinkThread(LoopThread):
    """An aiosmtpd server on loopback that keeps every message it gets."""

    def __init__(self) -> None:
        super().__init__("smarthost")
        self.envelopes: list[Envelope] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._lock = threading.Lock()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self._lock:
            self.envelopes.append(envelope)
        return "250 2.0.0 Ok: queued"

    async def setup(self) -> None:
        self._server = await self._loop.create_server(lambda: SMTP(self, hostname="smarthost.test"), "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def teardown(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


def relay_test(number: int) -> str:
    return f"Subject: relay check 127.0.0.1 #{number}\r\nMessage-ID: <t{number}@bot.example>\r\n\r\nok {number}\r\n"


def send(port: int, sender: str, recipients: list[str], message: str) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.sendmail(sender, recipients, message)


def test_only_relay_tests_are_delivered_within_the_daily_cap(tmp_path: Path) -> None:
    with SinkThread() as sink:
        settings = make_settings(tmp_path, smarthost=Smarthost("127.0.0.1", sink.port), max_probe_deliveries=2)
        with HoneypotThread(settings) as honeypot:
            send(honeypot.port, "bot@spam.example", ["drop1@harvest.example"], relay_test(1))
            spam = "Subject: pills\r\n\r\ncheap pills https://pills.spam.example/\r\n"
            send(honeypot.port, "bot@spam.example", [f"v{n}@victims.example" for n in range(30)], spam)
            send(honeypot.port, "bot@spam.example", ["drop2@harvest.example"], relay_test(2))
            send(honeypot.port, "bot@spam.example", ["drop3@harvest.example"], relay_test(3))
            records = honeypot.wait_records(4)
        delivered = [(e.mail_from, e.rcpt_tos, e.original_content) for e in sink.envelopes]

    assert [r.classification for r in records] == ["relay-test", "spam-run", "relay-test", "relay-test"]
    messages = [m for r in records if (m := r.transactions[0].message) is not None]
    assert [m.delivered for m in messages] == [True, False, True, False]
    assert messages[3].delivery == "not delivered: daily cap of 2 reached"
    assert messages[1].delivery is None  # spam is never even offered
    # Exactly the two test messages, byte for byte, to the spammer's own mailboxes and nowhere else.
    stored = [(tmp_path / "messages" / m.sha256[:2] / f"{m.sha256}.eml").read_bytes() for m in messages]
    assert delivered == [
        ("bot@spam.example", ["drop1@harvest.example"], stored[0]),
        ("bot@spam.example", ["drop2@harvest.example"], stored[2]),
    ]
    log = [json.loads(line) for line in (tmp_path / "deliveries.jsonl").read_text().splitlines()]
    assert [entry["result"] for entry in log] == ["delivered", "delivered", "not delivered: daily cap of 2 reached"]
    assert json.loads((tmp_path / "deliveries.json").read_text())["count"] == 2


def test_the_daily_cap_survives_a_restart(tmp_path: Path) -> None:
    with SinkThread() as sink:
        settings = make_settings(tmp_path, smarthost=Smarthost("127.0.0.1", sink.port), max_probe_deliveries=1)
        with HoneypotThread(settings) as honeypot:
            send(honeypot.port, "bot@spam.example", ["drop@harvest.example"], relay_test(1))
            honeypot.wait_records(1)
        with HoneypotThread(settings) as honeypot:
            send(honeypot.port, "bot@spam.example", ["drop@harvest.example"], relay_test(2))
            record = honeypot.wait_records(1)[0]
        assert len(sink.envelopes) == 1
    assert record.transactions[0].message is not None
    assert record.transactions[0].message.delivered is False
