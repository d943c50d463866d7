"""The scan itself: items in, one record per target out, politely, on one asyncio loop.

``Scanner.run`` is the same coroutine for the embedded scan (the whole input, records to the
JSONL writer) and for a Dask chunk (a few hundred items, records to a list); only the writer
differs. Per target it does exactly what ``relaycheck check`` does — ``api.expand`` for the
target and ``engine.check_target`` for the test — so a scan's verdict is ``check``'s verdict.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import math
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from relaycheck.api import CheckOptions, TargetSpec, expand
from relaycheck.engine import check_target
from relaycheck.errors import DnsError, RelaycheckError
from relaycheck.model import Target
from relaycheck.scan.addresses import subnet_of
from relaycheck.scan.excludes import ExcludeList
from relaycheck.scan.limits import (
    ConnectGate,
    ConnectRateLimiter,
    KeyedLimiter,
    Prepaid,
    current_target,
    gated_loop_factory,
)
from relaycheck.scan.records import ConnectStats, error_record, excluded_record, report_record
from relaycheck.scan.targets import Item, Kind, record_key


@dataclass(frozen=True)
class ScanConfig:
    """Everything a scan (or one remote chunk of it) needs; picklable for Dask."""

    check: CheckOptions = field(default_factory=CheckOptions)
    excludes: ExcludeList = field(default_factory=ExcludeList)
    concurrency: int = 100  # targets tested at once
    rate: float = 100.0  # new TCP connections per second, all targets together; 0 = unlimited
    per_subnet: int = 4  # targets of one /24 (IPv4) or /64 (IPv6) tested at once; 0 = no cap
    full: bool = False  # records carry every observation and the transcripts

    def share(self, parts: int) -> ScanConfig:
        """This scan's budget split between ``parts`` chunks running at the same time."""
        parts = max(1, parts)
        return replace(
            self,
            rate=self.rate / parts if self.rate > 0 else 0.0,
            concurrency=max(1, math.ceil(self.concurrency / parts)),
        )


class RecordOutput(Protocol):
    def claim(self, key: str) -> bool: ...
    def release(self, key: str) -> None: ...
    def write(self, record: dict[str, Any]) -> bool: ...


class LocalClaims:
    """The claim half of a writer whose file is elsewhere (a Dask chunk, a --workers process):
    claims are kept here; ``skip`` keys are already in the file."""

    def __init__(self, skip: Iterable[str] = ()) -> None:
        self.keys = set(skip)

    def claim(self, key: str) -> bool:
        if key in self.keys:
            return False
        self.keys.add(key)
        return True

    def release(self, key: str) -> None:
        self.keys.discard(key)


class ListOutput(LocalClaims):
    """Records kept in memory (a Dask chunk)."""

    def __init__(self, skip: Iterable[str] = ()) -> None:
        super().__init__(skip)
        self.records: list[dict[str, Any]] = []

    def write(self, record: dict[str, Any]) -> bool:
        self.records.append(record)
        return True


_END = object()


