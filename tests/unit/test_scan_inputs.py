"""The input thread of the --workers and --dask fronts: every item then the end, and an error while
reading the inputs reaches the front instead of ending the scan silently."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import pytest

from relaycheck.scan.inputs import END, InputThread
from relaycheck.scan.targets import Item, Kind


def items(count: int) -> list[Item]:
    return [Item(Kind.ADDRESS, f"192.0.2.{n}", 25, ip=f"192.0.2.{n}") for n in range(1, count + 1)]


def drain(inputs: InputThread) -> list[object]:
    got: list[object] = []
    while not got or got[-1] is not END:
        got.append(inputs.get(timeout=10))
    return got


def test_every_item_then_the_end_through_a_small_queue() -> None:
    given = items(50)
    assert drain(InputThread(given, maxsize=4)) == [*given, END]


def test_a_reading_error_is_raised_in_the_front() -> None:
    def broken() -> Iterator[Item]:
        yield from items(3)
        raise OSError("cannot read targets.txt")

    inputs = InputThread(broken(), maxsize=2)
    assert [inputs.get(timeout=10) for _ in range(3)] == items(3)
    with pytest.raises(OSError, match="cannot read"):
        inputs.get(timeout=10)


def test_nothing_waiting_is_queue_empty_and_stop_releases_the_reader() -> None:
    more = threading.Event()

    def slow() -> Iterator[Item]:
        yield from items(1)
        more.wait(timeout=30)  # a slow pipe: nothing more for now

    inputs = InputThread(slow(), maxsize=1)
    assert inputs.get(timeout=10) == items(1)[0]
    with pytest.raises(queue.Empty):
        inputs.get()
    inputs.stop()
    more.set()
    inputs._thread.join(timeout=10)
    assert not inputs._thread.is_alive()  # stopped: it did not block on a full queue or wait for the front
