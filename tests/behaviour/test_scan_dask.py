"""Scale-out on a real Dask ``LocalCluster`` of worker processes: records stream into one file as
chunks finish; a worker killed mid-chunk has its chunk rerun elsewhere and every target still
appears exactly once; ``--dask local:2 --resume`` from the command line."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("distributed")

from distributed import Client, LocalCluster
from distributed.diagnostics.plugin import WorkerPlugin

from relaycheck.api import CheckOptions
from relaycheck.engine import EngineOptions
from relaycheck.hygiene import HygieneOptions
from relaycheck.scan.distributed import run_distributed
from relaycheck.scan.excludes import ExcludeList
from relaycheck.scan.output import JsonlOutput
from relaycheck.scan.runner import ScanConfig
from relaycheck.scan.targets import expand, parse_inputs
from tests.support.population import Population, plan

LAUNCHER = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "scan" / "fenced_relaycheck.py"
COUNT = 160
ENGINE = EngineOptions(
    ext_recipients=("relaytest@outside-a.test", "relaytest@outside-b.test"), helo="scan.relaycheck.test",
    command_timeout=5, greeting_timeout=5, connect_timeout=5, hygiene=HygieneOptions(ptr=False, dnsbl=False),
)


class FenceWorkers(WorkerPlugin):
    """The suite's network fence in every worker process, restarted ones included."""

    def setup(self, worker: Any) -> None:
        import socket

        from tests.conftest import _FencedSocket

        socket.socket = _FencedSocket  # type: ignore[misc]


@pytest.fixture(scope="module")
def population() -> Iterator[Population]:
    with Population(plan(COUNT, {"open": 1, "closed": 3}, "127.6.0.1")) as running:
        yield running


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    with Client(cluster) as connected:
        connected.register_plugin(FenceWorkers())
        yield connected
    cluster.close()


def items(population: Population) -> Iterator[Any]:
    return expand(parse_inputs(list(population.members), [], (population.port,)), ExcludeList(), 0)


def config(rate: float) -> ScanConfig:
    return ScanConfig(check=CheckOptions(engine=ENGINE), concurrency=64, rate=rate, per_subnet=0)


def read(path: pathlib.Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_every_target_once(population: Population, records: list[dict[str, Any]]) -> None:
    keys = Counter(r["key"] for r in records)
    assert set(keys) == {f"{ip}|{population.port}|" for ip in population.members}
    assert max(keys.values()) == 1
    assert {(population.members[r["ip"]], r["verdict"]) for r in records} == {("open", "open"), ("closed", "closed")}


def test_chunks_stream_into_the_file(client: Client, population: Population, tmp_path: pathlib.Path) -> None:
    out = tmp_path / "dask.jsonl"
    on_disk: list[int] = []
    with JsonlOutput(str(out)) as writer:
        stats = run_distributed(items(population), config(0), writer, client=client, chunk_size=16,
                                on_chunk=lambda _n: on_disk.append(len(out.read_bytes().splitlines())))
    assert (stats.workers, stats.threads, stats.chunks, stats.failed_chunks) == (2, 2, COUNT // 16, 0)
    assert on_disk[0] < COUNT and on_disk == sorted(on_disk)  # written chunk by chunk, not at the end
    assert_every_target_once(population, read(out))


def test_a_worker_killed_mid_scan_loses_and_repeats_nothing(client: Client, population: Population,
                                                            tmp_path: pathlib.Path) -> None:
    out = tmp_path / "killed.jsonl"
    killed: dict[str, Any] = {}

    def kill_a_busy_worker(_chunks_done: int) -> None:
        if killed:
            return
        busy = {w: list(keys) for w, keys in client.processing().items() if keys}
        if not busy:
            return
        worker, keys = next(iter(busy.items()))
        pid = client.run(os.getpid, workers=[worker])[worker]
        os.kill(pid, signal.SIGKILL)
        killed.update(worker=worker, keys=keys)

    # --rate keeps each chunk on its worker for a few tenths of a second: long enough to be killed
    with JsonlOutput(str(out)) as writer:
        stats = run_distributed(items(population), config(300), writer, client=client, chunk_size=16,
                                on_chunk=kill_a_busy_worker)
    assert killed, "no worker was busy when the first chunk finished: the test proves nothing"
    assert stats.failed_chunks == 0
    assert_every_target_once(population, read(out))
    # the scheduler's own log: the killed worker's chunks were started again after the kill
    stories = client.run_on_scheduler(
        lambda dask_scheduler, keys: {k: [t[2] for t in dask_scheduler.story(k)] for k in keys}, keys=killed["keys"]
    )
    for key, states in stories.items():
        assert states.count("processing") >= 2, (key, states)
        assert states[-1] in ("memory", "released", "forgotten"), (key, states)
    client.wait_for_workers(2, timeout=30)  # the nanny brought the worker back


def test_command_line_dask_local_with_resume(population: Population, tmp_path: pathlib.Path) -> None:
    targets = tmp_path / "targets.txt"
    members = list(population.members)
    out = tmp_path / "cli.jsonl"
    common = ["-p", str(population.port), "-o", str(out), "--include-reserved", "--no-ptr", "--rate", "0",
              "--per-subnet", "0", "--progress", "none", "--helo", "scan.relaycheck.test",
              "--ext-recipient", "relaytest@outside-a.test", "--ext-recipient", "relaytest@outside-b.test"]
    # first half without Dask, then everything with --dask local:2 --resume: only the rest is scanned
    targets.write_text("".join(f"{ip}\n" for ip in members[: COUNT // 2]))
    subprocess.run([sys.executable, str(LAUNCHER), "scan", "-iL", str(targets), *common], check=False, timeout=60)
    assert len(read(out)) == COUNT // 2
    targets.write_text("".join(f"{ip}\n" for ip in members))
    done = subprocess.run([sys.executable, str(LAUNCHER), "scan", "-iL", str(targets), *common, "--resume",
                           "--dask", "local:2", "--chunk-size", "20"], capture_output=True, timeout=120)
    assert done.returncode == 1, done.stderr.decode()
    assert_every_target_once(population, read(out))
    meta = json.loads((tmp_path / "cli.jsonl.meta.json").read_text())
    run = meta["runs"][-1]
    assert (run["mode"], run["resumed_records"], run["records_written"]) == ("dask", COUNT // 2, COUNT // 2)
    assert run["dask"]["workers"] == 2 and run["dask"]["chunks"] == (COUNT // 2) // 20
