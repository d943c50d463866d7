"""Scale-out on Dask: chunks of targets run as tasks on a cluster, records stream into one file.

Imported only for ``--dask`` (Dask is the optional ``relaycheck[dask]`` extra). Shape:

- the client reads the inputs (in a thread: a slow pipe never stalls it), claims each address
  at the writer (resume and duplicate inputs are filtered here), and submits chunks of a few
  hundred items; at most two chunks per worker thread are in flight, so the scheduler never
  holds a huge graph and results never pile up in worker memory;
- each task is ``runner.scan_chunk``: a plain function that runs the very coroutine the
  embedded scan uses on its own event loop in the worker's thread (not on Dask's loop, so
  heartbeats keep flowing);
- completed chunks are written to the JSONL file as they arrive and their futures released at
  once: a result no one holds cannot be recomputed (re-probing hosts) if a worker dies later;
- a worker that dies mid-chunk: the scheduler reruns that chunk on another worker; the chunk
  wrote nothing before it finished, and the writer drops any key it has already written, so every
  target still appears exactly once. A chunk that fails for good (``KilledWorker`` after
  ``distributed.scheduler.allowed-failures``) becomes one ``error`` record per target.
- the global ``--rate`` and ``--concurrency`` are split between the cluster's worker threads;
  per-host caps hold exactly (an address is in one chunk only); the per-subnet cap holds per
  chunk (up to ``per_subnet`` x threads at once for one /24 in the worst case).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import queue
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from relaycheck.errors import UsageError
from relaycheck.extras import MissingExtra
from relaycheck.scan.inputs import END, InputThread
from relaycheck.scan.output import JsonlOutput
from relaycheck.scan.records import admit, deliver, error_record
from relaycheck.scan.runner import ScanConfig, scan_chunk
from relaycheck.scan.targets import Item, Kind

DEFAULT_CHUNK = 256
FLUSH_PARTIAL_AFTER = 0.3  # seconds: an incomplete chunk is sent when workers would idle


def parse_dask(spec: str) -> tuple[str | None, int | None]:
    """``tcp://host:8786`` (a running scheduler) or ``local`` / ``local:N`` (N worker processes).

    Checked before anything is opened: Dask itself must be installed (the dask extra)."""
    if not all(importlib.util.find_spec(m) for m in ("dask", "distributed")):
        raise MissingExtra("--dask", "dask")
    if spec == "local" or spec.startswith("local:"):
        count = spec.partition(":")[2]
        if count and not (count.isdigit() and int(count) > 0):
            raise UsageError(f"--dask local:N needs a number of workers, not {count!r}")
        return None, int(count) if count else (os.cpu_count() or 1)
    if "://" not in spec and ":" not in spec:
        raise UsageError(f"--dask needs a scheduler address (tcp://host:8786) or local[:N], not {spec!r}")
    return spec, None


def _worker_version() -> str:
    return str(importlib.import_module("relaycheck").__version__)


@dataclass
class DaskStats:
    workers: int = 0
    threads: int = 0
    chunks: int = 0
    failed_chunks: int = 0
    duplicates: int = 0


def run_distributed(
    items: Iterable[Item],
    config: ScanConfig,
    writer: JsonlOutput,
    *,
    address: str | None = None,
    workers: int | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    client: Any = None,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    on_chunk: Callable[[int], None] | None = None,
) -> DaskStats:
    """Scan ``items`` on a Dask cluster (``client`` given, a scheduler ``address``, or a local
    cluster of ``workers`` processes), writing every record to ``writer``."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise MissingExtra("--dask", "dask") from None

    stats = DaskStats()
    cluster = None
    own_client = client is None
    if client is None:
        if address is None:
            cluster = LocalCluster(  # type: ignore[no-untyped-call]
                n_workers=workers or (os.cpu_count() or 1),
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
            )
        try:
            client = Client(cluster if cluster is not None else address, timeout=30)  # type: ignore[no-untyped-call]
        except OSError as exc:
            if cluster is not None:
                cluster.close()
            raise UsageError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
    try:
        _check_workers(client)
        nthreads = client.nthreads()
        stats.workers, stats.threads = len(nthreads), max(1, sum(nthreads.values()))
        _Driver(client, config.share(stats.threads), writer, stats, chunk_size, on_record, on_chunk).run(items)
    finally:
        if own_client:
            client.close()
            if cluster is not None:
                cluster.close()
    return stats


