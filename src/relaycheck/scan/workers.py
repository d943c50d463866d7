"""The embedded scan on every core: ``--workers N`` local processes, one JSONL file.

One asyncio loop uses one core, and a scan is CPU-bound long before the network is busy
(bench/scan.py). With ``--workers N`` the command's process stays the *front*: it reads the
inputs, filters them at the writer (resume, duplicates, excluded and invalid inputs), routes each
target to one of N worker processes and writes every record the workers send back. Each worker
runs the very ``Scanner`` of the single-process scan on its own loop, with 1/N of ``--rate`` and
``--concurrency``.

- Routing keeps the politeness caps exact: an address always goes to the same worker (its /24 or
  /64 when ``--per-subnet`` caps subnets, so one worker holds the whole subnet's count). A name
  goes by its hash; two names with one MX host in different workers are tested twice at worst,
  and the writer keeps one record.
- Flow control: each worker has at most ``2 x its concurrency`` targets sent and not finished;
  the front reads inputs only as fast as workers take them (memory stays bounded for any input).
- Records travel as they are produced; the front writes them at once (same guarantees as the
  single-process scan: one line per record, resumable). A worker that dies is started again and
  given its unfinished targets; the writer drops a record it already has, so each target is
  written exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import multiprocessing
import os
import queue
import resource
import signal
import threading
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any, NoReturn

from relaycheck.scan.inputs import END, InputThread
from relaycheck.scan.output import JsonlOutput
from relaycheck.scan.records import admit, deliver, error_record
from relaycheck.scan.runner import LocalClaims, ScanConfig, Scanner, run_scan
from relaycheck.scan.targets import Item, Kind

MAX_RESTARTS = 3  # per worker slot: a worker that keeps dying is a bug, not bad luck
_BATCH = 64  # targets per message to a worker


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM). Not ``ru_maxrss``: after an exec that one keeps
    the high-water mark of the process that forked us (a benchmark's, a shell's)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def default_workers() -> int:
    """The CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@dataclass
class WorkerStats:
    workers: int = 0
    restarts: int = 0
    duplicates: int = 0
    peak_in_flight: int = 0  # sum of the workers' peaks
    peak_rss_mb: list[float] = field(default_factory=list)  # each worker's (forked: shares the front's pages)


# -- the worker process ----------------------------------------------------------------------


class _PipeOutput(LocalClaims):
    """A worker's writer: claims are local (``skip``: keys the front already has), records go to the
    front as soon as they are made: whatever the loop produced in one turn, in one message."""

    def __init__(self, out: Connection) -> None:
        super().__init__()
        self.out = out
        self._outbox: list[tuple[str, Any]] = []

    def write(self, record: dict[str, Any]) -> bool:
        self.post("record", record)
        return True

    def post(self, kind: str, value: Any) -> None:
        if not self._outbox:  # the first of this loop turn: send them all at the end of it
            asyncio.get_running_loop().call_soon(self.flush)
        self._outbox.append((kind, value))

    def flush(self) -> None:
        batch, self._outbox = self._outbox, []
        if batch:
            self.send(batch)

    def send(self, batch: list[tuple[str, Any]]) -> None:
        try:
            self.out.send(batch)
        except OSError:
            _front_gone()


def _front_gone() -> NoReturn:
    """The front died (killed): nobody can take our records; stop at once (resume redoes them)."""
    os._exit(0)


class _WorkerScanner(Scanner):
    """Items arrive as ``(number, item, skip)``; the front hears when each is finished."""

    writer: _PipeOutput

    async def handle(self, entry: Any) -> None:
        number, item, skip = entry
        self.writer.keys.update(skip)
        await super().handle(item)
        self.writer.post("done", number)


