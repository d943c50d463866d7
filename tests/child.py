"""Run the real CLI in a child process (behind the suite's network fence) and measure it.

The peak resident memory is the child's own, as the kernel counted it: ``wait4`` returns the
rusage of exactly that process (``ru_maxrss``, the high-water mark, in KiB on Linux). Waiting
uses a pidfd with a deadline, never a sleep.
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
    return subprocess.Popen(
        [sys.executable, str(LAUNCHER), json.dumps(argv)],
        stdin=subprocess.DEVNULL if stdin is None else stdin,
        stdout=stdout, stderr=stderr, env={**os.environ, **(env or {})}, cwd=cwd,
    )  # fmt: skip


def wait_measured(process: subprocess.Popen[bytes], timeout: float) -> tuple[int, float]:
    """Exit code and peak RSS (MB) of ``process``; kills it and fails when ``timeout`` passes."""
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
    return process.returncode, usage.ru_maxrss / 1024


def run(argv: list[str], *, stdin: IO[Any] | int | None = None, timeout: float = 60,
        env: dict[str, str] | None = None, cwd: Path | None = None) -> Finished:
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = start(argv, stdin=stdin, env=env, stdout=out, stderr=err, cwd=cwd)
        code, rss = wait_measured(process, timeout)
        out.seek(0)
        err.seek(0)
        return Finished(code, out.read().decode(errors="replace"), err.read().decode(errors="replace"), rss)
