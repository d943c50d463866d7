"""Benchmark: the exporter's /probe latency uncached vs cached, and a scrape storm against the cap.

Starts loopback behaviour servers and the exporter in this process (its own event loop in a
thread), then over real HTTP:

- uncached: ``--runs`` scrapes of one closed server with ``cache_ttl=0`` (a full check each);
- cached: the same number of scrapes with the result cached (the baseline above, same run);
- storm: ``--storm`` scrapes of distinct targets at once with ``--max-checks``/``--max-waiting``:
  how many were answered 200 and 503, the peak of checks running at once (sampled from the
  exporter's own gauge on every check start) and the wall time.

Usage: ``python bench/exporter.py [--runs 20] [--storm 40] [--max-checks 2] [--max-waiting 8]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support: the exporter's thread

from relaycheck.engine import EngineOptions
from relaycheck.hygiene import HygieneOptions
from relaycheck.monitor.exporter import ExporterSettings
from relaycheck.testing.servers import ServerThread
from tests.support.exporter import ExporterThread

ENGINE = EngineOptions(
    ext_recipients=("relaytest@outside-a.test", "relaytest@outside-b.test"),
    local_domain="relay.test",
    helo="bench.relaycheck.test",
    hygiene=HygieneOptions(ptr=False, dnsbl=False),
)


def get(ex: ExporterThread, path: str) -> tuple[int, float]:
    """The status of GET ``path`` and its wall time."""
    started = time.perf_counter()
    status, _ = ex.get(path, timeout=300)
    return status, time.perf_counter() - started


def latency(settings: ExporterSettings, server: ServerThread, runs: int) -> list[float]:
    with ExporterThread(settings) as ex:
        get(ex, f"/probe?target={server.address}")  # warm: the cached runs all hit the cache
        return [get(ex, f"/probe?target={server.address}")[1] for _ in range(runs)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--storm", type=int, default=40)
    parser.add_argument("--max-checks", type=int, default=2)
    parser.add_argument("--max-waiting", type=int, default=8)
    args = parser.parse_args()

    servers = [ServerThread("closed").start() for _ in range(max(1, args.storm))]
    ports = tuple(s.port for s in servers)
    base = ExporterSettings(engine=ENGINE, allow_private=True, ports=ports)
    uncached = latency(replace(base, cache_ttl=0), servers[0], args.runs)
    cached = latency(replace(base, cache_ttl=3600), servers[0], args.runs)
    u, c = statistics.median(uncached), statistics.median(cached)
    print(f"/probe uncached: median {u * 1000:.1f} ms (min {min(uncached) * 1000:.1f}, max {max(uncached) * 1000:.1f})")
    print(f"/probe cached:   median {c * 1000:.2f} ms (min {min(cached) * 1000:.2f}, max {max(cached) * 1000:.2f})")
    print(f"ratio uncached/cached: {u / c:.0f}x")

    settings = replace(base, max_checks=args.max_checks, max_waiting=args.max_waiting, cache_ttl=3600)
    with ExporterThread(settings) as ex:
        peak = 0
        stop = threading.Event()
        gauge = ex.exporter.metrics.running

        def sample() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, int(gauge._value.get()))
                stop.wait(0.001)

        sampler = threading.Thread(target=sample)
        sampler.start()
        statuses: list[int] = []
        lock = threading.Lock()

        def scrape(server: ServerThread) -> None:
            status, _ = get(ex, f"/probe?target={server.address}")
            with lock:
                statuses.append(status)

        started = time.perf_counter()
        threads = [threading.Thread(target=scrape, args=(s,)) for s in servers[: args.storm]]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - started
        stop.set()
        sampler.join()
        print(
            f"storm of {args.storm} distinct targets, max-checks {args.max_checks}, max-waiting {args.max_waiting}: "
            f"{statuses.count(200)} answered 200, {statuses.count(503)} answered 503 (busy), "
            f"checks run {ex.exporter.checks_started}, peak running {peak}, wall {wall:.2f} s"
        )
    for s in servers:
        s.stop()


if __name__ == "__main__":
    main()
