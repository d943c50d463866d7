"""SIGINT and SIGTERM end any command cleanly (exit 130), wherever the process runs.

Two traps this avoids:
- a background job of a non-interactive shell (``relaycheck scan … &`` in a script), and some
  service managers, start the process with SIGINT *ignored*; re-sending SIGINT to ourselves
  then does nothing, so SIGTERM must not be built on that;
- ``asyncio.Runner`` cancels its main task cleanly on SIGINT, but only installs that handler when
  SIGINT has Python's default handler when the loop starts.

So while a command runs, SIGINT has Python's default handler (asyncio replaces it with its own
while a loop runs), and SIGTERM calls whatever handles SIGINT at that moment: asyncio's clean
cancellation inside a loop, ``KeyboardInterrupt`` outside one. Both end in the CLI's one
"interrupted" line and exit 130.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _as_sigint(_signum: int, frame: FrameType | None) -> None:
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler) and handler is not _as_sigint:
        handler(signal.SIGINT, frame)
        return
    raise KeyboardInterrupt


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within: SIGINT and SIGTERM raise ``KeyboardInterrupt`` (or cancel the running asyncio
    main task). Restores the previous handlers after; does nothing outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _as_sigint)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
