"""The engine gives the same report on the standard library's event loop and on uvloop (which
scans run on, and which uvicorn picks for the web UI): STARTTLS, the battery over TLS, implicit
TLS, certificate facts. uvloop's TLS transport is not an ``asyncio.Transport``; this once broke
every STARTTLS check on it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace

import pytest
import uvloop

from relaycheck.api import CheckOptions, check
from relaycheck.model import TargetReport, Transport

from .conftest import BASE, ServerFactory

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


def check_on(loop: str, address: str, transport: Transport | None) -> TargetReport:
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        report = runner.run(check(address, CheckOptions(engine=BASE, transport=transport)))
    assert len(report.targets) == 1
    return report.targets[0]


def summary(target: TargetReport) -> tuple[object, ...]:
    tls = target.hygiene.tls if target.hygiene else None
    return (
        target.verdict.kind, target.verdict.confidence, target.verdict.evidence, target.error,
        tuple((o.probe_id, o.outcome, o.tls) for o in target.observations),
        replace(tls, cert_issuer=None) if tls else None,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("behaviour", "options"),
    [("closed", {"tls": True}), ("starttls-required", {}), ("open", {"implicit_tls": True})],
)
def test_same_report_on_both_event_loops(smtp_server: ServerFactory, behaviour: str, options: dict[str, bool]) -> None:
    server = smtp_server(behaviour, **options)
    transport = Transport.TLS if options.get("implicit_tls") else None
    on_asyncio, on_uvloop = (check_on(loop, server.address, transport) for loop in ("asyncio", "uvloop"))
    assert on_uvloop.error is None and on_uvloop.hygiene is not None and on_uvloop.hygiene.tls is not None
    assert on_uvloop.hygiene.tls.established
    assert any(o.tls for o in on_uvloop.observations)  # probes really went over TLS
    assert summary(on_uvloop) == summary(on_asyncio)