def _worker_main(config: ScanConfig, inbox: Connection, out: Connection, inherited: tuple[int, ...] = ()) -> None:
    # A forked worker holds copies of the front's ends of the other workers' pipes: close them, or
    # a worker would keep another's inbox open after the front died (no EOF: it would never stop).
    for fd in inherited:
        with contextlib.suppress(OSError):
            os.close(fd)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the front's to handle: it stops us
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # (a forked worker inherits the front's handler)

    def entries() -> Iterator[Any]:
        while True:
            try:
                batch = inbox.recv()
            except (EOFError, OSError):
                _front_gone()
            if batch is None:
                return
            yield from batch

    writer = _PipeOutput(out)
    scanner = run_scan(entries(), config, writer, scanner_type=_WorkerScanner)
    writer.flush()
    writer.send([("stats", {"duplicates": scanner.duplicates, "peak_in_flight": scanner.peak_in_flight,
                          "peak_rss_mb": peak_rss_mb()})])
    out.close()


# -- the front -------------------------------------------------------------------------------


Entry = tuple[int, Item, tuple[str, ...]]  # (number, target, keys already written for its name)


@dataclass
class _Slot:
    """One worker process and what it owes the front."""

    index: int
    process: Any = None
    inbox: Connection | None = None  # our end: targets to the worker
    out: Connection | None = None  # our end: records from the worker
    queued: deque[Entry] = field(default_factory=deque)  # routed here, not sent yet
    sent: dict[int, Entry] = field(default_factory=dict)  # sent, not finished
    told_end: bool = False  # sent "no more targets"
    finished: bool = False  # sent its stats, or given up on
    restarts: int = 0


