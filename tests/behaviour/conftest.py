"""Behaviour tests: relaycheck against aiosmtpd servers with known relay behaviours on loopback."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
import trustme

from relaycheck.api import CheckOptions, check
from relaycheck.engine import EngineOptions
from relaycheck.hygiene import HygieneOptions
from relaycheck.model import Report, TargetReport
from relaycheck.testing.servers import BEHAVIOURS, Behaviour, ServerThread

OUTSIDE = ("relaytest@outside-a.test", "relaytest@outside-b.test")
# No PTR/DNSBL lookups unless a test brings its own loopback DNS server: the system resolver
# is outside the fence.
NO_DNS = HygieneOptions(ptr=False, dnsbl=False)
BASE = EngineOptions(
    ext_recipients=OUTSIDE, local_domain="relay.test", helo="client.relaycheck.test", command_timeout=5, hygiene=NO_DNS
)


@pytest.fixture(scope="session")
def server_tls() -> ssl.SSLContext:
    ca = trustme.CA()
    cert = ca.issue_cert("mx.relay.test", "127.0.0.1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    return context


ServerFactory = Callable[..., ServerThread]


@pytest.fixture
def smtp_server(server_tls: ssl.SSLContext) -> Iterator[ServerFactory]:
    """Start behaviour servers on loopback port 0; all are stopped at the end of the test."""
    started: list[ServerThread] = []

    def start(
        behaviour: str | Behaviour,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: bool = False,
        implicit_tls: bool = False,
        **changes: Any,
    ) -> ServerThread:
        """A server; it offers STARTTLS when ``tls`` is set or its behaviour requires TLS, and
        speaks TLS from the first byte (port 465 style) with ``implicit_tls``."""
        base = BEHAVIOURS[behaviour] if isinstance(behaviour, str) else behaviour
        chosen = replace(base, **changes) if changes else base
        context = server_tls if tls or implicit_tls or chosen.require_starttls else None
        thread = ServerThread(chosen, host=host, port=port, tls_context=context, implicit_tls=implicit_tls)
        started.append(thread.start())
        return thread

    yield start
    for thread in started:
        thread.stop()


def run_check(targets: str | list[str], **engine: Any) -> Report:
    options = CheckOptions(engine=replace(BASE, **engine))
    return asyncio.run(check(targets, options))


def check_one(target: str, **engine: Any) -> TargetReport:
    report = run_check(target, **engine)
    assert len(report.targets) == 1, report
    return report.targets[0]
