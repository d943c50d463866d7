"""``relaycheck exporter``: /probe parsed with prometheus_client's own parser, the cache, the
concurrency cap under a scrape storm, and the address guard."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from relaycheck.engine import EngineOptions
from relaycheck.hygiene import HygieneOptions
from relaycheck.monitor.exporter import ExporterSettings
from relaycheck.testing.dnsserver import DnsServerThread

from ..behaviour.conftest import ServerFactory
from ..support.exporter import ExporterThread
from .holding import HoldingServer

ENGINE = EngineOptions(
    ext_recipients=("relaytest@outside-a.test", "relaytest@outside-b.test"),
    local_domain="relay.test",
    helo="client.relaycheck.test",
    command_timeout=20,
    greeting_timeout=20,
    hygiene=HygieneOptions(ptr=False, dnsbl=False),
)


@pytest.fixture
def exporter() -> Iterator[Any]:
    started: list[ExporterThread] = []

    def start(**changes: Any) -> ExporterThread:
        settings = replace(ExporterSettings(engine=ENGINE, allow_private=True), **changes)
        thread = ExporterThread(settings).start()
        started.append(thread)
        return thread

    yield start
    for thread in started:
        thread.stop()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample, parsed by prometheus_client's text parser (it raises on malformed input)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_probe_of_an_open_relay(exporter: Any, smtp_server: ServerFactory) -> None:
    server = smtp_server("open")
    ex = exporter(ports=(server.port,))
    status, body = ex.get(f"/probe?target=127.0.0.1&port={server.port}")
    assert status == 200
    got = samples(body)
    assert got[("relaycheck_probe_success", ())] == 1
    assert got[("relaycheck_open_relay", ())] == 1
    assert got[("relaycheck_verdict", (("verdict", "open"),))] == 1
    assert got[("relaycheck_verdict", (("verdict", "closed"),))] == 0
    assert got[("relaycheck_probes_accepted", ())] >= 2
    assert got[("relaycheck_duration_seconds", ())] > 0
    assert {k[1] for k in got if k[0] == "relaycheck_findings"} == {
        (("severity", s),) for s in ("critical", "high", "medium", "low", "info")
    }
    assert any(k[0] == "relaycheck_info" and ("endpoint", f"127.0.0.1:{server.port}") in k[1] for k in got)


def test_probe_of_a_closed_server_and_of_an_unreachable_one(exporter: Any, smtp_server: ServerFactory) -> None:
    server = smtp_server("closed")
    ex = exporter(ports=(server.port, 1))
    got = samples(ex.get(f"/probe?target=127.0.0.1:{server.port}")[1])
    assert (got[("relaycheck_probe_success", ())], got[("relaycheck_open_relay", ())]) == (1, 0)
    assert got[("relaycheck_verdict", (("verdict", "closed"),))] == 1
    got = samples(ex.get("/probe?target=127.0.0.1&port=1")[1])  # nothing listens on port 1
    assert got[("relaycheck_probe_success", ())] == 0
    assert got[("relaycheck_verdict", (("verdict", "inconclusive"),))] == 1


def test_results_are_cached_per_target(exporter: Any, smtp_server: ServerFactory) -> None:
    server = smtp_server("closed")
    ex = exporter(ports=(server.port,), cache_ttl=3600)
    first = samples(ex.get(f"/probe?target=127.0.0.1&port={server.port}")[1])
    commands = len(server.handler.commands)
    second = samples(ex.get(f"/probe?target=127.0.0.1:{server.port}")[1])  # same target, other spelling
    assert ex.exporter.checks_started == 1
    assert len(server.handler.commands) == commands  # the server heard nothing more
    assert first[("relaycheck_result_age_seconds", ())] == 0
    assert second[("relaycheck_result_age_seconds", ())] > 0
    assert second[("relaycheck_verdict", (("verdict", "closed"),))] == 1
    own = samples(ex.get("/metrics")[1])
    assert own[("relaycheck_exporter_probe_results_total", (("result", "fresh"),))] == 1
    assert own[("relaycheck_exporter_probe_results_total", (("result", "cached"),))] == 1


def test_zero_ttl_checks_every_time(exporter: Any, smtp_server: ServerFactory) -> None:
    server = smtp_server("closed")
    ex = exporter(ports=(server.port,), cache_ttl=0)
    for _ in range(2):
        assert ex.get(f"/probe?target=127.0.0.1&port={server.port}")[0] == 200
    assert ex.exporter.checks_started == 2


class Statuses:
    def __init__(self) -> None:
        self.got: list[int] = []
        self.changed = threading.Condition()

    def add(self, status: int) -> None:
        with self.changed:
            self.got.append(status)
            self.changed.notify_all()

    def wait_for(self, status: int, count: int) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: self.got.count(status) >= count, timeout=30)


def test_scrape_storm_is_capped(exporter: Any) -> None:
    """Six targets scraped at once with two check slots and one waiting place: two checks run,
    one waits, three requests get 503 at once; never more than two servers are connected."""
    changed = threading.Condition()
    holders = [HoldingServer(changed=changed).__enter__() for _ in range(6)]
    try:
        ex = exporter(ports=tuple(h.port for h in holders), max_checks=2, max_waiting=1)
        statuses = Statuses()

        def scrape(holder: HoldingServer) -> None:
            statuses.add(ex.get(f"/probe?target=127.0.0.1&port={holder.port}")[0])

        threads = [threading.Thread(target=scrape, args=(h,)) for h in holders]
        for t in threads:
            t.start()
        with changed:
            assert changed.wait_for(lambda: sum(1 for h in holders if h.connections) >= 2, timeout=30)
        assert statuses.wait_for(503, 3)
        own = samples(ex.get("/metrics")[1])
        assert own[("relaycheck_exporter_checks_running", ())] == 2
        assert own[("relaycheck_exporter_checks_waiting", ())] == 1
        assert own[("relaycheck_exporter_probe_results_total", (("result", "busy"),))] == 3
        assert sum(1 for h in holders if h.connections) == 2  # the waiting check has not connected
        for h in holders:
            h.let_go()
        for t in threads:
            t.join(timeout=60)
        assert sorted(statuses.got) == [200, 200, 200, 503, 503, 503]
        assert ex.exporter.checks_started == 3
        assert sum(1 for h in holders if h.connections) == 3
    finally:
        for h in holders:
            h.__exit__(None, None, None)


def test_simultaneous_scrapes_of_one_target_share_one_check(exporter: Any) -> None:
    with HoldingServer() as holder:
        ex = exporter(ports=(holder.port,), max_checks=1, max_waiting=0)
        statuses = Statuses()
        threads = [
            threading.Thread(target=lambda: statuses.add(ex.get(f"/probe?target=127.0.0.1&port={holder.port}")[0]))
            for _ in range(4)
        ]
        for t in threads:
            t.start()
        assert holder.wait_for(1)
        deadline = time.monotonic() + 30
        while samples(ex.get("/metrics")[1])[("relaycheck_exporter_connections", ())] < 5:  # 4 scrapes and this
            assert time.monotonic() < deadline, "the four scrapes never all arrived"
        holder.let_go()
        for t in threads:
            t.join(timeout=60)
        assert statuses.got == [200, 200, 200, 200]  # none refused as busy: they joined the running check
        assert ex.exporter.checks_started == 1


def test_a_check_longer_than_the_scrape_timeout_answers_pending_and_fills_the_cache(exporter: Any) -> None:
    with HoldingServer() as holder:
        ex = exporter(ports=(holder.port,))
        status, body = ex.get(
            f"/probe?target=127.0.0.1&port={holder.port}", {"X-Prometheus-Scrape-Timeout-Seconds": "1.5"}
        )
        assert status == 200
        got = samples(body)
        assert got[("relaycheck_check_pending", ())] == 1 and got[("relaycheck_probe_success", ())] == 0
        assert ex.exporter.inflight  # the check goes on
        holder.let_go()
        got = samples(ex.get(f"/probe?target=127.0.0.1&port={holder.port}")[1])
        assert got[("relaycheck_check_pending", ())] == 0
        assert ex.exporter.checks_started == 1


@pytest.mark.parametrize(
    ("query", "status", "text"),
    [
        ("/probe?target=127.0.0.1", 403, "Loopback"),
        ("/probe?target=10.1.2.3", 403, "Private-Use"),
        ("/probe?target=[::1]:25", 403, "Loopback"),
        ("/probe?target=mx.relay.test", 403, "nothing to test"),  # its A record points to loopback
        ("/probe?target=127.0.0.1&port=2525", 403, "port 2525"),
        ("/probe?target=bad_host!", 400, "not a host name"),
        ("/probe?target=a&target=b", 400, "exactly one"),
        ("/probe?target=mx.relay.test&port=x", 400, "port="),
        ("/probe", 400, "exactly one"),
        ("/nothing", 404, "not found"),
    ],
)
def test_private_and_bad_targets_are_refused(exporter: Any, query: str, status: int, text: str) -> None:
    with DnsServerThread({("mx.relay.test", "A"): ["127.0.0.1"]}) as dns:
        ex = exporter(allow_private=False, resolver=dns.address)
        got_status, body = ex.get(query)
    assert (got_status, text.lower() in body.lower()) == (status, True), body
    assert ex.exporter.checks_started == 0


def test_requests_are_bounded(exporter: Any) -> None:
    import socket

    ex = exporter()
    with socket.create_connection(("127.0.0.1", ex.port), timeout=30) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nX-Long: " + b"a" * 20_000 + b"\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 400")
    with socket.create_connection(("127.0.0.1", ex.port), timeout=30) as sock:
        sock.sendall(b"POST /probe?target=x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello")
        assert sock.recv(100).startswith(b"HTTP/1.1 405")


def test_command_serves_and_stops_on_sigterm(smtp_server: ServerFactory) -> None:
    server = smtp_server("closed")
    process = subprocess.Popen(
        [sys.executable, "-m", "relaycheck", "exporter", "--listen", "127.0.0.1:0", "--allow-private",
         "--allow-port", str(server.port), "--no-ptr", "--no-dnsbl", "--local-domain", "relay.test",
         "--ext-recipient", "relaytest@outside-a.test", "--ext-recipient", "relaytest@outside-b.test"],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        assert process.stderr is not None
        line = process.stderr.readline()  # the readiness line names the bound port
        assert "listening on http://127.0.0.1:" in line, line
        port = int(line.split("http://127.0.0.1:")[1].split("/")[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/probe?target=127.0.0.1:{server.port}", timeout=60) as r:
            got = samples(r.read().decode())
        assert got[("relaycheck_verdict", (("verdict", "closed"),))] == 1
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert "Traceback" not in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