def _check_workers(client: Any) -> None:
    from relaycheck import __version__

    try:
        versions = client.run(_worker_version)
    except Exception as exc:
        raise UsageError(
            f"the Dask workers cannot import relaycheck ({exc}): install relaycheck[dask] on each"
        ) from None
    if not versions:
        raise UsageError("the Dask cluster has no workers")
    wrong = {w: v for w, v in versions.items() if v != __version__}
    if wrong:
        raise UsageError(f"Dask workers run other relaycheck versions than this client ({__version__}): {wrong}")


class _Driver:
    def __init__(self, client: Any, config: ScanConfig, writer: JsonlOutput, stats: DaskStats, chunk_size: int,
                 on_record: Callable[[dict[str, Any]], None] | None, on_chunk: Callable[[int], None] | None) -> None:
        self.client = client
        self.config = config
        self.writer = writer
        self.stats = stats
        self.chunk_size = max(1, chunk_size)
        self.slots = 2 * stats.threads
        self.on_record = on_record
        self.on_chunk = on_chunk
        self.run_id = uuid.uuid4().hex[:12]
        self.pending: dict[Any, list[Item]] = {}
        self.done: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.batch: list[Item] = []
        self.skip: set[str] = set()
        self.batch_started = 0.0

    def _write(self, record: dict[str, Any]) -> None:
        if not deliver(self.writer, record, self.on_record):
            self.stats.duplicates += 1

    def _take(self, item: Item) -> None:
        """Filter one input on the client; targets to test join the current batch."""
        skip = admit(item, self.writer, self._write, self._duplicate)
        if skip is None:
            return
        self.skip.update(skip)
        if not self.batch:
            self.batch_started = time.monotonic()
        self.batch.append(item)
        if len(self.batch) >= self.chunk_size:
            self._submit()

    def _duplicate(self) -> None:
        self.stats.duplicates += 1

    def _submit(self) -> None:
        if not self.batch:
            return
        key = f"relaycheck-scan-{self.run_id}-{self.stats.chunks}"
        future = self.client.submit(
            scan_chunk, self.batch, sorted(self.skip), self.config, key=key, pure=False, retries=1
        )
        self.stats.chunks += 1
        self.pending[future] = self.batch
        future.add_done_callback(self.done.put)
        self.batch, self.skip = [], set()

    def _finish(self, future: Any) -> None:
        items = self.pending.pop(future)
        try:
            records = future.result()
        except Exception as exc:  # KilledWorker after repeated worker deaths, a bug in a chunk
            self.stats.failed_chunks += 1
            records = [
                error_record(item, f"chunk failed on the Dask cluster: {type(exc).__name__}: {exc}") for item in items
            ]
        finally:
            future.release()
        for record in records:
            self._write(record)
        for item in items:  # belt and braces: a claimed address always ends as a record
            if item.kind is Kind.ADDRESS and self.writer.is_pending(item.key):
                self._write(error_record(item, "the chunk returned no record for this target"))
        if self.on_chunk is not None:
            self.on_chunk(self.stats.chunks)

    def run(self, items: Iterable[Item]) -> None:
        inputs = InputThread(items, maxsize=4 * self.chunk_size)
        exhausted = False
        try:
            while True:
                while not exhausted and len(self.pending) < self.slots:
                    try:
                        item = inputs.get(timeout=0.05 if (self.pending or self.batch) else 0.5)
                    except queue.Empty:
                        idle = len(self.pending) < self.stats.threads
                        if self.batch and idle and time.monotonic() - self.batch_started > FLUSH_PARTIAL_AFTER:
                            self._submit()
                        break
                    if item is END:
                        exhausted = True
                        self._submit()
                        break
                    self._take(item)
                if not self.pending:
                    if exhausted:
                        return
                    continue
                blocking = exhausted or len(self.pending) >= self.slots
                try:
                    future = self.done.get(timeout=0.5) if blocking else self.done.get_nowait()
                except queue.Empty:
                    continue
                self._finish(future)
                while True:
                    try:
                        self._finish(self.done.get_nowait())
                    except queue.Empty:
                        break
        finally:
            inputs.stop()
            for future in list(self.pending):
                future.cancel()
            for items in self.pending.values():
                for item in items:
                    self.writer.release(item.key)
