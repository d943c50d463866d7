"""Running the honeypot on loopback for tests: its own event loop in a thread, records observed."""

from __future__ import annotations

import json
import os
import select
import subprocess
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from relaycheck.honeypot.certificate import self_signed, server_context
from relaycheck.honeypot.model import SessionRecord
from relaycheck.honeypot.personas import PERSONAS
from relaycheck.honeypot.runtime import Listener, Running, Settings, start, stop
from relaycheck.honeypot.server import HoneypotConfig, Limits, bind
from relaycheck.testing.loopthread import LoopThread

HOSTNAME = "mail.honeypot.test"
NO_DELAY = Limits(delay=(0.0, 0.0))


class HoneypotThread(LoopThread):
    """A honeypot on 127.0.0.1 (a plain listener with STARTTLS, and an implicit-TLS one)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__("honeypot")
        self.settings = settings
        self.running: Running | None = None
        self.records: list[SessionRecord] = []
        self._changed = threading.Condition()

    def _on_record(self, record: SessionRecord) -> None:
        with self._changed:
            self.records.append(record)
            self._changed.notify_all()

    async def setup(self) -> None:
        cert, key = self_signed(self.settings.data_dir, self.settings.config.hostname)
        listeners = [Listener(bind("127.0.0.1", 0), False), Listener(bind("127.0.0.1", 0), True)]
        self.running = await start(self.settings, listeners, server_context(cert, key), on_record=self._on_record)

    async def teardown(self) -> None:
        if self.running is not None:
            await stop(self.running)

    @property
    def port(self) -> int:
        assert self.running is not None
        return next(port for _, port, tls in self.running.addresses if not tls)

    @property
    def tls_port(self) -> int:
        assert self.running is not None
        return next(port for _, port, tls in self.running.addresses if tls)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def wait_records(self, count: int, timeout: float = 30.0) -> list[SessionRecord]:
        """Block until ``count`` sessions have been recorded (or fail after ``timeout``)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.records) < count:
                left = deadline - time.monotonic()
                assert left > 0, f"only {len(self.records)} of {count} session records after {timeout} s"
                self._changed.wait(left)
            return list(self.records)


def make_settings(data_dir: Path, persona: str = "postfix", **changes: Any) -> Settings:
    limits = changes.pop("limits", NO_DELAY)
    config = HoneypotConfig(
        persona=PERSONAS[persona],
        hostname=HOSTNAME,
        sensor="test-sensor",
        limits=limits,
        auth_accept_any=changes.pop("auth_accept_any", False),
        tags=changes.pop("tags", {}),
    )
    return replace(Settings(data_dir=data_dir, config=config), **changes)


def jsonl(data_dir: Path) -> list[dict[str, Any]]:
    lines = (data_dir / "sessions.jsonl").read_bytes().splitlines()
    return [json.loads(line) for line in lines]


class Child:
    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.stderr = b""

    def read_until(self, marker: bytes, timeout: float) -> bytes:
        """Read the child's stderr until ``marker`` appears (or fail at the deadline)."""
        assert self.proc.stderr is not None
        deadline = time.monotonic() + timeout
        poller = select.poll()
        poller.register(self.proc.stderr.fileno(), select.POLLIN)
        while marker not in self.stderr:
            left = deadline - time.monotonic()
            assert left > 0, f"no {marker!r} from the honeypot: {self.stderr.decode(errors='replace')}"
            if poller.poll(left * 1000):
                chunk = os.read(self.proc.stderr.fileno(), 65536)
                assert chunk, f"honeypot ended: {self.stderr.decode(errors='replace')}"
                self.stderr += chunk
        return self.stderr

    def peak_rss(self) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        line = next(x for x in status.splitlines() if x.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024
