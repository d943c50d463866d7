"""The lab's infrastructure daemons: dnsmasq (the only DNS) and the recording sink (the only next hop)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from .paths import DNSMASQ
from .processes import ManagedProcess, Readiness, spawn
from .specs import Server
from .topology import (
    CLIENT_HOSTNAME,
    CLIENT_IP,
    CONFIRM_DOMAIN,
    DNS_IP,
    DOVECOT_HOSTNAME,
    DOVECOT_IP,
    IMAP_DOMAIN,
    LAB_ZONE,
    NET,
    OUTSIDE_DOMAINS,
    SINK_HOSTNAME,
    SINK_IP,
    SMTP_PORT,
)

SINK_SCRIPT = Path(__file__).with_name("sink.py")


def dnsmasq_argv(servers: Sequence[Server]) -> list[str]:
    argv = [
        DNSMASQ,
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",  # no upstream: names outside the lab are refused
        "--no-hosts",
        "--no-poll",
        "--pid-file",  # no argument: no pid file
        f"--listen-address={DNS_IP}",
        "--bind-interfaces",
        "--log-facility=-",
        "--log-queries",
        "--local=/test/",
        f"--local=/{'.'.join(reversed(NET.split('.')[:2]))}.in-addr.arpa/",
        # host-record gives A and PTR in one go.
        f"--host-record={CLIENT_HOSTNAME},{CLIENT_IP}",
        f"--host-record=dns.{LAB_ZONE},{DNS_IP}",
        f"--host-record={SINK_HOSTNAME},{SINK_IP}",
        f"--host-record={DOVECOT_HOSTNAME},{DOVECOT_IP}",
        # Mail for the confirm domain goes to the client, where relaycheck's own sink listens.
        f"--mx-host={CONFIRM_DOMAIN},{CLIENT_HOSTNAME},10",
        f"--mx-host={IMAP_DOMAIN},{DOVECOT_HOSTNAME},10",
    ]
    argv += [f"--mx-host={domain},{SINK_HOSTNAME},10" for domain in OUTSIDE_DOMAINS]
    for server in servers:
        argv.append(f"--host-record={server.hostname},{server.ip}")
        argv.append(f"--mx-host={server.domain},{server.hostname},10")
    return argv


def start_dnsmasq(namespace: str, servers: Sequence[Server], output: Path) -> ManagedProcess:
    # dnsmasq creates its UDP and TCP listeners (bind, listen) before it logs "started".
    ready = Readiness.starting_now(output, r"dnsmasq\[\d+\]: started, version ")
    return spawn("dnsmasq", namespace, dnsmasq_argv(servers), output, ready)


def start_sink(namespace: str, record: Path, output: Path) -> ManagedProcess:
    argv = [sys.executable, str(SINK_SCRIPT), "--listen", SINK_IP, "--port", str(SMTP_PORT), "--record", str(record)]
    # sink.py prints this once its server is listening.
    ready = Readiness.starting_now(output, r"^sink listening on ")
    return spawn("sink", namespace, argv, output, ready)
