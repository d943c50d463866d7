"""``relaycheck exporter``: serve ``/probe`` and ``/metrics`` for Prometheus."""

from __future__ import annotations

import asyncio
import signal
from dataclasses import replace

import click

from relaycheck.dns import split_host_port
from relaycheck.engine import DEFAULT_OUTSIDE, EngineOptions, default_helo
from relaycheck.errors import UsageError
from relaycheck.hygiene import HygieneOptions
from relaycheck.options.values import mail_address


def _listen(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[str, int]:
    any_port = value.endswith(":0")  # port 0: let the system pick one (the readiness line names it)
    try:
        host, port = split_host_port(value[:-2] if any_port else value, default_port=9925)
    except UsageError as exc:
        raise click.BadParameter(str(exc)) from None
    return host or "127.0.0.1", 0 if any_port else 9925 if port is None else port


def _addresses(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    try:
        return tuple(mail_address(v) for v in values)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _missing_extra() -> None:
    try:
        import prometheus_client  # noqa: F401
    except ModuleNotFoundError:
        raise UsageError("the exporter needs the 'monitor' extra: pip install 'relaycheck[monitor]'") from None


@click.command("exporter")
@click.option(
    "--listen",
    default="127.0.0.1:9925",
    show_default=True,
    callback=_listen,
    metavar="HOST:PORT",
    help="Where to serve HTTP ([IPv6]:PORT for IPv6).",
)
@click.option(
    "--cache-ttl",
    type=click.FloatRange(0, 86_400),
    default=300.0,
    show_default=True,
    metavar="SECONDS",
    help="Reuse a target's result this long (scrapes in between get the cached result).",
)
@click.option("--max-checks", type=click.IntRange(1, 100), default=2, show_default=True, help="Checks running at once.")
@click.option(
    "--max-waiting",
    type=click.IntRange(0, 10_000),
    default=16,
    show_default=True,
    help="Checks waiting for a slot; further /probe requests for new targets get 503.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(1, 3600),
    default=120.0,
    show_default=True,
    metavar="SECONDS",
    help="Longest wait for a result within one scrape (Prometheus's scrape timeout header lowers it); "
    "a check that takes longer goes on and fills the cache.",
)
@click.option(
    "--allow-private",
    is_flag=True,
    help="Also test loopback, private, link-local… addresses (labs and internal monitoring).",
)
@click.option(
    "--allow-port",
    "extra_ports",
    multiple=True,
    type=click.IntRange(1, 65535),
    metavar="PORT",
    help="Also allow this port (repeatable; 25, 465 and 587 are always allowed).",
)
@click.option("--resolver", metavar="IP[:PORT]", help="Ask this DNS server instead of the system's.")
@click.option("--helo", metavar="NAME", help="EHLO name to announce (default: this machine's FQDN).")
@click.option(
    "--ext-recipient",
    "ext_recipients",
    multiple=True,
    callback=_addresses,
    metavar="ADDRESS",
    help=f"Outside recipient for relay probes (repeatable). Default: {', '.join(DEFAULT_OUTSIDE)}.",
)
@click.option("--local-domain", metavar="DOMAIN", help="The servers' mail domain (default: from DNS/banner).")
@click.option("--no-ptr", is_flag=True, help="Skip the reverse DNS (PTR, FCrDNS) checks.")
@click.option("--no-dnsbl", is_flag=True, help="Skip the blocklist (DNSBL) lookups.")
def exporter_command(
    listen: tuple[str, int],
    cache_ttl: float,
    max_checks: int,
    max_waiting: int,
    timeout: float,
    allow_private: bool,
    extra_ports: tuple[int, ...],
    resolver: str | None,
    helo: str | None,
    ext_recipients: tuple[str, ...],
    local_domain: str | None,
    no_ptr: bool,
    no_dnsbl: bool,
) -> None:
    """Prometheus exporter: GET /probe?target=HOST[&port=25] tests a server (every MX of a domain)."""
    _missing_extra()
    from relaycheck.monitor.exporter import DEFAULT_PORTS, Exporter, ExporterSettings, serve

    engine = EngineOptions(
        helo=helo or default_helo(),
        local_domain=local_domain.lower().rstrip(".") if local_domain else None,
        resolver=resolver,
        deadline=timeout,
        command_timeout=min(20.0, timeout),
        greeting_timeout=min(20.0, timeout),
        connect_timeout=min(10.0, timeout),
        hygiene=HygieneOptions(ptr=not no_ptr, dnsbl=not no_dnsbl, auth_bypass=False),
    )
    if ext_recipients:
        engine = replace(engine, ext_recipients=ext_recipients)
    settings = ExporterSettings(
        engine=engine,
        allow_private=allow_private,
        ports=tuple(sorted({*DEFAULT_PORTS, *extra_ports})),
        resolver=resolver,
        cache_ttl=cache_ttl,
        max_checks=max_checks,
        max_waiting=max_waiting,
        check_timeout=timeout,
    )
    host, port = listen

    def ready(bound_host: str, bound_port: int) -> None:
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        click.echo(f"relaycheck exporter: listening on http://{shown}:{bound_port}/probe?target=…", err=True)
        if allow_private:
            click.echo("relaycheck exporter: --allow-private: loopback and private addresses can be tested", err=True)

    async def run() -> None:
        stop_on_signals()
        try:
            await serve(Exporter(settings), host, port, ready)
        except OSError as exc:
            raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        except asyncio.CancelledError:
            click.echo("relaycheck exporter: stopped", err=True)

    asyncio.run(run())


def stop_on_signals() -> None:
    """SIGTERM and SIGINT cancel the running main task: servers close, running checks are cancelled."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, task.cancel)
