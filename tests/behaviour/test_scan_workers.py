"""``relaycheck scan --workers N``: the scan in N local processes writes exactly what the
one-process scan writes; a worker killed mid-scan is replaced and no target is lost or written
twice; SIGTERM stops the front and every worker, and ``--resume`` finishes the job.

The scans run as subprocesses through the fenced launcher (the suite's network fence, inherited
by the forked workers); the tests wait for records on disk (inotify), never for time."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from relaycheck.scan.runner import ScanConfig
from relaycheck.scan.targets import Item, Kind
from relaycheck.scan.workers import WorkerPool
from tests.support.population import Population, plan
from tests.waiting import wait_for

LAUNCHER = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "scan" / "fenced_relaycheck.py"
COMMON = [
    "--include-reserved", "--no-ptr", "--timeout", "5", "--progress", "none",
    "--ext-recipient", "relaytest@outside-a.test", "--ext-recipient", "relaytest@outside-b.test",
    "--helo", "scan.relaycheck.test",
]  # fmt: skip
MIX = {"open": 4, "closed": 10, "percent-only": 1, "relay-denied-4xx": 1, "reject-everything": 1, "catch-all": 1,
       "no-pipelining": 1, "multiline": 1, "refused": 1}  # fmt: skip
COUNT = 240


@pytest.fixture(scope="module")
def population() -> Iterator[Population]:
    with Population(plan(COUNT, MIX, "127.7.0.1")) as running:
        yield running


@pytest.fixture
def target_list(population: Population, tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "targets.txt"
    path.write_text("".join(f"{ip}\n" for ip in population.members))
    return path


def scan(targets: pathlib.Path, out: pathlib.Path, port: int, *extra: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, str(LAUNCHER), "scan", "-iL", str(targets), "-p", str(port), "-o", str(out),
               *COMMON, *extra]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def finish(process: subprocess.Popen[bytes], timeout: float = 120) -> str:
    _, err = process.communicate(timeout=timeout)
    assert process.returncode == 1, err.decode()  # open relays found
    return err.decode()


def records(path: pathlib.Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


def outcome(record: dict[str, Any]) -> tuple[Any, ...]:
    return record["status"], record["verdict"], record["confidence"], tuple(e["probe_id"] for e in record["evidence"])


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in pathlib.Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def wait_for_records(process: subprocess.Popen[bytes], out: pathlib.Path, count: int) -> None:
    def enough() -> bool:
        if process.poll() is not None:
            pytest.fail(f"the scan ended early ({process.returncode})")
        return sum(1 for line in (out.read_bytes().splitlines(keepends=True) if out.exists() else [])
                   if line.endswith(b"\n")) >= count

    if not wait_for(enough, time.monotonic() + 60, out):
        pytest.fail(f"fewer than {count} records after 60 s")


def assert_every_target_once(population: Population, written: list[dict[str, Any]]) -> None:
    keys = Counter(r["key"] for r in written)
    assert set(keys) == {f"{ip}|{population.port}|" for ip in population.members}
    assert max(keys.values()) == 1


def test_workers_write_what_one_process_writes(population: Population, target_list: pathlib.Path,
                                               tmp_path: pathlib.Path) -> None:
    fast = ["--rate", "0", "--concurrency", "240", "--per-subnet", "0"]
    single, multi = tmp_path / "one.jsonl", tmp_path / "three.jsonl"
    finish(scan(target_list, single, population.port, *fast))
    finish(scan(target_list, multi, population.port, *fast, "--workers", "3"))
    one, three = records(single), records(multi)
    assert_every_target_once(population, three)
    assert {r["key"]: outcome(r) for r in three} == {r["key"]: outcome(r) for r in one}
    assert Counter(r["verdict"] for r in three)["open"] >= 40  # the mix is really there
    meta = json.loads((tmp_path / "three.jsonl.meta.json").read_text())
    run = meta["runs"][-1]
    assert meta["complete"] is True and run["mode"] == "workers"
    assert (run["workers"]["processes"], run["workers"]["restarts"]) == (3, 0) and run["peak_in_flight"] > 3
    assert len(run["workers"]["peak_rss_mb"]) == 3 and run["cpu_s"]["workers"] > 0


def test_a_killed_worker_is_replaced_and_nothing_is_lost_or_repeated(population: Population,
                                                                      target_list: pathlib.Path,
                                                                      tmp_path: pathlib.Path) -> None:
    out = tmp_path / "killed.jsonl"
    # --rate keeps the scan running long enough (about 40 hosts/s) to kill a worker half-way
    process = scan(target_list, out, population.port, "--workers", "2", "--rate", "160", "--concurrency", "20")
    wait_for_records(process, out, 30)
    workers = children(process.pid)
    assert len(workers) == 2, workers
    os.kill(workers[0], signal.SIGKILL)
    assert len(records(out)) < COUNT, "the scan finished before the kill: the test proves nothing"
    finish(process)
    assert_every_target_once(population, records(out))
    run = json.loads((tmp_path / "killed.jsonl.meta.json").read_text())["runs"][-1]
    assert (run["workers"]["processes"], run["workers"]["restarts"]) == (2, 1)


def test_sigterm_stops_every_worker_then_resume(population: Population, target_list: pathlib.Path,
                                                tmp_path: pathlib.Path) -> None:
    out = tmp_path / "stopped.jsonl"
    first = scan(target_list, out, population.port, "--workers", "2", "--rate", "160", "--concurrency", "20")
    wait_for_records(first, out, 20)
    workers = children(first.pid)
    first.send_signal(signal.SIGTERM)
    _, err = first.communicate(timeout=30)
    assert first.returncode == 130, err.decode()
    for pid in workers:  # the front reaped them: none is left running
        assert not pathlib.Path(f"/proc/{pid}").exists() or "Z" in pathlib.Path(f"/proc/{pid}/stat").read_text()
    stopped = Counter(r["key"] for r in records(out))
    assert 20 <= len(stopped) < COUNT and max(stopped.values()) == 1

    second = scan(target_list, out, population.port, "--workers", "2", "--rate", "0", "--concurrency", "200",
                  "--resume")
    finish(second)
    assert_every_target_once(population, records(out))
    meta = json.loads((tmp_path / "stopped.jsonl.meta.json").read_text())
    assert meta["complete"] is True and meta["runs"][1]["resumed_records"] == len(stopped)


def test_routing_keeps_a_subnet_in_one_worker_and_spreads_addresses() -> None:
    def item(ip: str) -> Item:
        return Item(Kind.ADDRESS, ip, 25, ip=ip)

    addresses = [f"10.0.{n // 200}.{n % 200 + 1}" for n in range(800)]
    capped = WorkerPool.__new__(WorkerPool)  # routing only: no processes
    capped.by_subnet, capped.slots = True, [object(), object(), object()]  # type: ignore[list-item]
    by_subnet: dict[str, set[int]] = {}
    for ip in addresses:
        by_subnet.setdefault(ip.rsplit(".", 1)[0], set()).add(id(capped._route(item(ip))))
    assert all(len(slots) == 1 for slots in by_subnet.values())  # the per-subnet cap holds in one worker

    uncapped = WorkerPool.__new__(WorkerPool)
    uncapped.by_subnet, uncapped.slots = False, capped.slots
    shares = Counter(id(uncapped._route(item(ip))) for ip in addresses)
    assert sorted(shares.values()) == [266, 267, 267]  # even, whatever the subnets
    v6 = Counter(id(capped._route(item(f"2001:db8:0:{n}::1"))) for n in range(30))
    assert len(v6) == 3


def test_the_pool_shares_rate_and_concurrency() -> None:
    config = ScanConfig(concurrency=100, rate=90.0)
    assert (config.share(3).concurrency, config.share(3).rate) == (34, 30.0)


def test_names_excludes_and_bad_lines_through_the_workers(population: Population, tmp_path: pathlib.Path) -> None:
    """Domains (every MX), a pinned CSV line, an MX in an excluded block, NXDOMAIN, null MX and a bad
    line: the front writes what needs no test, the workers resolve and test the rest; the file is
    the one-process scan's."""
    from relaycheck.testing.dnsserver import DnsServerThread

    a, b, c = [ip for ip, behaviour in population.members.items() if behaviour in ("open", "closed")][:3]
    port = population.port
    zone = {
        ("example.test", "MX"): ["10 mx1.example.test.", "20 mx2.example.test."],
        ("mx1.example.test", "A"): [a],
        ("mx2.example.test", "A"): [b],
        ("other.test", "MX"): ["10 mx1.example.test."],  # the same MX host under a second name
        ("internal.test", "MX"): ["10 mx.internal.test."],
        ("mx.internal.test", "A"): [c],
        ("nullmx.test", "MX"): ["0 ."],
    }
    targets = tmp_path / "names.txt"
    targets.write_text("example.test\nother.test\ninternal.test\nnxdomain.test\nnullmx.test\n"
                       f"{a},pinned.test,tagged,{port}\nnot/a/target\n")

    def fields(path: pathlib.Path) -> dict[str, tuple[Any, ...]]:
        return {r["key"]: (r["status"], r["verdict"], r["host"], r["domain"], r["tag"]) for r in records(path)}

    outputs = {}
    with DnsServerThread(zone) as dns:
        for workers in ("1", "2"):
            out = tmp_path / f"names-{workers}.jsonl"
            process = scan(targets, out, port, "--workers", workers, "--resolver", dns.address, "--exclude", c,
                           "--rate", "0", "--per-subnet", "0")
            _, err = process.communicate(timeout=120)
            assert process.returncode in (0, 1), err.decode()
            outputs[workers] = fields(out)
        # resumed: the names' keys in the file (and an invalid line's key, which has no fields) are
        # found again; nothing is tested or written twice
        again = scan(targets, tmp_path / "names-2.jsonl", port, "--workers", "2", "--resolver", dns.address,
                     "--exclude", c, "--rate", "0", "--per-subnet", "0", "--resume")
        _, err = again.communicate(timeout=120)
        assert again.returncode in (0, 1), err.decode()
        assert b"0 records written" in err
    assert Counter(r["key"] for r in records(tmp_path / "names-2.jsonl")) == dict.fromkeys(outputs["2"], 1)
    assert outputs["2"] == outputs["1"]
    got = outputs["2"]
    assert got[f"{a}|{port}|example.test"][2:4] == ("mx1.example.test", "example.test")
    assert got[f"{a}|{port}|other.test"][0] == "ok"  # one host, two names: a record for each name
    assert got[f"{c}|{port}|internal.test"][0] == "excluded"
    assert got[f"|{port}|nxdomain.test"][0] == "error" and got["!not/a/target"][0] == "error"
    assert got[f"{a}|{port}|pinned.test"][3:] == ("pinned.test", "tagged")
    assert len(got) == 8
