"""The inputs of a scan, read on their own thread into a bounded queue (for the fronts that are
not asyncio: ``--workers`` and ``--dask``).

A thread, so that a slow pipe (``zmap | relaycheck scan -iL -``) never stalls the front; bounded,
so that a huge input never fills memory. The end marker is never dropped (the front would wait
for it forever); an error while reading (an unreadable list file) is raised by ``get``.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterable
from typing import Any

from relaycheck.scan.targets import Item

END = object()  # what ``get`` returns once every input has been read


class InputThread:
    def __init__(self, items: Iterable[Item], maxsize: int) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=maxsize)
        self._stop = threading.Event()
        self._failure: list[BaseException] = []
        self._thread = threading.Thread(target=self._produce, args=(items,), name="relaycheck-targets", daemon=True)
        self._thread.start()

    def _offer(self, value: Any) -> bool:
        """Put ``value`` however long the front is busy; False once stopped."""
        while not self._stop.is_set():
            with contextlib.suppress(queue.Full):
                self._queue.put(value, timeout=0.5)
                return True
        return False

    def _produce(self, items: Iterable[Item]) -> None:
        try:
            for item in items:
                if not self._offer(item):
                    return
        except BaseException as exc:  # raised in the front by get()
            self._failure.append(exc)
        self._offer(END)

    def get(self, timeout: float = 0.0) -> Any:
        """The next item, or ``END``; ``queue.Empty`` when none came within ``timeout`` seconds."""
        try:
            value = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
        except queue.Empty:
            if self._failure:
                raise self._failure[0] from None
            raise
        if value is END and self._failure:
            raise self._failure[0]
        return value

    def ready(self) -> bool:
        """An item (or the end) is waiting."""
        return not self._queue.empty()

    def stop(self) -> None:
        self._stop.set()