class WorkerPool:
    """``--workers N``: start the processes early (before any other thread, so that they can be
    forked rather than spawned), then ``run`` the scan on them once."""

    writer: JsonlOutput
    on_record: Callable[[dict[str, Any]], None] | None = None

    def __init__(self, config: ScanConfig, count: int) -> None:
        count = max(1, count)
        self.shared = config.share(count)
        self.by_subnet = config.per_subnet > 0
        # what one worker may hold: its Scanner takes 2 x concurrency before it stops reading
        self.window = 2 * self.shared.concurrency
        self.stats = WorkerStats(workers=count)
        self.slots = [_Slot(i) for i in range(count)]
        self.numbers = 0
        self.exhausted = False
        # What exists now (modules, the engine's tables) is shared with the forked workers; frozen,
        # the garbage collector neither scans it again nor touches its pages (no copy-on-write).
        gc.freeze()
        for slot in self.slots:
            self._start(slot)

    # -- workers

    def _start(self, slot: _Slot) -> None:
        # fork is fast (no re-import), but only safe while this process runs no other thread: a
        # worker restarted mid-scan (the input thread is running) is spawned
        context: Any = multiprocessing.get_context("fork" if threading.active_count() == 1 else "spawn")
        their_inbox, our_inbox = context.Pipe(duplex=False)  # (reader, writer)
        our_out, their_out = context.Pipe(duplex=False)
        inherited = (
            tuple(c.fileno() for c in (our_inbox, our_out, *self._connections()))
            if context.get_start_method() == "fork"
            else ()
        )
        process = context.Process(
            target=_worker_main,
            args=(self.shared, their_inbox, their_out, inherited),
            name=f"relaycheck-scan-{slot.index}",
            daemon=True,
        )
        process.start()
        their_inbox.close()
        their_out.close()
        slot.process, slot.inbox, slot.out = process, our_inbox, our_out
        slot.told_end = slot.finished = False

    def _connections(self) -> list[Connection]:
        return [c for s in self.slots for c in (s.inbox, s.out) if c is not None]

    def _stop_all(self) -> None:
        for slot in self.slots:
            if slot.process is not None and slot.process.is_alive():
                slot.process.terminate()
        for slot in self.slots:
            if slot.process is not None:
                slot.process.join(timeout=10)
            for conn in (slot.inbox, slot.out):
                if conn is not None:
                    conn.close()

    def _lost(self, slot: _Slot) -> None:
        """A worker died: start another and give it the targets the dead one had not finished."""
        for conn in (slot.inbox, slot.out):
            if conn is not None:
                conn.close()
        slot.inbox = slot.out = None
        slot.process.join(timeout=10)
        unfinished = list(slot.sent.values())
        slot.sent.clear()
        slot.queued.extendleft(reversed(unfinished))
        if slot.restarts < MAX_RESTARTS:
            slot.restarts += 1
            self.stats.restarts += 1
            self._start(slot)
            return
        reason = f"the scan's worker process died {slot.restarts + 1} times (exit code {slot.process.exitcode})"
        for _, item, _ in slot.queued:  # a claimed target always ends as a record
            if self.writer.is_pending(item.key) or (item.kind is Kind.NAME and self.writer.claim(item.key)):
                self._write(error_record(item, reason))
        slot.queued.clear()
        slot.finished = True

    # -- targets out

    def _route(self, item: Item) -> _Slot:
        if item.ip is not None:
            address = ipaddress.ip_address(item.ip)
            value = int(address)
            if self.by_subnet:  # a whole /24 (/64) in one worker: its per-subnet cap holds
                value >>= 8 if address.version == 4 else 64
            return self.slots[value % len(self.slots)]
        return self.slots[zlib.crc32((item.name or item.given).encode()) % len(self.slots)]

    def _take(self, item: Item) -> None:
        """Filter one input at the writer; a target to test is routed to its worker."""
        skip = admit(item, self.writer, self._write, self._duplicate)
        if skip is not None:
            self.numbers += 1
            self._route(item).queued.append((self.numbers, item, skip))

    def _duplicate(self) -> None:
        self.stats.duplicates += 1

    def _send(self) -> None:
        for slot in self.slots:
            if slot.inbox is None or slot.finished:
                continue
            room = min(self.window - len(slot.sent), _BATCH, len(slot.queued))
            if room > 0:
                batch = [slot.queued.popleft() for _ in range(room)]
                slot.sent.update((entry[0], entry) for entry in batch)
                with contextlib.suppress(OSError):  # it died: _lost() hands these to its successor
                    slot.inbox.send(batch)
            if self.exhausted and not slot.queued and not slot.told_end:
                with contextlib.suppress(OSError):
                    slot.inbox.send(None)
                slot.told_end = True

    def _backlog(self) -> int:
        """Targets routed to a worker and not sent to it yet."""
        return sum(len(s.queued) for s in self.slots)

    # -- records in

    def _write(self, record: dict[str, Any]) -> None:
        if not deliver(self.writer, record, self.on_record):
            self.stats.duplicates += 1

    def _receive(self, slot: _Slot) -> None:
        assert slot.out is not None
        try:
            while slot.out.poll():
                for kind, value in slot.out.recv():
                    if kind == "record":
                        self._write(value)
                    elif kind == "done":
                        slot.sent.pop(value, None)
                    else:  # "stats": the worker has finished everything it was given
                        self.stats.duplicates += value["duplicates"]
                        self.stats.peak_in_flight += value["peak_in_flight"]
                        self.stats.peak_rss_mb.append(value["peak_rss_mb"])
                        slot.finished = True
        except (EOFError, OSError):
            if not slot.finished:
                self._lost(slot)

    # -- the loop

    def run(self, items: Iterable[Item], writer: JsonlOutput,
            on_record: Callable[[dict[str, Any]], None] | None = None) -> WorkerStats:
        """Scan ``items`` on the workers, writing every record to ``writer``; stop the workers."""
        self.writer, self.on_record = writer, on_record
        try:
            self._loop(items)
        finally:
            self._stop_all()
        return self.stats

    def _loop(self, items: Iterable[Item]) -> None:
        inputs = InputThread(items, maxsize=4 * _BATCH)
        limit = len(self.slots) * _BATCH  # targets read ahead and not sent: bounded memory
        try:
            while True:
                while not self.exhausted and self._backlog() < limit:
                    idle = not any(s.sent or s.queued for s in self.slots)
                    try:
                        item = inputs.get(timeout=0.2 if idle else 0.0)
                    except queue.Empty:
                        break
                    if item is END:
                        self.exhausted = True
                    else:
                        self._take(item)
                self._send()
                if self.exhausted and all(s.finished for s in self.slots):
                    return
                listening = {s.out: s for s in self.slots if s.out is not None and not s.finished}
                # Do not wait when inputs are ready and there is room for them; otherwise block until
                # a worker reports (never spin: the workers need the CPU).
                room = self._backlog() < limit
                more_input = room and not self.exhausted and inputs.ready()
                for conn in wait(list(listening), timeout=0 if more_input else 0.05):
                    self._receive(listening[conn])  # type: ignore[index]
        finally:
            inputs.stop()