class Scanner:
    def __init__(
        self,
        config: ScanConfig,
        writer: RecordOutput,
        on_record: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.config = config
        self.writer = writer
        self.on_record = on_record
        engine = config.check.engine
        self.limiter = ConnectRateLimiter(config.rate, burst=max(engine.max_connections, config.rate / 10))
        self.hosts = KeyedLimiter(1)  # one test per address at a time (two names may share an MX)
        self.subnets = KeyedLimiter(config.per_subnet)
        self.duplicates = 0
        self.in_flight = 0  # targets being tested right now
        self.peak_in_flight = 0

    async def run(self, items: Iterable[Item]) -> None:
        """Test every item; return when all are done. Cancelling stops at once (resume redoes the
        targets in flight: their records were never written)."""
        loop = asyncio.get_running_loop()
        if isinstance(loop, ConnectGate):
            loop.limiter = self.limiter
        workers = max(1, self.config.concurrency)
        queue: asyncio.Queue[Any] = asyncio.Queue()
        space = threading.Semaphore(workers * 2)
        stop = threading.Event()
        failure: list[BaseException] = []

        def put(value: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: we were stopped
                loop.call_soon_threadsafe(queue.put_nowait, value)

        def produce() -> None:
            # A thread, so that reading a slow pipe (zmap | relaycheck scan -iL -) never blocks
            # the loop that is running the tests.
            try:
                for item in items:
                    while not space.acquire(timeout=0.5):
                        if stop.is_set():
                            return
                    if stop.is_set():
                        return
                    put(item)
            except BaseException as exc:  # e.g. an unreadable list file: reported by run()
                failure.append(exc)
            finally:
                for _ in range(workers):
                    put(_END)

        async def worker() -> None:
            while True:
                item = await queue.get()
                if item is _END:
                    return
                space.release()
                await self.handle(item)

        producer = threading.Thread(target=produce, name="relaycheck-targets", daemon=True)
        producer.start()
        try:
            await asyncio.gather(*(worker() for _ in range(workers)))
        finally:
            stop.set()
        if failure:
            raise failure[0]

    def _emit(self, record: dict[str, Any]) -> None:
        if self.writer.write(record) and self.on_record is not None:
            self.on_record(record)

    async def handle(self, item: Item) -> None:
        try:
            if item.kind is Kind.EXCLUDED:
                if self.writer.claim(item.key):
                    self._emit(excluded_record(item, item.reason or "excluded"))
            elif item.kind is Kind.INVALID:
                if self.writer.claim(item.key):
                    self._emit(error_record(item, f"invalid input: {item.reason}"))
            elif item.kind is Kind.ADDRESS:
                await self._address(item)
            else:
                await self._name(item)
        except RelaycheckError as exc:  # no test could start (the key is free again, if claimed)
            self.writer.release(item.key)
            if self.writer.claim(item.key):
                self._emit(error_record(item, str(exc)))

    async def _address(self, item: Item) -> None:
        assert item.ip is not None
        key = item.key
        if not self.writer.claim(key):
            self.duplicates += 1
            return
        spec = TargetSpec(given=item.given, host=item.ip, port=item.port)
        target = (await expand(spec, self.config.check))[0]
        if item.name:  # a CSV line pinned a domain to this address
            target = replace(target, domain=item.name)
        await self._test(item, target, key)

    async def _name(self, item: Item) -> None:
        assert item.name is not None
        spec = TargetSpec(given=item.given, host=item.name, port=item.port if item.port_given else None)
        try:
            targets = await expand(spec, self.config.check)
        except DnsError as exc:
            if self.writer.claim(item.key):
                self._emit(error_record(item, f"dns: {exc}"))
            return
        seen: set[str] = set()
        for target in targets:
            ip = ipaddress.ip_address(target.address or target.host)
            key = record_key(ip.compressed, target.port, item.name)
            if key in seen:
                continue  # two MX names, one address: one test
            seen.add(key)
            if not self.writer.claim(key):
                self.duplicates += 1
                continue
            reason = self.config.excludes.reason(ip.version, int(ip))
            if reason is not None:  # an MX pointing into private or reserved space
                self._emit(excluded_record(item, reason, ip=ip.compressed, host=target.host, domain=target.domain))
                continue
            await self._test(item, replace(target, address=ip.compressed), key)

    async def _test(self, item: Item, target: Target, key: str) -> None:
        address = ipaddress.ip_address(target.address or target.host)
        engine = self.config.check.engine
        usual = engine.max_connections  # VRFY/EXPN ride on the first; the TLS battery's are debt
        written = False
        try:
            async with self.hosts.hold(address), self.subnets.hold(subnet_of(address.version, int(address))):
                await self.limiter.acquire(usual)
                paid = Prepaid(usual, ConnectStats())
                token = current_target.set(paid)
                self.in_flight += 1
                self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
                try:
                    report = await check_target(target, engine)
                    record = report_record(key, item, report, stats=paid.stats, full=self.config.full)
                except Exception as exc:  # an engine bug must not end a scan of thousands
                    record = error_record(item, f"internal error: {type(exc).__name__}: {exc}", ip=address.compressed)
                    record["key"] = key
                finally:
                    self.in_flight -= 1
                    current_target.reset(token)
            self._emit(record)
            written = True
        finally:
            if not written:
                self.writer.release(key)


def run_scan(items: Iterable[Item], config: ScanConfig, writer: RecordOutput,
             on_record: Callable[[dict[str, Any]], None] | None = None,
             scanner_type: type[Scanner] | None = None) -> Scanner:
    """Run a whole scan on this thread's own loop (embedded mode, a Dask chunk, a local worker)."""
    scanner = (scanner_type or Scanner)(config, writer, on_record)
    with asyncio.Runner(loop_factory=gated_loop_factory()) as runner:
        runner.run(scanner.run(items))
    return scanner


def scan_chunk(items: list[Item], skip: list[str], config: ScanConfig) -> list[dict[str, Any]]:
    """A Dask task: scan one chunk on this worker thread's own event loop, return its records.

    Never raises for a target (every target ends as a record); ``skip`` lists keys the client
    already has for the names in this chunk (resume).
    """
    writer = ListOutput(skip)
    run_scan(items, config, writer)
    return writer.records
