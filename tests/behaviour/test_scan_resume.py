"""Resume: a scan killed mid-way (SIGKILL, even inside a write) or stopped (SIGTERM) and rerun
with ``--resume`` has every target exactly once. The scan runs as a subprocess (with the network
fence); the tests wait for events (N records on disk), with deadlines, never fixed sleeps."""

from __future__ import annotations

import json
import pathlib
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from tests.support.population import Population, plan
from tests.waiting import wait_for

LAUNCHER = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "scan" / "fenced_relaycheck.py"
COMMON = [
    "--include-reserved", "--no-ptr", "--timeout", "2", "--per-subnet", "0",
    "--ext-recipient", "relaytest@outside-a.test", "--ext-recipient", "relaytest@outside-b.test",
    "--helo", "scan.relaycheck.test",
]  # fmt: skip
COUNT = 200


@pytest.fixture(scope="module")
def population() -> Iterator[Population]:
    with Population(plan(COUNT, {"open": 1, "closed": 3}, "127.5.0.1")) as running:
        yield running


def lines(path: pathlib.Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True) if path.exists() else []


def start_scan(targets: pathlib.Path, out: pathlib.Path, port: int, *extra: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, str(LAUNCHER), "scan", "-iL", str(targets), "-p", str(port), "-o", str(out),
               "--progress", "lines", "--status-interval", "0.5", *COMMON, *extra]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_for_records(process: subprocess.Popen[bytes], out: pathlib.Path, count: int, deadline: float = 30) -> int:
    """Block until ``count`` complete records are on disk (woken by each write to the file)."""
    done = [0]

    def enough() -> bool:
        if process.poll() is not None:
            pytest.fail(f"the scan ended early ({process.returncode}): {process.stderr.read().decode()}"
                        if process.stderr else "the scan ended early")
        done[0] = sum(line.endswith(b"\n") for line in lines(out))
        return done[0] >= count

    if not wait_for(enough, time.monotonic() + deadline, out):
        pytest.fail(f"fewer than {count} records after {deadline} s")
    return done[0]


def keys(out: pathlib.Path) -> Counter[str]:
    return Counter(json.loads(line)["key"] for line in lines(out))


@pytest.fixture
def target_list(population: Population, tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "targets.txt"
    path.write_text("".join(f"{ip}\n" for ip in population.members))
    return path


def expected_keys(population: Population) -> set[str]:
    return {f"{ip}|{population.port}|" for ip in population.members}


def test_resume_after_kill_and_torn_line(population: Population, target_list: pathlib.Path,
                                         tmp_path: pathlib.Path) -> None:
    out = tmp_path / "scan.jsonl"
    # --rate keeps the first run slow enough (about 40 hosts/s) to be killed half-way
    first = start_scan(target_list, out, population.port, "--rate", "160", "--concurrency", "20")
    seen = wait_for_records(first, out, 40)
    first.kill()  # SIGKILL: no cleanup at all
    first.wait(timeout=10)
    assert seen < COUNT, "the scan finished before it could be killed: the test proves nothing"
    written = keys(out)
    assert max(written.values()) == 1
    meta = json.loads((tmp_path / "scan.jsonl.meta.json").read_text())
    assert meta["complete"] is False and meta["end"] is None  # it says it did not finish

    # a crash inside a write(2) leaves a torn line: it must be cut, and its target scanned again
    victim = next(f"{ip}|{population.port}|" for ip in population.members if f"{ip}|{population.port}|" not in written)
    with out.open("ab") as handle:
        handle.write(json.dumps({"key": victim, "status": "ok"}).encode()[:25])

    second = start_scan(target_list, out, population.port, "--rate", "0", "--concurrency", "200", "--resume")
    _, err = second.communicate(timeout=60)
    assert second.returncode == 1, err.decode()  # open relays found
    assert b"dropped a torn last line" in err
    final = keys(out)
    assert set(final) == expected_keys(population)
    assert max(final.values()) == 1  # every target exactly once
    assert all(line.endswith(b"\n") for line in lines(out))
    meta = json.loads((tmp_path / "scan.jsonl.meta.json").read_text())
    assert meta["complete"] is True and meta["counts"]["records"] == COUNT
    killed, resumed = meta["runs"]
    assert killed["end"] is None  # the killed run's entry, as written when it started
    assert (resumed["resumed_records"], resumed["torn_bytes_dropped"]) == (len(written), 25)


def test_sigterm_stops_cleanly_then_resume(population: Population, target_list: pathlib.Path,
                                           tmp_path: pathlib.Path) -> None:
    out = tmp_path / "scan.jsonl"
    first = start_scan(target_list, out, population.port, "--rate", "160", "--concurrency", "20")
    wait_for_records(first, out, 20)
    first.send_signal(signal.SIGTERM)
    _, err = first.communicate(timeout=30)
    assert first.returncode == 130, err.decode()
    assert b"interrupted: rerun with --resume" in err
    stopped = keys(out)
    assert 20 <= len(stopped) < COUNT and max(stopped.values()) == 1
    meta = json.loads((tmp_path / "scan.jsonl.meta.json").read_text())
    assert meta["complete"] is False and meta["runs"][-1]["interrupted"] is True

    second = start_scan(target_list, out, population.port, "--rate", "0", "--concurrency", "200", "--resume")
    _, err = second.communicate(timeout=60)
    assert second.returncode == 1, err.decode()
    final = keys(out)
    assert set(final) == expected_keys(population) and max(final.values()) == 1
    meta = json.loads((tmp_path / "scan.jsonl.meta.json").read_text())
    assert meta["complete"] is True and len(meta["runs"]) == 2
    assert meta["runs"][1]["resumed_records"] == len(stopped)
    assert meta["counts"]["by_verdict"] == dict(sorted(Counter(json.loads(x)["verdict"] for x in lines(out)).items()))
