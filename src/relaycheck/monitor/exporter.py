"""``relaycheck exporter``: a multi-target Prometheus exporter (``GET /probe?target=…``) on asyncio.

Each ``/probe`` runs (or reuses) one check of the target and answers its metrics. A scrape storm
cannot become a flood of SMTP connections:

- each target's result is cached for ``cache_ttl`` seconds, and requests for a target whose
  check is running join it instead of starting another (single flight);
- at most ``max_checks`` checks run at once, at most ``max_waiting`` more wait for a slot; a
  request beyond that is answered 503 at once, without a check;
- the targets go through the web UI's address guard: private, loopback… addresses (directly or
  through MX and A records) are refused unless ``allow_private``, and only allowed ports are
  tested.

The HTTP server is asyncio's, with the request head read under a byte cap and a deadline, GET
and HEAD only, no bodies, one request per connection, and a cap on open connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.process_collector import ProcessCollector

from relaycheck.api import Started, TargetSpec
from relaycheck.engine import check_target
from relaycheck.errors import DnsError, UsageError
from relaycheck.model import Report, Target, TargetReport
from relaycheck.monitor.metrics import Families, report_metrics
from relaycheck.monitor.settings import DEFAULT_PORTS, ExporterSettings
from relaycheck.web.guard import Refused, parse_input, resolve, target_key

__all__ = ["DEFAULT_PORTS", "Exporter", "ExporterSettings", "serve"]

log = logging.getLogger("relaycheck.exporter")

HEAD_LIMIT = 8192  # bytes of request line and headers
HEAD_TIMEOUT = 10.0  # seconds to receive them
SCRAPE_MARGIN = 0.5  # answer this long before Prometheus gives up on the scrape


@dataclass(frozen=True)
class Cached:
    report: Report
    measured: float  # time.monotonic() when the check ended


class Busy(Exception):
    """Every check slot and every waiting place is taken."""


class ExporterMetrics:
    """The exporter's own metrics (``/metrics``)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        r = self.registry
        self.requests = Counter("relaycheck_exporter_requests", "HTTP requests", ["path", "code"], registry=r)
        self.answers = Counter(
            "relaycheck_exporter_probe_results",
            "How /probe requests were answered: fresh (ran a check), cached, joined (a running check), "
            "pending (timed out, check goes on), refused, invalid, busy",
            ["result"],
            registry=r,
        )
        self.running = Gauge("relaycheck_exporter_checks_running", "Checks running now", registry=r)
        self.waiting = Gauge("relaycheck_exporter_checks_waiting", "Checks waiting for a slot", registry=r)
        self.connections = Gauge("relaycheck_exporter_connections", "Open HTTP connections", registry=r)
        self.cached = Gauge("relaycheck_exporter_cached_targets", "Targets with a cached result", registry=r)
        self.duration = Histogram(
            "relaycheck_exporter_check_duration_seconds",
            "Duration of the checks the exporter ran",
            buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300),
            registry=r,
        )


