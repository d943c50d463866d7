"""SIGTERM and SIGINT end a scan cleanly (exit 130, resumable) wherever it runs: here as a
background job of a ``sh -c`` script, where the shell starts the job with SIGINT ignored (the
case where re-sending SIGINT to itself did nothing). In-process and ``--workers`` modes; the
test waits on records appearing on disk, never on a sleep."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.child import LAUNCHER
from tests.support.population import Population, plan
from tests.waiting import wait_for

COUNT = 60
COMMON = ["--include-reserved", "--no-ptr", "--timeout", "5", "--per-subnet", "0", "--progress", "none",
          "--ext-recipient", "relaytest@outside-a.test", "--ext-recipient", "relaytest@outside-b.test",
          "--helo", "scan.relaycheck.test"]  # fmt: skip


@pytest.fixture(scope="module")
def population() -> Iterator[Population]:
    with Population(plan(COUNT, {"closed": 1}, "127.7.0.1"), server="light") as running:
        yield running


def scan_argv(population: Population, targets: Path, out: Path, *extra: str) -> list[str]:
    return ["scan", "-iL", str(targets), "-p", str(population.port), "-o", str(out), *COMMON, *extra]


def shell_line(argv: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in [sys.executable, str(LAUNCHER), json.dumps(argv)])


def records(out: Path) -> list[bytes]:
    return [line for line in out.read_bytes().splitlines(keepends=True) if line.endswith(b"\n")] if out.exists() else []


def test_a_background_job_of_a_script_has_sigint_ignored(tmp_path: Path) -> None:
    """The premise: without this the test below would prove nothing about background jobs."""
    status = tmp_path / "status"
    subprocess.run(["sh", "-c", f"cat /proc/self/status > {shlex.quote(str(status))} & wait"], check=True, timeout=30)
    ignored = int(next(line for line in status.read_text().splitlines() if line.startswith("SigIgn:")).split()[1], 16)
    assert ignored & (1 << (signal.SIGINT - 1))


MODES = {"one-process": [], "workers": ["--workers", "2"], "dask": ["--dask", "local:1", "--chunk-size", "2"]}
CASES = [(signal.SIGTERM, m) for m in MODES] + [(signal.SIGINT, m) for m in ("one-process", "workers")]


@pytest.mark.parametrize(("signum", "mode"), [(s, MODES[m]) for s, m in CASES], ids=[f"{s.name}-{m}" for s, m in CASES])
def test_a_signal_stops_a_background_scan_cleanly_and_it_resumes(
    population: Population, tmp_path: Path, signum: signal.Signals, mode: list[str]
) -> None:
    targets = tmp_path / "targets.txt"
    targets.write_text("".join(f"{ip}\n" for ip in population.members))
    out = tmp_path / "scan.jsonl"
    pid_file = tmp_path / "pid"
    err = tmp_path / "err"
    # about 10 hosts a second: slow enough to be stopped half-way
    argv = scan_argv(population, targets, out, "--rate", "10", "--concurrency", "4", *mode)
    script = f"{shell_line(argv)} 2> {shlex.quote(str(err))} & echo $! > {shlex.quote(str(pid_file))}; wait $!"
    shell = subprocess.Popen(["sh", "-c", script])
    try:
        assert wait_for(lambda: len(records(out)) >= 3, time.monotonic() + 60, tmp_path), "no records appeared"
        os.kill(int(pid_file.read_text()), signum)
        assert shell.wait(timeout=60) == 130, err.read_text()  # `wait $!` hands the scan's exit code on
    finally:
        if shell.poll() is None:
            shell.kill()
            shell.wait()
    assert "interrupted: rerun with --resume to continue" in err.read_text()
    assert "Traceback" not in err.read_text()
    stopped = Counter(json.loads(line)["key"] for line in records(out))
    assert 3 <= len(stopped) < COUNT and max(stopped.values()) == 1
    meta = json.loads((tmp_path / "scan.jsonl.meta.json").read_text())
    assert meta["complete"] is False and meta["runs"][-1]["interrupted"] is True

    resumed = subprocess.run([sys.executable, str(LAUNCHER), json.dumps(
        scan_argv(population, targets, out, "--rate", "0", "--resume"))], capture_output=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr.decode()
    final = Counter(json.loads(line)["key"] for line in records(out))
    assert set(final) == {f"{ip}|{population.port}|" for ip in population.members}
    assert max(final.values()) == 1
    assert json.loads((tmp_path / "scan.jsonl.meta.json").read_text())["complete"] is True
