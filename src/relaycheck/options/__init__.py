"""Options for testing one target (a leaf: what the engine is asked to do, as data)."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from relaycheck.model import Transport

if TYPE_CHECKING:
    from relaycheck.delivery import ArrivalWatcher


@dataclass(frozen=True)
class HygieneOptions:
    ptr: bool = True
    dnsbl: bool = True
    dnsbl_zones: tuple[str, ...] = ()  # instead of the default list (dnsbl_zones.toml) when given
    tls: bool = True  # inspect the certificate and protocol
    tls_battery: bool = True  # run the relay battery over STARTTLS too when it is offered
    vrfy: bool = True
    auth_bypass: bool = False  # one bogus AUTH, then a relay probe (--auth-bypass-check)

    @property
    def needs_dns(self) -> bool:
        return self.ptr or self.dnsbl


DEFAULT_OUTSIDE = ("relaycheck-probe@gmail.com", "relaycheck-probe@outlook.com")


def default_helo() -> str:
    name = socket.getfqdn()
    return name if "." in name and not name.startswith("localhost") else "relaycheck.invalid"


@dataclass(frozen=True)
class EngineOptions:
    ext_recipients: tuple[str, ...] = DEFAULT_OUTSIDE
    sender: str | None = None  # default: relaycheck@<second outside domain>
    local_domain: str | None = None
    helo: str = field(default_factory=default_helo)
    retry_budget: float = 0.0  # seconds to keep retrying deferred probes (greylisting)
    retry_first_wait: float = 1.0
    data_probe: bool = False
    confirm_address: str | None = None  # delivery mode: the operator's own mailbox
    confirm_timeout: float = 120.0  # seconds to wait for test messages to arrive
    max_connections: int = 3  # at once, per host
    # Refusable probes per connection. Postfix counts an error after each refusal and, once a
    # session has 10 (smtpd_soft_error_limit), sleeps 1 s before every later reply: 9 keeps
    # every reply prompt. The postmaster control (expected to be accepted) rides along free.
    probes_per_connection: int = 9
    all_probes: bool = False  # also the optional catalogue entries (the V26 literal control)
    # Every relay probe even once the verdict is proven (a remediation report lists every path).
    exhaustive: bool = False
    # One transaction per probe (MAIL, RCPT, RSET) instead of one per sender: for comparisons.
    one_by_one: bool = False
    connect_timeout: float = 10.0
    command_timeout: float = 30.0
    greeting_timeout: float = 30.0
    deadline: float = 300.0  # per target, on top of the retry budget
    hygiene: HygieneOptions = field(default_factory=HygieneOptions)
    resolver: str | None = None  # DNS server for PTR/DNSBL (IP[:PORT]); None: the system's

    @property
    def outside(self) -> tuple[str, ...]:
        """Outside recipients: in delivery mode only the operator's own address, ever."""
        return (self.confirm_address,) if self.confirm_address else self.ext_recipients

    @property
    def sender_address(self) -> str:
        if self.sender:
            return self.sender
        domain = self.outside[-1].rpartition("@")[2]
        return f"relaycheck@{domain}"


@dataclass(frozen=True)
class CheckOptions:
    engine: EngineOptions = field(default_factory=EngineOptions)
    transport: Transport | None = None  # None: by port (465 implicit TLS, else plain)
    resolver: str | None = None  # IP[:PORT] of the DNS server to ask; None: the system's
    use_mx: bool = True  # names without a port are looked up as mail domains first
    port: int = 25  # port for targets given without one (MX hosts included)
    ports: tuple[int, ...] | None = None  # several ports for targets given without one (--port LIST)
    # Delivery mode (engine.confirm_address set): where arrivals are seen. Either relaycheck's
    # own sink, started for the run on ``sink_listen`` (HOST:PORT), or a ready watcher (IMAP).
    sink_listen: str | None = None
    watcher: ArrivalWatcher | None = None
    concurrency: int = 8  # targets tested at once


def ip_literal(address: str) -> str:
    ip = ipaddress.ip_address(address)
    return f"[IPv6:{ip.compressed}]" if ip.version == 6 else f"[{ip}]"
