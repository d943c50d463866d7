"""The Dask driver's bookkeeping with a stand-in client (no cluster): every input ends as exactly
one record, whatever the chunks return — failures, duplicates, missing records, a slow cluster."""

from __future__ import annotations

import pathlib
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from relaycheck.scan.distributed import DaskStats, _Driver
from relaycheck.scan.excludes import ExcludeList
from relaycheck.scan.output import JsonlOutput
from relaycheck.scan.runner import ScanConfig
from relaycheck.scan.targets import Item, Kind, expand, parse_inputs


class FakeFuture:
    def __init__(self, result: Callable[[], list[dict[str, Any]]]) -> None:
        self._result = result
        self._callbacks: list[Callable[[FakeFuture], None]] = []
        self._lock = threading.Lock()
        self._done = False
        self.released = False

    def add_done_callback(self, callback: Callable[[FakeFuture], None]) -> None:
        with self._lock:  # like Dask: a callback added after completion runs at once
            if not self._done:
                self._callbacks.append(callback)
                return
        callback(self)

    def finish(self) -> None:
        with self._lock:
            self._done = True
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(self)

    def result(self) -> list[dict[str, Any]]:
        return self._result()

    def release(self) -> None:
        self.released = True

    def cancel(self) -> None:
        pass


class FakeClient:
    """Runs each chunk "remotely" by answering from ``behaviour``; completes futures from a thread."""

    def __init__(self, behaviour: Callable[[int, list[Item]], list[dict[str, Any]]], delay: float = 0.0) -> None:
        self.behaviour = behaviour
        self.delay = delay
        self.submitted: list[list[Item]] = []

    def submit(self, _fn: object, items: list[Item], _skip: list[str], _config: object, **_: object) -> FakeFuture:
        number = len(self.submitted)
        self.submitted.append(items)
        future = FakeFuture(lambda: self.behaviour(number, items))
        threading.Timer(self.delay, future.finish).start()
        return future


def ok(item: Item) -> dict[str, Any]:
    return {"key": item.key, "ip": item.ip, "port": item.port, "status": "ok", "verdict": "closed"}


def drive(tmp_path: pathlib.Path, client: FakeClient, specs: list[str], chunk: int) -> tuple[Counter[str], DaskStats]:
    out = tmp_path / "out.jsonl"
    stats = DaskStats(workers=1, threads=1)
    items = expand(parse_inputs(specs, [], (25,)), ExcludeList(), 0)
    with JsonlOutput(str(out)) as writer:
        _Driver(client, ScanConfig(), writer, stats, chunk, None, None).run(items)
    import json

    return Counter(json.loads(line)["key"] for line in out.read_text().splitlines()), stats


def test_every_target_once_through_a_slow_cluster(tmp_path: pathlib.Path) -> None:
    # far more items than the inbox holds, chunks that take a while: the producer waits for room
    # (the end marker too: it used to be dropped after 5 s of a full inbox, hanging the driver)
    client = FakeClient(lambda _n, items: [ok(i) for i in items], delay=0.05)
    keys, stats = drive(tmp_path, client, ["192.0.2.0/25", "192.0.2.0/26"], chunk=4)  # the /26 repeats
    assert len(keys) == 128 and max(keys.values()) == 1
    assert stats.chunks == 32 and stats.duplicates == 64  # duplicates never left the client


def test_failed_chunk_and_missing_and_duplicate_records(tmp_path: pathlib.Path) -> None:
    def behaviour(number: int, items: list[Item]) -> list[dict[str, Any]]:
        if number == 1:
            raise RuntimeError("KilledWorker: boom")
        records = [ok(i) for i in items[:-1]]  # the last target of each chunk comes back missing
        return records + records[:1]  # and one comes back twice (a recomputed chunk)

    keys, stats = drive(tmp_path, FakeClient(behaviour), ["198.51.100.0/28"], chunk=4)
    assert len(keys) == 16 and max(keys.values()) == 1
    assert stats.failed_chunks == 1 and stats.duplicates == 3


def test_excluded_and_invalid_items_are_written_by_the_client(tmp_path: pathlib.Path) -> None:
    client = FakeClient(lambda _n, items: [ok(i) for i in items])
    out = tmp_path / "out.jsonl"
    items = [Item(Kind.EXCLUDED, "10.0.0.0/8", 25, reason="Private-Use", block="10.0.0.0/8"),
             Item(Kind.INVALID, "bad!", 25, reason="not a target"), Item(Kind.ADDRESS, "192.0.2.1", 25, ip="192.0.2.1")]
    with JsonlOutput(str(out)) as writer:
        _Driver(client, ScanConfig(), writer, DaskStats(workers=1, threads=1), 8, None, None).run(iter(items))
    assert [i.kind for chunk in client.submitted for i in chunk] == [Kind.ADDRESS]  # only tests travel
    assert sorted(out.read_text().count(s) for s in ('"excluded"', '"invalid input', '"ok"')) == [1, 1, 1]
