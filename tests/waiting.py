"""Waiting on events in tests: the kernel tells us when a file or directory changes (inotify).

Tests that wait for something another process writes (log lines, records, delivered messages)
block on inotify until a change arrives, then look again; a deadline bounds the whole wait. No
sleeping: the test wakes when the thing it waits for may have happened, not after a guess.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
# modified, attributes, written and closed, created, moved in or out, deleted
_EVENTS = 0x002 | 0x004 | 0x008 | 0x040 | 0x080 | 0x100 | 0x200

_libc = ctypes.CDLL(None, use_errno=True)


class FileWatch:
    """Watch paths: a directory for changes to anything in it, a file through its directory (so
    that it may not exist yet). ``wait(timeout)`` returns when something changed, or at timeout."""

    def __init__(self, *paths: Path) -> None:
        self._fd = _libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        for path in paths:
            directory = path if path.is_dir() else path.parent
            if _libc.inotify_add_watch(self._fd, os.fsencode(directory), _EVENTS) < 0:
                raise OSError(ctypes.get_errno(), f"inotify_add_watch {directory} failed")

    def wait(self, timeout: float) -> bool:
        ready, _, _ = select.select([self._fd], [], [], max(0.0, timeout))
        if not ready:
            return False
        try:
            while os.read(self._fd, 65536):  # drain: the events themselves are not needed
                pass
        except OSError as exc:
            if exc.errno != errno.EAGAIN:
                raise
        return True

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> FileWatch:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()


def wait_for(check: Callable[[], bool], deadline: float, *paths: Path) -> bool:
    """True as soon as ``check()`` holds, looking again at each change to ``paths``; False when
    ``deadline`` (time.monotonic()) passes first."""
    with FileWatch(*paths) as watch:
        while not check():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            watch.wait(left)
    return True
