"""Progress on stderr: a rich progress bar on a terminal, one status line every few seconds
otherwise (zgrab2 style: logs and CI keep a readable trace)."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, TextIO


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class ProgressDisplay:
    """Counts records as they are written; subclasses show them."""

    def __init__(self, total: int | None, already: int = 0) -> None:
        self.total = total
        self.already = already  # records found in the output when resuming
        self.done = 0
        self.open = 0
        self.started = time.monotonic()

    def record(self, record: dict[str, Any]) -> None:
        self.done += 1
        if record.get("verdict") == "open":
            self.open += 1

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        count = f"{self.done + self.already:,}"
        eta = ""
        if self.total is not None:
            count += f"/{self.total:,}"
            left = max(0, self.total - self.done - self.already)
            eta = f"; ETA {_clock(left / rate)}" if rate > 0 else ""
        return f"{_clock(elapsed)}; {count} targets done; {rate:.1f} targets/s; {self.open} open{eta}"

    def start(self) -> None: ...

    def stop(self) -> None: ...


class LineProgress(ProgressDisplay):
    """One line every ``interval`` seconds on ``stream``, from a daemon thread."""

    def __init__(self, total: int | None, already: int = 0, *, interval: float = 5.0,
                 stream: TextIO | None = None) -> None:
        super().__init__(total, already)
        self.interval = interval
        self.stream = stream or sys.stderr
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="relaycheck-status", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._emit()

    def _emit(self) -> None:
        print(f"relaycheck scan: {self.line()}", file=self.stream, flush=True)

    def start(self) -> None:
        if self.interval > 0:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        if self.interval > 0:
            self._emit()


class RichProgress(ProgressDisplay):
    def __init__(self, total: int | None, already: int = 0) -> None:
        super().__init__(total, already)
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.progress import Progress as Bar

        self._bar = Bar(
            TextColumn("[bold]scan"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
            TextColumn("[red]{task.fields[open]} open"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=Console(stderr=True), transient=False,
        )
        self._task = self._bar.add_task("scan", total=total, completed=already, rate="", open=0)

    def record(self, record: dict[str, Any]) -> None:
        super().record(record)
        elapsed = time.monotonic() - self.started
        rate = f"{self.done / elapsed:.1f}/s" if elapsed > 0 else ""
        self._bar.update(self._task, advance=1, rate=rate, open=self.open)

    def start(self) -> None:
        self._bar.start()

    def stop(self) -> None:
        self._bar.stop()


def make_progress(total: int | None, already: int, *, mode: str, interval: float) -> ProgressDisplay:
    """``mode``: auto (bar on a terminal, lines otherwise), bar, lines, none."""
    if mode == "auto":
        mode = "bar" if sys.stderr.isatty() else "lines"
    if mode == "bar":
        return RichProgress(total, already)
    if mode == "lines":
        return LineProgress(total, already, interval=interval)
    return ProgressDisplay(total, already)
