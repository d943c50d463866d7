"""Opt-in delivery of relay tests (``--deliver-probes``): the only mail the honeypot ever sends.

Delivering a spammer's relay test makes its tools trust the relay, so that the campaign comes
next and is caught. Only messages classified as relay tests are offered, only to their outside
recipients, through the operator's smarthost, at most ``daily_cap`` per UTC day (the count is
kept in ``DATA_DIR/deliveries.json`` so a restart does not reset it), and every attempt is logged
to ``DATA_DIR/deliveries.jsonl``.
"""

from __future__ import annotations

import json
import os
import smtplib
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

COUNTER = "deliveries.json"
LOG = "deliveries.jsonl"
TIMEOUT = 30.0


@dataclass(frozen=True)
class Smarthost:
    host: str
    port: int


class ProbeDelivery:
    def __init__(self, directory: Path, smarthost: Smarthost, daily_cap: int, helo: str) -> None:
        self.directory = directory
        self.smarthost = smarthost
        self.daily_cap = daily_cap
        self.helo = helo
        self._lock = threading.Lock()

    def _today(self) -> str:
        return datetime.now(UTC).date().isoformat()

    def _count(self) -> tuple[str, int]:
        try:
            with open(self.directory / COUNTER, "rb") as file:
                data = json.loads(file.read(4096))
            return str(data["date"]), int(data["count"])
        except (OSError, ValueError, KeyError, TypeError):
            return self._today(), 0

    def _reserve(self) -> bool:
        """Take one delivery from today's allowance; False when it is spent."""
        with self._lock:
            day, count = self._count()
            today = self._today()
            if day != today:
                day, count = today, 0
            if count >= self.daily_cap:
                return False
            temporary = self.directory / (COUNTER + ".tmp")
            with open(temporary, "w", encoding="utf-8") as file:
                json.dump({"date": day, "count": count + 1}, file)
            os.replace(temporary, self.directory / COUNTER)
            return True

    def _log(self, entry: dict[str, object]) -> None:
        line = json.dumps(entry, separators=(",", ":")).encode() + b"\n"
        fd = os.open(self.directory / LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def deliver(self, *, session: str, mail_from: str, recipients: list[str], raw: bytes) -> tuple[bool, str]:
        """Send one relay test on (blocking: run it in a thread). Returns (delivered, what happened)."""
        entry: dict[str, object] = {
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
            "session": session,
            "mail_from": mail_from,
            "recipients": recipients,
            "size": len(raw),
            "smarthost": f"{self.smarthost.host}:{self.smarthost.port}",
        }
        if not self._reserve():
            entry["result"] = outcome = f"not delivered: daily cap of {self.daily_cap} reached"
            self._log(entry)
            return False, outcome
        try:
            with smtplib.SMTP(self.smarthost.host, self.smarthost.port, local_hostname=self.helo, timeout=TIMEOUT) as c:
                refused = c.sendmail(mail_from, recipients, raw)
            delivered = len(refused) < len(recipients)
            outcome = "delivered" if not refused else f"delivered, refused for {sorted(refused)}"
        except (OSError, smtplib.SMTPException) as exc:
            delivered, outcome = False, f"not delivered: {type(exc).__name__}: {exc}"[:300]
        entry["result"] = outcome
        self._log(entry)
        return delivered, outcome
