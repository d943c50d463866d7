"""Waiting on events in tests: the kernel tells us when a file or directory changes (inotify).

Tests that wait for something another process writes (log lines, records, delivered messages)
block on inotify until a change arrives, then look again; a deadline bounds the whole wait. No
sleeping: the test wakes when the thing it waits for may have happened, not after a guess.

Other kernel events can wake the same wait: any file descriptor that becomes readable (a socket
with data, a pidfd whose process exited).
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
# modified, attributes, written and closed, created, moved in or out, deleted
_EVENTS = 0x002 | 0x004 | 0x008 | 0x040 | 0x080 | 0x100 | 0x200

_libc = ctypes.CDLL(None, use_errno=True)


class FileWatch:
    """Watch paths: a directory for changes to anything in it, a file through its directory (so
    that it may not exist yet). ``wait(timeout)`` returns when something changed, or at timeout.

    ``fds`` are more file descriptors whose readability also ends a wait (a socket with data, a
    pidfd of a process that exited). They are not read here: the caller consumes what it needs,
    or stops waiting, since a descriptor left readable ends every later wait at once.
    """

    def __init__(self, *paths: Path, fds: Sequence[int] = ()) -> None:
        self._fds = tuple(fds)
        self._fd = _libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        for path in paths:
            directory = path if path.is_dir() else path.parent
            if _libc.inotify_add_watch(self._fd, os.fsencode(directory), _EVENTS) < 0:
                raise OSError(ctypes.get_errno(), f"inotify_add_watch {directory} failed")

    def wait(self, timeout: float) -> bool:
        poller = select.poll()  # not select(): no FD_SETSIZE limit on descriptor numbers
        for fd in (self._fd, *self._fds):
            poller.register(fd, select.POLLIN)
        ready = {fd for fd, _ in poller.poll(max(0.0, timeout) * 1000)}
        if not ready:
            return False
        if self._fd not in ready:
            return True
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


def wait_for(check: Callable[[], bool], deadline: float, *paths: Path, fds: Sequence[int] = ()) -> bool:
    """True as soon as ``check()`` holds, looking again at each change to ``paths`` and whenever
    one of ``fds`` is readable; False when ``deadline`` (time.monotonic()) passes first."""
    with FileWatch(*paths, fds=fds) as watch:
        while not check():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            watch.wait(left)
    return True
