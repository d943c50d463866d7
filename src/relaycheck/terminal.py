"""How text output fits where it goes: colour only on a terminal and never with ``NO_COLOR``
(https://no-color.org), the terminal's width (``COLUMNS`` first, as shells and ``tput`` do), and
a fixed width when the output is a file or a pipe, so that saved reports do not depend on the
window they were produced in."""

from __future__ import annotations

import os
import shutil
from typing import TextIO

from relaycheck.render import Style

FILE_WIDTH = 110  # output to a file or a pipe
MIN_WIDTH = 40
MAX_WIDTH = 200  # beyond this, prose lines get too long to read


def is_terminal(stream: TextIO | None) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


def _columns() -> int | None:
    text = os.environ.get("COLUMNS", "").strip()
    return int(text) if text.isdigit() and int(text) > 0 else None


def style_for(stream: TextIO | None, *, verbose: bool = False) -> Style:
    """How a report for ``stream`` looks: colours on a terminal unless NO_COLOR, its width."""
    terminal = is_terminal(stream)
    color = terminal and not os.environ.get("NO_COLOR")
    width = _columns() or (shutil.get_terminal_size((FILE_WIDTH, 24)).columns if terminal else FILE_WIDTH)
    return Style(verbose=verbose, color=color, width=max(MIN_WIDTH, min(MAX_WIDTH, width)))


class StatusLine:
    """One line on a terminal's stderr, rewritten in place while a check waits (a silent server
    or a tarpit otherwise leaves a blank screen); cleared before the report is printed.

    Control sequences here are cursor movement (carriage return, erase line), not colour."""

    def __init__(self, stream: TextIO, width: int) -> None:
        self.stream = stream
        self.width = width
        self.replies = 0
        self.shown = False

    def exchange(self, *_: object) -> None:
        self.replies += 1

    def show(self, text: str) -> None:
        self.stream.write("\r\x1b[K" + text[: max(1, self.width - 1)])
        self.stream.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = False
