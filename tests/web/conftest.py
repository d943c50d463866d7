"""Fixtures for the web tests: the app on a live loopback uvicorn, SMTP and DNS servers, Chromium.

Every app gets its own SQLite file and its own loopback DNS server as the resolver, so no test
asks the machine's resolver anything (the suite's network fence would stop it anyway).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from relaycheck.testing.dnsserver import DnsServerThread
from relaycheck.testing.servers import BEHAVIOURS, Behaviour, ServerThread
from relaycheck.web import Settings, create_app
from relaycheck.web.settings import web_engine_options
from tests.support.live import LiveServer

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
ENGINE = replace(
    web_engine_options(),
    ext_recipients=("relaytest@outside-a.test", "relaytest@outside-b.test"),
    local_domain="relay.test",
    helo="client.relaycheck.test",
    connect_timeout=2.0,
    greeting_timeout=5.0,
    command_timeout=5.0,
)


@dataclass
class Web:
    """One running app: its URL, a client, the app's service (for white-box assertions)."""

    live: LiveServer
    settings: Settings
    client: httpx.Client

    @property
    def url(self) -> str:
        return self.live.url

    @property
    def service(self) -> Any:
        return self.live.app.state.service

    def create(self, target: str, **body: Any) -> httpx.Response:
        return self.client.post("/api/v1/checks", json={"target": target, **body})

    def wait(self, check_id: str) -> dict[str, Any]:
        """Follow the check's event stream until it says done; return the check resource."""
        with self.client.stream("GET", f"/api/v1/checks/{check_id}/events", timeout=30) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            for line in stream.iter_lines():
                if line == "event: done":
                    break
        resource = self.client.get(f"/api/v1/checks/{check_id}").json()
        assert isinstance(resource, dict)
        return resource

    def run(self, target: str, **body: Any) -> dict[str, Any]:
        response = self.create(target, **body)
        assert response.status_code == 202, response.text
        return self.wait(response.json()["id"])


WebFactory = Callable[..., Web]
DnsFactory = Callable[[Mapping[tuple[str, str], Sequence[str]]], DnsServerThread]
SmtpFactory = Callable[..., ServerThread]


@pytest.fixture
def dns_server() -> Iterator[DnsFactory]:
    started: list[DnsServerThread] = []

    def start(records: Mapping[tuple[str, str], Sequence[str]]) -> DnsServerThread:
        server = DnsServerThread(records).__enter__()
        started.append(server)
        return server

    yield start
    for server in started:
        server.__exit__(None, None, None)


@pytest.fixture
def smtp() -> Iterator[SmtpFactory]:
    """aiosmtpd behaviour servers on loopback port 0, stopped at the end of the test."""
    started: list[ServerThread] = []

    def start(
        behaviour: str | Behaviour = "open",
        host: str = "127.0.0.1",
        port: int = 0,
        tls: ssl.SSLContext | None = None,
        **changes: Any,
    ) -> ServerThread:
        """A server; with ``tls`` it offers STARTTLS with that context."""
        base = BEHAVIOURS[behaviour] if isinstance(behaviour, str) else behaviour
        chosen = replace(base, **changes) if changes else base
        server = ServerThread(chosen, host=host, port=port, tls_context=tls)
        started.append(server.start())
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def web(tmp_path: Path, dns_server: DnsFactory) -> Iterator[WebFactory]:
    """Start the app on a live loopback server: ``web(allow_private=True, ports=(…))``.

    ``records`` (a keyword) feeds the app's own loopback DNS server (or ``dns`` is the server to
    use); ``local_address`` binds the client to another loopback address (another client).
    """
    running: list[Web] = []

    def start(
        records: Mapping[tuple[str, str], Sequence[str]] | None = None,
        local_address: str | None = None,
        dns: DnsServerThread | None = None,
        **changes: Any,
    ) -> Web:
        resolver = dns or dns_server(records or {("unused.test", "A"): ["127.0.0.1"]})
        fields: dict[str, Any] = {
            "db_url": str(tmp_path / f"web{len(running)}.db"),
            "resolver": resolver.address,
            "engine": ENGINE,
            "allow_private": True,
        }
        fields.update(changes)
        settings = Settings(**fields)
        live = LiveServer(create_app(settings)).start()
        transport = httpx.HTTPTransport(local_address=local_address) if local_address else None
        client = httpx.Client(base_url=live.url, timeout=20, transport=transport)
        started = Web(live, settings, client)
        running.append(started)
        return started

    yield start
    for started in running:
        started.client.close()
        started.live.stop()


def client_for(web: Web, local_address: str) -> httpx.Client:
    """Another client of the same app, from another loopback address."""
    return httpx.Client(
        base_url=web.url, timeout=20, transport=httpx.HTTPTransport(local_address=local_address)
    )


class SilentServer:
    """A TCP server that sends ``greeting`` (maybe nothing) and then never answers anything.

    A check of it stays running until the engine's timeouts fire: what the rate-limit and
    progress tests need.
    """

    def __init__(self, greeting: bytes = b"", host: str = "127.0.0.1", port: int = 0) -> None:
        self.greeting = greeting
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(16)
        self.port: int = self.sock.getsockname()[1]
        self.address = f"{host}:{self.port}"
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)
            if self.greeting:
                with contextlib.suppress(OSError):
                    conn.sendall(self.greeting)

    def hang_up(self) -> None:
        """Close every connection accepted so far (the client sees the server go away)."""
        for conn in self.accepted:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def __enter__(self) -> SilentServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self.sock.close()
        self._thread.join(timeout=5)
        for conn in self.accepted:
            conn.close()


def sse_events(text: str) -> list[tuple[str, Any]]:
    """Parse a finished event stream into (event, data) pairs."""
    events: list[tuple[str, Any]] = []
    for block in text.split("\n\n"):
        name, data = "message", None
        for line in block.splitlines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
        if data is not None:
            events.append((name, data))
    return events


# -- the browser ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Debian's Chromium driven by Playwright (browsers cannot be downloaded here).

    Missing /usr/bin/chromium skips the browser tests with one line, except under CI=true
    where it fails them: CI must run them.
    """
    if not os.path.exists(CHROMIUM):
        message = f"browser tests need {CHROMIUM} (Debian package 'chromium': apt-get install -y chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
