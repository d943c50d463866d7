"""Benchmark: one full battery against local open and closed servers, with a simulated RTT.

Loopback has no latency, so round trips cost nothing there and every strategy looks fast. This
script puts a delaying TCP proxy in front of each aiosmtpd server (each chunk of bytes is
forwarded after RTT/2, in order, both ways), which is what a WAN does to a pipelined batch, and
compares in the same run:

- relaycheck: the engine as shipped (<=3 connections, pipelined chunks of <=9 refusals, one
  transaction per sender, stop when proven);
- relaycheck --exhaustive: every probe even once proven;
- baseline: nmap's strategy with the same probes — one connection, RSET/MAIL/RCPT in lockstep.

It prints wall time, connections, round trips and probes for each, the MAIL/RCPT/RSET commands
and outside recipients accepted as the server counted them, and the baseline/relaycheck ratio.
Usage: ``python bench/battery.py [--rtt-ms 50] [--runs 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from dataclasses import dataclass

from relaycheck.catalogue import Slots, plan_probes
from relaycheck.engine import EngineOptions, check_target
from relaycheck.hygiene import HygieneOptions
from relaycheck.model import Target
from relaycheck.smtp.session import SessionConfig, SmtpSession
from relaycheck.smtp.wire import mail_from, rcpt_to
from relaycheck.testing.servers import ServerThread

OUTSIDE = ("relaytest@outside-a.test", "relaytest@outside-b.test")


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Forward bytes after ``delay`` seconds each, preserving order (a one-way link latency)."""
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            if not data:
                writer.close()
                return
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            writer.write(data)
            await writer.drain()

    sender = asyncio.create_task(deliver())
    while True:
        data = await reader.read(65536)
        await queue.put((time.monotonic() + delay, data))
        if not data:
            break
    await sender


async def start_proxy(target_port: int, rtt: float) -> asyncio.Server:
    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", target_port)
        try:
            await asyncio.gather(
                _pump(client_r, server_w, rtt / 2), _pump(server_r, client_w, rtt / 2), return_exceptions=True
            )
        except asyncio.CancelledError:  # the proxy is shut down at the end of a measurement
            client_w.close()
            server_w.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


@dataclass
class Run:
    wall: float
    connections: int
    round_trips: int
    probes: int
    verdict: str
    commands: int = 0  # MAIL, RCPT and RSET the server saw
    outside: int = 0  # RCPTs to an outside domain the server saw


async def relaycheck_run(port: int, exhaustive: bool = False) -> Run:
    # The battery alone: no DNS (benchmarks never touch real DNS) and no hygiene session.
    battery_only = HygieneOptions(ptr=False, dnsbl=False, tls=False, vrfy=False)
    options = EngineOptions(
        ext_recipients=OUTSIDE, local_domain="relay.test", helo="bench.relaycheck.test", hygiene=battery_only,
        exhaustive=exhaustive,
    )
    started = time.monotonic()
    report = await check_target(Target("127.0.0.1", port, address="127.0.0.1"), options)
    return Run(
        time.monotonic() - started,
        len(report.connections),
        report.round_trips,
        sum(o.outcome != "skipped" for o in report.observations),
        str(report.verdict.kind),
    )


async def baseline_run(port: int) -> Run:
    """nmap's smtp-open-relay strategy: one connection, every probe RSET/MAIL/RCPT in lockstep."""
    started = time.monotonic()
    session = SmtpSession("127.0.0.1", port, SessionConfig(helo_name="bench.relaycheck.test"))
    await session.connect()
    await session.ehlo()
    slots = Slots(OUTSIDE, "relaycheck@outside-b.test", "relay.test", "mx.relay.test", "[127.0.0.1]", "nobody-x")
    probes = plan_probes(slots, optional=False)  # the same default battery as relaycheck's
    accepted = 0
    for probe in probes:
        await session.command("RSET")
        mail = await session.command(mail_from(probe.mail_from))
        if mail.code // 100 == 2:
            rcpt = await session.command(rcpt_to(probe.rcpt_to))
            accepted += rcpt.code // 100 == 2
    await session.quit()
    return Run(time.monotonic() - started, 1, session.round_trips, len(probes), f"{accepted} accepted")


async def measure(behaviour: str, rtt: float, runs: int) -> dict[str, list[Run]]:
    strategies = {
        "relaycheck": lambda port: relaycheck_run(port),
        "exhaustive": lambda port: relaycheck_run(port, exhaustive=True),
        "baseline": baseline_run,
    }
    measured: dict[str, list[Run]] = {}
    with ServerThread(behaviour) as server:
        proxy = await start_proxy(server.port, rtt)
        port = proxy.sockets[0].getsockname()[1]
        for name, strategy in strategies.items():
            measured[name] = []
            for _ in range(runs):
                del server.handler.commands[:]
                run = await strategy(port)
                seen = [c for c in server.handler.commands if c.split(" ", 1)[0] in ("MAIL", "RCPT", "RSET")]
                run.commands = len(seen)
                run.outside = sum(c.startswith("RCPT") and "@outside-" in c for c in seen)
                measured[name].append(run)
        proxy.close()
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rtt-ms", type=float, default=50.0, help="simulated round-trip time")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rtt = args.rtt_ms / 1000
    print(f"full battery, simulated RTT {args.rtt_ms:g} ms, median of {args.runs} runs")
    header = (f"{'server':<8} {'strategy':<11} {'wall s':>7} {'conns':>5} {'RTs':>4} {'probes':>6} {'cmds':>5} "
              f"{'outside':>7}  verdict")
    print(header)
    print("-" * len(header))
    for behaviour in ("closed", "open"):
        measured = asyncio.run(measure(behaviour, rtt, args.runs))
        ours, base = measured["relaycheck"], measured["baseline"]
        for name, runs in measured.items():
            r = runs[0]
            wall = statistics.median(x.wall for x in runs)
            counts = f"{r.connections:5d} {r.round_trips:4d} {r.probes:6d} {r.commands:5d} {r.outside:7d}"
            print(f"{behaviour:<8} {name:<11} {wall:7.3f} {counts}  {r.verdict}")
        ours_wall = statistics.median(x.wall for x in ours)
        base_wall = statistics.median(x.wall for x in base)
        print(
            f"{behaviour:<8} ratio baseline/relaycheck: {base_wall / ours_wall:.1f}x  "
            f"(wall time in RTTs: {ours_wall / rtt:.1f} vs {base_wall / rtt:.1f})"
        )


if __name__ == "__main__":
    main()