class Exporter:
    def __init__(self, settings: ExporterSettings) -> None:
        self.settings = settings
        self.cache: dict[str, Cached] = {}
        self.inflight: dict[str, asyncio.Task[Report]] = {}
        self.slots = asyncio.Semaphore(settings.max_checks)
        self.checks_started = 0  # checks that got past the guard and connected (tests read it)
        self.metrics = ExporterMetrics()
        self._connections = 0
        self._server: asyncio.Server | None = None

    # -- checks ----------------------------------------------------------------------------

    def _prune(self, now: float) -> None:
        for key in [k for k, c in self.cache.items() if now - c.measured >= self.settings.cache_ttl]:
            del self.cache[key]
        self.metrics.cached.set(len(self.cache))

    async def _check(self, key: str, text: str, port: int | None) -> Report:
        """Resolve, vet and test one target under the concurrency cap; cache the report."""
        settings = self.settings
        spec, chosen = parse_input(text, port, ports=settings.ports, allow_private=settings.allow_private)
        try:
            self.metrics.waiting.inc()
            try:
                await self.slots.acquire()
            finally:
                self.metrics.waiting.dec()
            try:
                self.metrics.running.inc()
                return await self._run(key, spec, chosen)
            finally:
                self.metrics.running.dec()
                self.slots.release()
        finally:
            self.inflight.pop(key, None)  # also when cancelled while waiting for a slot

    async def _run(self, key: str, spec: TargetSpec, port: int) -> Report:
        settings = self.settings
        started = Started()
        plan = await resolve(
            spec, port, resolver=settings.resolver, allow_private=settings.allow_private,
            max_targets=settings.max_targets,
        )  # fmt: skip
        self.checks_started += 1  # resolved and vetted: from here on it connects
        gate = asyncio.Semaphore(settings.targets_at_once)

        async def one(target: Target) -> TargetReport:
            async with gate:  # target.address is the vetted address: the engine connects there only
                return await check_target(target, settings.engine)

        results = await asyncio.gather(*(one(t) for t in plan.targets))
        report = started.report(results, plan.problems, "probe")
        self.metrics.duration.observe(report.duration)
        self.cache[key] = Cached(report, time.monotonic())
        self.metrics.cached.set(len(self.cache))
        return report

    async def probe(self, text: str, port: int | None, wait: float) -> tuple[Report | None, float, str]:
        """The report for a target: (report or None when still running, its age, how it was got).

        Raises ``UsageError``/``Refused`` (bad or refused target), ``DnsError``, ``Busy``.
        """
        settings = self.settings
        spec, chosen = parse_input(text, port, ports=settings.ports, allow_private=settings.allow_private)
        key = target_key(spec.host, chosen)
        now = time.monotonic()
        self._prune(now)
        cached = self.cache.get(key)
        if cached is not None:
            return cached.report, now - cached.measured, "cached"
        task = self.inflight.get(key)
        how = "joined"
        if task is None:
            if len(self.inflight) >= settings.max_checks + settings.max_waiting:
                raise Busy(f"{len(self.inflight)} checks are running or waiting; try again later")
            task = asyncio.get_running_loop().create_task(self._check(key, text, port))
            task.add_done_callback(_retrieve)  # every waiter may have timed out: never an unretrieved error
            self.inflight[key] = task
            how = "fresh"
        try:
            report = await asyncio.wait_for(asyncio.shield(task), timeout=wait)
        except TimeoutError:
            return None, 0.0, "pending"
        return report, 0.0, how

    # -- HTTP ------------------------------------------------------------------------------

    async def start(self, host: str, port: int) -> asyncio.Server:
        self._server = await asyncio.start_server(self._connection, host, port, limit=HEAD_LIMIT)
        return self._server

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        tasks = list(self.inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections += 1
        self.metrics.connections.set(self._connections)
        try:
            if self._connections > self.settings.max_connections:
                await _respond(writer, 503, "too many connections\n", retry_after=5)
                return
            try:
                async with asyncio.timeout(HEAD_TIMEOUT):
                    head = await reader.readuntil(b"\r\n\r\n")
            except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                with contextlib.suppress(ConnectionError):
                    await _respond(writer, 400, "bad request\n")
                return
            await self._request(head, writer)
        except Exception:
            log.exception("error while answering a request")
            with contextlib.suppress(Exception):
                await _respond(writer, 500, "internal error (logged)\n")
        finally:
            self._connections -= 1
            self.metrics.connections.set(self._connections)
            with contextlib.suppress(Exception):
                writer.close()
                await writer.wait_closed()

    async def _request(self, head: bytes, writer: asyncio.StreamWriter) -> None:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            await _respond(writer, 400, "bad request\n")
            return
        method, target, _version = parts
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        url = urlsplit(target)
        route = url.path if url.path in ("/", "/probe", "/metrics") else "other"
        respond = _Responder(writer, method == "HEAD", self.metrics, route)
        if method not in ("GET", "HEAD"):
            await respond(405, "only GET and HEAD\n", allow="GET, HEAD")
        elif url.path == "/metrics":
            await respond(200, generate_latest(self.metrics.registry).decode(), content_type=CONTENT_TYPE_LATEST)
        elif url.path == "/probe":
            await self._probe(parse_qs(url.query, max_num_fields=10), headers, respond)
        elif url.path == "/":
            await respond(200, INDEX, content_type="text/html; charset=utf-8")
        else:
            await respond(404, "not found: try /probe?target=mx.example.org or /metrics\n")

    async def _probe(self, query: dict[str, list[str]], headers: dict[str, str], respond: _Responder) -> None:
        targets = query.get("target", [])
        ports = query.get("port", [])
        if len(targets) != 1 or len(ports) > 1:
            self.metrics.answers.labels("invalid").inc()
            await respond(400, "give exactly one target= (and at most one port=)\n")
            return
        port: int | None = None
        if ports:
            if not (ports[0].isascii() and ports[0].isdigit() and 0 < int(ports[0]) < 65536):
                self.metrics.answers.labels("invalid").inc()
                await respond(400, f"port= takes a number from 1 to 65535, not {ports[0][:20]!r}\n")
                return
            port = int(ports[0])
        wait = self.settings.check_timeout
        with contextlib.suppress(ValueError):
            wait = min(wait, max(1.0, float(headers.get("x-prometheus-scrape-timeout-seconds", "")) - SCRAPE_MARGIN))
        try:
            report, age, how = await self.probe(targets[0], port, wait)
        except Refused as exc:
            self.metrics.answers.labels("refused").inc()
            await respond(403, f"refused: {exc}\n")
            return
        except (UsageError, DnsError) as exc:
            self.metrics.answers.labels("invalid").inc()
            await respond(400, f"{exc}\n")
            return
        except Busy as exc:
            self.metrics.answers.labels("busy").inc()
            await respond(503, f"busy: {exc}\n", retry_after=30)
            return
        self.metrics.answers.labels(how).inc()
        families = report_metrics(report or Report(targets=()), age=age, pending=report is None)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(Families(families))
        await respond(200, generate_latest(registry).decode(), content_type=CONTENT_TYPE_LATEST)


def _retrieve(task: asyncio.Task[Report]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.info("check failed: %s", task.exception())


class _Responder:
    def __init__(self, writer: asyncio.StreamWriter, head_only: bool, metrics: ExporterMetrics, route: str) -> None:
        self.writer, self.head_only, self.metrics, self.route = writer, head_only, metrics, route

    async def __call__(
        self,
        status: int,
        body: str,
        *,
        content_type: str = "text/plain; charset=utf-8",
        retry_after: int | None = None,
        allow: str | None = None,
    ) -> None:
        self.metrics.requests.labels(self.route, str(status)).inc()
        await _respond(
            self.writer, status, body, content_type=content_type, retry_after=retry_after, allow=allow,
            head_only=self.head_only,
        )  # fmt: skip


REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
           500: "Internal Server Error", 503: "Service Unavailable"}  # fmt: skip


async def _respond(
    writer: asyncio.StreamWriter,
    status: int,
    body: str,
    *,
    content_type: str = "text/plain; charset=utf-8",
    retry_after: int | None = None,
    allow: str | None = None,
    head_only: bool = False,
) -> None:
    data = body.encode()
    head = [
        f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(data)}",
        "Connection: close",
        "Cache-Control: no-store",
        "X-Content-Type-Options: nosniff",
    ]
    if retry_after is not None:
        head.append(f"Retry-After: {retry_after}")
    if allow is not None:
        head.append(f"Allow: {allow}")
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + (b"" if head_only else data))
    await writer.drain()


INDEX = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>relaycheck exporter</title></head>
<body><h1>relaycheck exporter</h1>
<p><a href="/probe?target=localhost">/probe?target=HOST[&amp;port=25]</a>: test a mail server (or every MX of a
domain) for open relaying, in the Prometheus text format.</p>
<p><a href="/metrics">/metrics</a>: the exporter's own metrics.</p></body></html>
"""


async def serve(exporter: Exporter, host: str, port: int, ready: Callable[[str, int], Awaitable[None] | None]) -> None:
    """Run until cancelled; ``ready`` is told the bound address (port 0 picks one)."""
    server = await exporter.start(host, port)
    bound = server.sockets[0].getsockname()
    result = ready(bound[0], bound[1])
    if result is not None:
        await result
    try:
        await server.serve_forever()
    finally:
        await exporter.stop()
