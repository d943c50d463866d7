"""Run the real CLI in a child process (behind the suite's network fence) and measure it.

The peak resident memory is the child's own ``VmHWM``, which the launcher writes when the
process ends (``ru_maxrss`` from ``wait4`` would carry the high-water mark of this test process,
which forked it). A child killed before it could write falls back to ``ru_maxrss``. Waiting uses
a pidfd with a deadline, never a sleep.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

LAUNCHER = Path(__file__).resolve().parent / "fixtures" / "cli" / "fenced_argv.py"


@dataclass(frozen=True)
class Finished:
    code: int
    out: str
    err: str
    peak_rss_mb: float

    @property
    def err_lines(self) -> list[str]:
        return self.err.splitlines()


def start(argv: list[str], *, stdin: IO[Any] | int | None = None, env: dict[str, str] | None = None,
          stdout: IO[Any] | int | None = None, stderr: IO[Any] | int | None = None,
          cwd: Path | None = None) -> subprocess.Popen[bytes]:
    handle, peak_file = tempfile.mkstemp(prefix="relaycheck-peak-")
    os.close(handle)
    os.unlink(peak_file)  # the child creates it when it ends
    process = subprocess.Popen(
        [sys.executable, str(LAUNCHER), json.dumps(argv)],
        stdin=subprocess.DEVNULL if stdin is None else stdin,
        stdout=stdout, stderr=stderr, env={**os.environ, **(env or {}), "PEAK_RSS_FILE": peak_file}, cwd=cwd,
    )  # fmt: skip
    process.peak_file = peak_file  # type: ignore[attr-defined]
    return process


def wait_measured(process: subprocess.Popen[bytes], timeout: float) -> tuple[int, float]:
    """Exit code and peak RSS (MB) of ``process``; kills it and fails when ``timeout`` passes."""
    peak_file = getattr(process, "peak_file", None)
    pidfd = os.pidfd_open(process.pid)
    try:
        ready, _, _ = select.select([pidfd], [], [], timeout)
        if not ready:
            process.kill()
            process.wait()
            raise AssertionError(f"relaycheck did not finish within {timeout} s")
        _, status, usage = os.wait4(process.pid, 0)
    finally:
        os.close(pidfd)
    process.returncode = os.waitstatus_to_exitcode(status)
    if peak_file is not None:
        written = Path(peak_file).read_text().strip() if Path(peak_file).exists() else ""
        Path(peak_file).unlink(missing_ok=True)
        if written.isdigit():
            return process.returncode, int(written) / 1024
    return process.returncode, usage.ru_maxrss / 1024


def run(argv: list[str], *, stdin: IO[Any] | int | None = None, timeout: float = 60,
        env: dict[str, str] | None = None, cwd: Path | None = None) -> Finished:
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = start(argv, stdin=stdin, env=env, stdout=out, stderr=err, cwd=cwd)
        code, rss = wait_measured(process, timeout)
        out.seek(0)
        err.seek(0)
        return Finished(code, out.read().decode(errors="replace"), err.read().decode(errors="replace"), rss)
