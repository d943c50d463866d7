"""Benchmark: ``relaycheck scan`` of a loopback population of 2,000 SMTP servers, full battery.

The population (``tests/support/population.py``: 5 % open relays, the rest closed with Postfix's
replies) runs in its own process, by default on the light asyncio server that answers byte for
byte like the aiosmtpd behaviour servers (``--population aiosmtpd`` for those: they cost ~4x the
CPU per host). The scanner runs as ``python -m relaycheck scan`` in another process (and its
``--workers``), so its CPU time (``wait4``: its workers included) and memory are its own.
Everything shares this machine's cores: the numbers include the population's load, as the goal
says. Measured in the same run:

- ``scan c=1000 w=N``: the scan with ``--workers N`` (default 2: one per core) at
  ``--concurrency 1000`` targets (hosts/s, CPU s per host, memory, peak targets in flight);
- ``scan c=333 w=N``: about 1,000 concurrent SMTP sessions (each target holds up to 3);
- ``scan c=1000 w=1``: the one-process scan, the baseline the workers are compared with;
- ``scan --dask local:2`` (with ``--dask``): the same on two local Dask worker processes;
- ``check``: ``relaycheck.check`` (the API the ``check`` command uses) on every address, to
  compare verdicts: the scan's verdict, confidence and evidence must equal check's, host by host;
- ``nmap --script smtp-open-relay`` on the same population, as the reference (when nmap is
  installed; ``--nmap-sample N`` limits it to the first N addresses), its verdicts compared with
  the ground truth.

Memory: ``peak RSS`` is the sum of the scan's processes' own peaks (VmHWM, from the scan's
metadata; ``wait4``'s ``ru_maxrss`` would count the benchmark's own pages, copied when it forks
the child); ``peak PSS`` sums the
proportional set size of the scan and its workers, sampled every 0.25 s from
``/proc/PID/smaps_rollup`` (forked workers share the front's pages: summing their RSS would count
those pages three times).

No DNS: PTR lookups are off (``--no-ptr``; loopback addresses have no public PTR and the bench
must not query anyone), DNSBL lookups are off by default in scans. Everything else of the battery
runs (relay probes, controls, the inspection session: VRFY/EXPN, STARTTLS check).

Usage: ``python bench/scan.py [--count 2000] [--concurrency 1000] [--workers 2] [--repeat 3] [--population
light|aiosmtpd] [--dask] [--nmap-sample N] [--no-check]``. As root nmap does its SYN port scan
first, as it would on a real network.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OUTSIDE = ("relaytest@outside-a.test", "relaytest@outside-b.test")
HELO = "bench.relaycheck.test"


@dataclass
class Measured:
    name: str
    hosts: int
    wall: float
    cpu: float
    peak_rss_mb: float
    extra: dict[str, Any]

    @property
    def rate(self) -> float:
        return self.hosts / self.wall if self.wall else 0.0


ROOT = Path(__file__).resolve().parents[1]


def start_population(count: int, mix: str, base: str, server: str) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.population", "--count", str(count), "--mix", mix, "--base", base,
         "--server", server],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,  # the test tooling, by path
    )
    assert process.stdout is not None
    ready = json.loads(process.stdout.readline())
    return process, int(ready["port"])


def stop_population(process: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = process.communicate(timeout=60)
    lines = [json.loads(x) for x in out.splitlines() if x.strip()]
    return lines[-1] if lines else {}


def _pss_kb(pid: int) -> int:
    """Proportional set size of ``pid`` and its descendants, in KiB (0 once they are gone)."""
    total = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                total += int(line.split()[1])
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                total += _pss_kb(int(child))
    except (OSError, ValueError):
        pass
    return total


def run_measured(name: str, command: list[str], hosts: int) -> tuple[Measured, str]:
    """Run ``command``, return wall time, its CPU (user+sys, its reaped children included), peak
    RSS of its largest process and the peak PSS of its whole process tree."""
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.append(process.stdout.read() if process.stdout else ""))
    reader.start()
    peak_pss = [0]
    done = threading.Event()

    def sample() -> None:  # a sampling interval is what a memory profile is: this is a bench, not a test
        while not done.wait(0.25):  # reading smaps costs the kernel time: not too often
            peak_pss[0] = max(peak_pss[0], _pss_kb(process.pid))

    sampler = threading.Thread(target=sample)
    sampler.start()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.monotonic() - started
    done.set()
    sampler.join()
    reader.join()
    process.returncode = os.waitstatus_to_exitcode(status)
    err = process.stderr.read() if process.stderr else ""
    if process.returncode not in (0, 1):
        raise SystemExit(f"{name} failed ({process.returncode}): {err[-2000:]}")
    cpu = usage.ru_utime + usage.ru_stime
    measured = Measured(name, hosts, wall, cpu, usage.ru_maxrss / 1024, {})
    measured.extra["peak_pss_mb"] = round(peak_pss[0] / 1024, 1)
    return measured, out[0] if out else ""


def scan_command(
    targets: Path, port: int, output: Path, concurrency: int, dask: bool, workers: int, extra: Sequence[str] = ()
) -> list[str]:
    command = [
        sys.executable, "-m", "relaycheck", "scan", "-iL", str(targets), "-p", str(port), "-o", str(output),
        "--include-reserved", "--no-ptr", "--rate", "0", "--per-subnet", "0", "--concurrency", str(concurrency),
        "--progress", "none", "--helo", HELO, "--timeout", "30",
    ]
    for address in OUTSIDE:
        command += ["--ext-recipient", address]
    if dask:
        command += ["--dask", "local:2", "--chunk-size", "250"]
    else:
        command += ["--workers", str(workers)]
    return command + list(extra)


def read_records(path: Path) -> dict[str, dict[str, Any]]:
    return {r["ip"]: r for r in (json.loads(line) for line in path.read_text().splitlines())}


def check_verdicts(addresses: list[str], port: int) -> tuple[dict[str, tuple[Any, ...]], float]:
    from relaycheck.api import CheckOptions, check
    from relaycheck.engine import EngineOptions
    from relaycheck.hygiene import HygieneOptions
    from relaycheck.render.json import target_report_dict

    options = CheckOptions(
        engine=EngineOptions(ext_recipients=OUTSIDE, helo=HELO, hygiene=HygieneOptions(ptr=False, dnsbl=False)),
        concurrency=200,
    )
    started = time.monotonic()
    report = asyncio.run(check([f"{a}:{port}" for a in addresses], options))
    took = time.monotonic() - started
    verdicts = {}
    for target in report.targets:
        v = target_report_dict(target)["verdict"]
        verdicts[str(target.target.address)] = (v["verdict"], v["confidence"], tuple(v["evidence"]))
    return verdicts, took


def nmap_reference(addresses: list[str], port: int, workdir: Path, truth: dict[str, str]) -> Measured | None:
    nmap = shutil.which("nmap")
    if nmap is None:
        return None
    targets = workdir / "nmap-targets.txt"
    targets.write_text("".join(f"{a}\n" for a in addresses))
    domain = OUTSIDE[0].rpartition("@")[2]
    # "+": run the script whatever the port (its portrule only knows 25/465/587)
    command = [nmap, "-n", "-Pn", "-T4", "-p", str(port), "--script", "+smtp-open-relay", "--script-args",
               f"smtp-open-relay.domain={domain},smtp-open-relay.to=relaytest,smtp-open-relay.from=antispam",
               "-iL", str(targets), "-oN", "-"]
    measured, out = run_measured("nmap smtp-open-relay", command, len(addresses))
    verdicts: Counter[str] = Counter()
    wrong = 0
    for block in re.split(r"(?:^|\n)Nmap scan report for ", out)[1:]:
        address = block.split()[0]
        if "Server is an open relay" in block:
            said = "open"
        elif "doesn't seem to be an open relay" in block:
            said = "closed"
        else:
            said = "other"
        verdicts[said] += 1
        wrong += said != truth.get(address)
    measured.extra["verdicts"] = dict(verdicts)
    measured.extra["wrong_vs_truth"] = wrong
    return measured


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--open-percent", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2, help="scan --workers for the main runs")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each scan; the table shows the median")
    parser.add_argument("--population", choices=("light", "aiosmtpd"), default="light",
                        help="the population's server implementation (same replies; aiosmtpd costs more CPU)")
    parser.add_argument("--dask", action="store_true", help="also measure --dask local:2")
    parser.add_argument("--nmap-sample", type=int, default=0, help="addresses nmap scans (0: all)")
    parser.add_argument("--no-check", action="store_true", help="skip the verdict comparison with check")
    parser.add_argument(
        "--scan-args", default="", help="extra scan options for every run, e.g. '--no-vrfy --no-tls-check'"
    )
    args = parser.parse_args()

    mix = f"open={args.open_percent},closed={100 - args.open_percent}"
    workdir = Path(tempfile.mkdtemp(prefix="relaycheck-bench-"))
    results: list[Measured] = []
    population, port = start_population(args.count, mix, "127.1.0.1", args.population)
    try:
        sys.path.insert(0, str(ROOT))  # the population is test tooling (tests/support), not in the package
        from tests.support.population import plan

        members = plan(args.count, {k: int(v) for k, v in (p.split("=") for p in mix.split(","))}, "127.1.0.1")
        addresses = list(members)
        targets = workdir / "targets.txt"
        targets.write_text("".join(f"{a}\n" for a in addresses))
        # --concurrency counts targets; each holds up to 3 sessions (--max-connections), so the second
        # run is "about 1,000 concurrent SMTP sessions"
        w = args.workers
        runs = [(f"scan c={args.concurrency} w={w}", args.concurrency, False, w),
                (f"scan c={args.concurrency // 3} w={w}", args.concurrency // 3, False, w),
                (f"scan c={args.concurrency} w=1", args.concurrency, False, 1),
                (f"scan c={args.concurrency // 3} w=1", args.concurrency // 3, False, 1)]
        if args.dask:
            runs.append((f"scan c={args.concurrency} dask:2", args.concurrency, True, 1))
        scanned: dict[str, dict[str, Any]] = {}
        # Trials round-robin over the configurations, so that whatever the machine accumulates
        # from run to run (TIME_WAIT sockets: ~8,000 per run) weighs on every configuration alike.
        trials: dict[int, list[Measured]] = {number: [] for number in range(len(runs))}
        for trial in range(args.repeat):
            for number, (name, concurrency, dask, workers) in enumerate(runs):
                output = workdir / f"{number}-{trial}.jsonl"
                command = scan_command(targets, port, output, concurrency, dask, workers, args.scan_args.split())
                measured, _ = run_measured(name, command, args.count)
                meta = json.loads(Path(f"{output}.meta.json").read_text())
                run = meta["runs"][-1]
                connections = Counter(r["connections_opened"] for r in read_records(output).values())
                # the scan's own peak RSS (VmHWM: wait4's ru_maxrss counts the bench's pages copied at fork)
                measured.peak_rss_mb = run["peak_rss_mb"] + sum(run.get("workers", {}).get("peak_rss_mb", []))
                measured.extra.update(verdicts=meta["counts"]["by_verdict"], statuses=meta["counts"]["by_status"],
                                      peak_in_flight=run.get("peak_in_flight"),
                                      connections_per_host=dict(sorted(connections.items())))
                trials[number].append(measured)
                scanned = scanned or read_records(output)
                output.unlink()
        for number in range(len(runs)):  # the median of a few: two cores shared by 4 processes are noisy
            ordered = sorted(trials[number], key=lambda m: m.wall)
            median = ordered[len(ordered) // 2]
            median.extra["trials_hosts_per_s"] = [round(m.rate) for m in trials[number]]
            results.append(median)
        if not args.no_check:
            reference, took = check_verdicts(addresses, port)
            def verdict(record: dict[str, Any]) -> tuple[Any, ...]:
                return record["verdict"], record["confidence"], tuple(e["probe_id"] for e in record["evidence"])

            mismatches = [a for a in addresses if verdict(scanned[a]) != reference[a]]
            wrong_truth = [a for a in addresses if scanned[a]["verdict"] != members[a]]
            print(f"check (API, concurrency 200): {len(reference)} hosts in {took:.1f} s "
                  f"({len(reference) / took:.0f} hosts/s); scan vs check mismatches: {len(mismatches)}; "
                  f"scan vs ground truth mismatches: {len(wrong_truth)}")
        sample = addresses if args.nmap_sample <= 0 else addresses[: args.nmap_sample]
        nmap = nmap_reference(sample, port, workdir, members)
        if nmap is None:
            print("nmap: not installed here, no reference run")
        else:
            results.append(nmap)
    finally:
        served = stop_population(population)
    print(f"population ({args.population}): {args.count} servers ({mix}) in one process: peak "
          f"{served.get('peak_connections')} "
          f"connections at once, {served.get('accepted')} in all, {served.get('cpu_s')} CPU s in all runs")
    header = f"{'run':<22} {'hosts':>6} {'wall s':>8} {'hosts/s':>8} {'CPU s/host':>11} {'peak RSS MB':>12}  notes"
    print("peak RSS: the scan's processes' own peaks (VmHWM), summed over the front and its workers (these share"
          " the front's pages: see peak_pss_mb); nmap: wait4's ru_maxrss")
    print(header)
    print("-" * len(header))
    for m in results:
        notes = ", ".join(f"{k}={v}" for k, v in m.extra.items() if v is not None)
        print(f"{m.name:<22} {m.hosts:>6} {m.wall:>8.2f} {m.rate:>8.1f} {m.cpu / m.hosts:>11.4f} "
              f"{m.peak_rss_mb:>12.1f}  {notes}")
    single = next(m for m in results if m.name.endswith(" w=1"))
    print(f"scan w={args.workers} / w=1 speed ratio (hosts/s): {results[0].rate / single.rate:.2f}x")
    if len(results) > 1 and results[-1].name.startswith("nmap"):
        print(f"scan / nmap speed ratio (hosts/s): {results[0].rate / results[-1].rate:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
