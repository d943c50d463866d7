"""The Python API: user inputs (hosts, host:port, IPs, domains) -> targets -> ``Report``.

``await check(["example.com"], CheckOptions())`` expands domains through MX (implicit MX / A
fallback, null MX reported), tests every address of every MX host separately, and returns the
report. Input problems (bad syntax, NXDOMAIN, null MX) become ``InputProblem`` entries.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from relaycheck.dns import (
    is_ip,
    lookup_addresses,
    lookup_mx,
    make_resolver,
    split_host_port,
    valid_hostname,
)
from relaycheck.engine import check_target
from relaycheck.errors import DnsError, UsageError
from relaycheck.model import Exchange, InputProblem, Report, Target, TargetReport, Transport
from relaycheck.options import CheckOptions
from relaycheck.sink import Sink
from relaycheck.validate import idna_ascii

__all__ = ["CheckOptions", "check", "expand", "parse_target"]

PORT_TRANSPORT = {25: Transport.PLAIN, 465: Transport.TLS, 587: Transport.PLAIN}


@dataclass(frozen=True)
class Started:
    """When a run of checks began: the wall clock for the report, the monotonic clock for its
    duration. ``report`` makes the run's ``Report`` (the CLI, the web service and the exporter)."""

    wall: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    monotonic: float = field(default_factory=time.monotonic)

    def report(self, targets: Sequence[TargetReport], problems: Sequence[InputProblem], mode: str) -> Report:
        from relaycheck import __version__

        return Report(
            targets=tuple(targets),
            problems=tuple(problems),
            started=self.wall,
            duration=time.monotonic() - self.monotonic,
            tool_version=__version__,
            mode=mode,
        )


@dataclass(frozen=True)
class TargetSpec:
    """One user input, parsed: ``host`` is a name or an IP, ``port`` None when not given."""

    given: str
    host: str
    port: int | None


def parse_target(text: str) -> TargetSpec:
    """Parse ``host``, ``host:port``, ``IP``, ``[IPv6]:port``; raise ``UsageError`` when malformed."""
    if not text.strip():
        raise UsageError("empty target")
    host, port = split_host_port(text, default_port=None)
    host = idna_ascii(host.rstrip(".").lower())
    if not (is_ip(host) or valid_hostname(host)):
        raise UsageError(f"not a host name, IP address or domain: {text!r}")
    return TargetSpec(given=text, host=host, port=port)


async def expand(spec: TargetSpec, options: CheckOptions) -> list[Target]:
    """The SMTP endpoints one input stands for. Raises ``DnsError`` with a one-line reason.

    Every address of every MX host, on every port asked for (an explicit ``host:port`` wins).
    """
    ports = (spec.port,) if spec.port else (options.ports or (options.port,))
    return [
        replace(t, port=p, transport=options.transport or PORT_TRANSPORT.get(p, Transport.PLAIN))
        for t in await _hosts(spec, options)
        for p in ports
    ]


async def _hosts(spec: TargetSpec, options: CheckOptions) -> list[Target]:
    """Host and address of each endpoint (port filled in by ``expand``)."""
    if is_ip(spec.host):
        return [Target(host=spec.host, address=spec.host)]
    resolver = make_resolver(options.resolver) if (options.resolver or "." in spec.host) else None
    if spec.port is None and options.use_mx and resolver is not None:  # a mail domain?
        mx = await lookup_mx(resolver, spec.host)
        if mx is not None:
            if not mx or all(m.host in ("", ".") for m in mx):
                raise DnsError(f"{spec.host} publishes a null MX (RFC 7505): it accepts no mail")
            targets: list[Target] = []
            for entry in mx:
                for address in await lookup_addresses(resolver, entry.host):
                    targets.append(
                        Target(host=entry.host, address=address, domain=spec.host, mx_preference=entry.preference)
                    )
            return targets
        # No MX at all: the implicit MX is the name itself (RFC 5321 §5.1).
    return [Target(host=spec.host, address=address) for address in await lookup_addresses(resolver, spec.host)]


async def check(
    inputs: str | Sequence[str],
    options: CheckOptions | None = None,
    *,
    on_exchange: Callable[[Target, int, Exchange], None] | None = None,
    on_status: Callable[[str], None] | None = None,
) -> Report:
    """Test every target the inputs stand for; never raises for network or DNS trouble."""
    options = options or CheckOptions()
    confirm = options.engine.confirm_address
    if confirm and options.watcher is None and options.sink_listen is not None:
        host, port = split_host_port(options.sink_listen, default_port=25)
        try:
            async with Sink(confirm.rpartition("@")[2], host, port or 25) as sink:
                if on_status is not None:
                    on_status(f"sink listening on {sink.host}:{sink.port} for mail to {confirm}")
                return await check(inputs, replace(options, watcher=sink), on_exchange=on_exchange, on_status=on_status)
        except OSError as exc:
            raise UsageError(f"cannot listen on {options.sink_listen} for the sink: {exc.strerror or exc}") from None
    if confirm and options.watcher is None:
        raise UsageError("delivery mode needs somewhere to see arrivals: --sink HOST:PORT or --imap URL")
    if confirm and options.watcher is not None:
        await options.watcher.check_ready()  # e.g. the IMAP login, before any message is sent
    given = [inputs] if isinstance(inputs, str) else list(inputs)
    started = Started()
    specs = [parse_target(text) for text in given]  # UsageError: the caller's input is wrong

    problems: list[InputProblem] = []
    targets: list[Target] = []
    expansions = await asyncio.gather(*(expand(s, options) for s in specs), return_exceptions=True)
    for spec, expanded in zip(specs, expansions, strict=True):
        if isinstance(expanded, DnsError):
            problems.append(InputProblem(spec.given, str(expanded)))
        elif isinstance(expanded, BaseException):
            raise expanded
        else:
            targets += [t for t in expanded if t not in targets]

    gate = asyncio.Semaphore(max(1, options.concurrency))

    async def one(target: Target) -> TargetReport:
        async with gate:
            hook = None
            if on_exchange is not None:
                def hook(index: int, exchange: Exchange, _t: Target = target) -> None:
                    on_exchange(_t, index, exchange)
            return await check_target(
                target, options.engine, on_exchange=hook, watcher=options.watcher, on_status=on_status
            )

    reports = await asyncio.gather(*(one(t) for t in targets))
    mode = "delivery" if confirm else "data-probe" if options.engine.data_probe else "probe"
    return started.report(reports, problems, mode)
