"""Benchmark: relaycheck vs nmap's smtp-open-relay, against real MTAs with known ground truth.

Brings up the integration lab (the tests/integration/lab package: Postfix, Exim, OpenSMTPD,
Sendmail, postgrey in network namespaces, nothing routable), then for every lab server (the
verdict catalogue and the delivery/fingerprint extras alike, open ones included) runs, from the
lab's client namespace, alternately and ``--runs`` times each:

- relaycheck's full battery: ``python -m relaycheck check <ip> --json --ext-recipient ... ``
  with the options the server's ground truth needs (``--data-probe`` where the relay decision is
  made at DATA);
- ``nmap -n -Pn -p25 --script smtp-open-relay`` with the same outside domain.

It prints, per server: ground truth, each tool's verdict, median wall time of each and the
relaycheck/nmap time ratio, relaycheck's connections and round trips (from its JSON), and what
the Postfix log says about each tool's sessions: ``clean``, ``error-sleeps`` (smtpd slowed every
reply down after smtpd_soft_error_limit refusals) or ``too-many-errors`` (smtpd hung up). A
server whose relaycheck verdict is known to miss the truth until an engine rule is built is
marked ``*`` (ServerSpec.engine_gap).

The benchmark imports the lab package only (servers, namespaces, the relaycheck runner), never a
test module.

nmap has no "inconclusive": its "authentication needed" and "doesn't seem to be an open
relay" both count as a claim of "closed"; script errors count as "error".

Run as root after scripts/lab-deps: ``python bench/vs_nmap.py [--runs 3] [--server NAME ...]``.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the lab package lives next to the integration tests

# Only the lab package (servers, namespaces, the relaycheck runner), never a test module.
from tests.integration.lab import ALL_SERVERS, Lab, Server, ServerSpec, postfix_error_stats, start_lab  # noqa: E402
from tests.integration.lab.runner import check_server  # noqa: E402

NMAP_TIMEOUT_S = 300
RELAYCHECK_TIMEOUT_S = 300


@dataclass(frozen=True)
class ToolRun:
    verdict: str
    seconds: float
    postfix_log: str  # clean / error-sleeps / too-many-errors / n/a (not Postfix)
    connections: int | None = None
    round_trips: int | None = None
    detail: str = ""  # why a run ended in "error"


def nmap_verdict(output: str) -> tuple[str, str]:
    """(verdict label, the script's own line) from nmap's output."""
    match = re.search(r"smtp-open-relay: (.*)", output)
    if not match:
        return "error", "no smtp-open-relay output"
    text = match[1].strip()
    if "Server is an open relay" in text:
        return "open", text
    if "doesn't seem to be an open relay" in text:
        return "closed", text
    if "authentication needed" in text:
        return "closed (auth needed)", text
    return "error", text


def _claim(verdict: str) -> str:
    """The relay claim behind a verdict label, for comparing with the ground truth."""
    return verdict.split(" ", 1)[0]


def _postfix_flag(server: Server, log_offset: int, client_ip: str) -> str:
    if server.spec.mta != "postfix":
        return "n/a"
    stats = postfix_error_stats(server.settled_log(log_offset, client_ip), client_ip)
    if stats.too_many_errors:
        return "too-many-errors"
    if stats.error_sleeps:
        return "error-sleeps"
    return "clean"


@dataclass(frozen=True)
class Outcome:
    verdict: str
    connections: int | None = None
    round_trips: int | None = None
    detail: str = ""


def _timed(lab: Lab, server: Server, run: Callable[[], Outcome]) -> ToolRun:
    if server.spec.greylist:
        lab.reset_greylist(server.name)  # every run meets the greylisting afresh
    offset = server.log_size()
    started = time.monotonic()
    outcome = run()
    seconds = time.monotonic() - started
    flag = _postfix_flag(server, offset, lab.client_ip)
    return ToolRun(outcome.verdict, seconds, flag, outcome.connections, outcome.round_trips, outcome.detail)


def run_relaycheck(lab: Lab, server: Server, retry_budget: int | None) -> ToolRun:
    def run() -> Outcome:
        result = check_server(lab, server, retry_budget=retry_budget, timeout=RELAYCHECK_TIMEOUT_S)
        try:
            target = result.target
        except AssertionError as exc:
            return Outcome("error", detail=f"exit {result.exit_code}, no usable report: {exc}")
        verdict = target["verdict"]
        return Outcome(str(verdict["verdict"]), target.get("connections"), target.get("round_trips"))

    return _timed(lab, server, run)


def nmap_argv(lab: Lab, server: Server) -> list[str]:
    domain = lab.outside_domains[0]
    # nmap's recipients are relaytest@<domain> in its 16 address forms: the lab's outside
    # domain replaces its default (a real one), so no real domain appears in any probe.
    script_args = f"smtp-open-relay.domain={domain},smtp-open-relay.ip={server.ip}"
    return ["nmap", "-n", "-Pn", f"-p{server.port}", "--script", "smtp-open-relay",
            "--script-args", script_args, server.ip]  # fmt: skip


def run_nmap(lab: Lab, server: Server) -> ToolRun:
    def run() -> Outcome:
        done = subprocess.run(
            lab.client_argv(nmap_argv(lab, server)),
            capture_output=True,
            text=True,
            timeout=NMAP_TIMEOUT_S,
            check=False,
        )
        verdict, text = nmap_verdict(done.stdout + done.stderr)
        return Outcome(verdict, detail=text if verdict == "error" else "")

    return _timed(lab, server, run)


@dataclass(frozen=True)
class Row:
    spec: ServerSpec
    truth: str
    relaycheck: list[ToolRun]
    nmap: list[ToolRun]


def _summary(labels: Sequence[str]) -> str:
    counts = Counter(labels)
    if len(counts) == 1:
        return labels[0]
    return ", ".join(f"{label} x{n}" for label, n in counts.most_common())


def _median(runs: Sequence[ToolRun]) -> float:
    return statistics.median(r.seconds for r in runs)


def _median_int(values: Sequence[int | None]) -> str:
    present = [v for v in values if v is not None]
    return str(int(statistics.median(present))) if present else "-"


def render(rows: Sequence[Row]) -> str:
    header = ("server", "truth", "relaycheck", "nmap", "rc s", "nmap s", "rc/nmap",
              "rc conns", "rc RTs", "postfix log (rc)", "postfix log (nmap)")  # fmt: skip
    table = [header]
    for row in rows:
        rc_s, nmap_s = _median(row.relaycheck), _median(row.nmap)
        table.append((
            row.spec.name + (" *" if row.spec.engine_gap else ""),
            row.truth,
            _summary([r.verdict for r in row.relaycheck]),
            _summary([r.verdict for r in row.nmap]),
            f"{rc_s:.2f}",
            f"{nmap_s:.2f}",
            f"{rc_s / nmap_s:.2f}" if nmap_s > 0 else "-",
            _median_int([r.connections for r in row.relaycheck]),
            _median_int([r.round_trips for r in row.relaycheck]),
            _summary([r.postfix_log for r in row.relaycheck]),
            _summary([r.postfix_log for r in row.nmap]),
        ))  # fmt: skip
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
             for line in table]  # fmt: skip
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def scoreboard(rows: Sequence[Row]) -> str:
    def right(runs: Sequence[ToolRun], truth: str) -> int:
        return sum(_claim(r.verdict) == truth for r in runs)

    total = sum(len(r.relaycheck) for r in rows)
    rc_right = sum(right(r.relaycheck, r.truth) for r in rows)
    nmap_right = sum(right(r.nmap, r.truth) for r in rows)
    rc_total = sum(r.seconds for row in rows for r in row.relaycheck)
    nmap_total = sum(r.seconds for row in rows for r in row.nmap)
    return (
        f"verdicts matching ground truth: relaycheck {rc_right}/{total}, nmap {nmap_right}/{total}"
        f"\ntotal wall time: relaycheck {rc_total:.1f}s, nmap {nmap_total:.1f}s"
        f" (relaycheck/nmap {rc_total / nmap_total:.2f})"
    )


def error_notes(rows: Sequence[Row]) -> list[str]:
    notes = []
    for row in rows:
        for tool, runs in (("relaycheck", row.relaycheck), ("nmap", row.nmap)):
            for detail in sorted({r.detail for r in runs if r.detail}):
                notes.append(f"{tool} on {row.spec.name}: {detail}")
    return notes


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per tool and server")
    names = [s.name for s in ALL_SERVERS]
    parser.add_argument("--server", action="append", choices=names, help="only these servers")
    parser.add_argument(
        "--retry-budget",
        type=int,
        default=None,
        help="relaycheck --retry-budget (default: the tool's own); with a budget that lets "
        "greylisting clear, the greylisting server's ground truth is 'open'",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("nmap") is None:
        print("nmap missing: run scripts/lab-deps", file=sys.stderr)
        return 2
    specs = [s for s in ALL_SERVERS if not args.server or s.name in args.server]
    rows = []
    with start_lab(specs) as lab:
        print(f"lab up in {lab.setup_seconds:.1f}s; {args.runs} run(s) per tool and server")
        for server in lab.servers.values():
            spec = server.spec
            lets_greylist_clear = bool(args.retry_budget) and spec.expected_with_retry
            truth = spec.expected_with_retry if lets_greylist_clear else spec.expected
            rc_runs, nmap_runs = [], []
            for _ in range(args.runs):  # alternate, so drift hurts neither tool more
                rc_runs.append(run_relaycheck(lab, server, args.retry_budget))
                nmap_runs.append(run_nmap(lab, server))
            rows.append(Row(spec, str(truth), rc_runs, nmap_runs))
            print(f"  {spec.name}: relaycheck {_summary([r.verdict for r in rc_runs])}, "
                  f"nmap {_summary([r.verdict for r in nmap_runs])}", flush=True)  # fmt: skip
    print()
    print(render(rows))
    print()
    print(scoreboard(rows))
    for note in error_notes(rows):
        print(f"error: {note}")
    for row in rows:
        if row.spec.engine_gap:
            print(f"* {row.spec.name}: {row.spec.engine_gap}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
