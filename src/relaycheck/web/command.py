"""``relaycheck serve``: run the web UI and the JSON API with uvicorn (one process)."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import click

from relaycheck.dns import split_host_port
from relaycheck.engine import DEFAULT_OUTSIDE, default_helo
from relaycheck.errors import UsageError
from relaycheck.web.settings import DEFAULT_PORTS, Settings, web_engine_options


def _listen(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[str, int]:
    try:
        host, port = split_host_port(value, default_port=8025)
    except UsageError as exc:
        raise click.BadParameter(str(exc)) from None
    return host or "127.0.0.1", port or 8025


def _networks(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise click.BadParameter(f"not an address or network: {value!r}") from None
    return values


@click.command("serve")
@click.option(
    "--listen",
    default="127.0.0.1:8025",
    show_default=True,
    callback=_listen,
    metavar="HOST:PORT",
    help="Address to serve HTTP on ([IPv6]:PORT for IPv6). Put a TLS reverse proxy in front for the Internet.",
)
@click.option(
    "--db",
    default="relaycheck-web.db",
    show_default=True,
    metavar="PATH|URL",
    help="SQLite file, or any SQLAlchemy URL (e.g. postgresql+psycopg://user@host/db).",
)
@click.option(
    "--allow-private",
    is_flag=True,
    help="Also test loopback, private, link-local… addresses (labs and internal use only).",
)
@click.option(
    "--allow-port",
    "extra_ports",
    multiple=True,
    type=click.IntRange(1, 65535),
    metavar="PORT",
    help=f"Also allow this port (repeatable; {', '.join(map(str, DEFAULT_PORTS))} are always allowed).",
)
@click.option("--resolver", metavar="IP[:PORT]", help="Ask this DNS server instead of the system's.")
@click.option(
    "--rate",
    type=click.IntRange(1, 100_000),
    default=60,
    show_default=True,
    help="Requests per minute per client address (IPv6: per /64).",
)
@click.option(
    "--max-per-client",
    type=click.IntRange(1, 1000),
    default=2,
    show_default=True,
    help="Tests running at once per client address.",
)
@click.option(
    "--max-running", type=click.IntRange(1, 10_000), default=10, show_default=True, help="Tests running at once."
)
@click.option(
    "--cooldown",
    type=click.FloatRange(0, 86_400),
    default=300.0,
    show_default=True,
    metavar="SECONDS",
    help="Wait before the same target may be tested again (earlier requests get the recent result).",
)
@click.option(
    "--retry-budget",
    type=click.FloatRange(0, 3600),
    default=300.0,
    show_default=True,
    metavar="SECONDS",
    help="Keep retrying deferred probes (greylisting) this long; the live page shows the waits.",
)
@click.option(
    "--max-streams-per-client",
    type=click.IntRange(1, 1000),
    default=8,
    show_default=True,
    help="Open live-progress streams per client address (pages beyond it follow by polling).",
)
@click.option(
    "--trusted-proxy",
    "trusted_proxies",
    multiple=True,
    callback=_networks,
    metavar="ADDRESS|NETWORK",
    help="Reverse proxy whose X-Forwarded-For is believed (repeatable).",
)
@click.option("--helo", metavar="NAME", help="EHLO name to announce (default: this machine's FQDN).")
@click.option(
    "--ext-recipient",
    "ext_recipients",
    multiple=True,
    metavar="ADDRESS",
    help=f"Outside recipient for relay probes (repeatable). Default: {', '.join(DEFAULT_OUTSIDE)}.",
)
@click.option(
    "--allow-data-probe",
    is_flag=True,
    help="Let API clients ask for mode data-probe (DATA, then hang up on 354). Off: probe mode only.",
)
def serve_command(
    listen: tuple[str, int],
    db: str,
    allow_private: bool,
    extra_ports: tuple[int, ...],
    resolver: str | None,
    rate: int,
    max_per_client: int,
    max_running: int,
    cooldown: float,
    retry_budget: float,
    max_streams_per_client: int,
    trusted_proxies: tuple[str, ...],
    helo: str | None,
    ext_recipients: tuple[str, ...],
    allow_data_probe: bool,
) -> None:
    """Serve the web UI and the JSON API (/api/v1) for testing mail servers."""
    import uvicorn

    from relaycheck.web.app import create_app

    for address in ext_recipients:
        local, at, domain = address.rpartition("@")
        if not at or not local or "." not in domain or any(c in address for c in " <>\r\n"):
            raise click.BadParameter(f"not a mail address: {address!r}", param_hint="--ext-recipient")
    engine = replace(web_engine_options(), helo=helo or default_helo())
    if ext_recipients:
        engine = replace(engine, ext_recipients=ext_recipients)
    settings = Settings(
        db_url=db,
        allow_private=allow_private,
        resolver=resolver,
        ports=tuple(sorted({*DEFAULT_PORTS, *extra_ports})),
        engine=engine,
        allow_data_probe=allow_data_probe,
        requests_per_minute=rate,
        max_running_per_client=max_per_client,
        max_running=max_running,
        cooldown=cooldown,
        retry_budget=retry_budget,
        max_streams_per_client=max_streams_per_client,
        trusted_proxies=trusted_proxies,
    )
    host, port = listen
    if allow_private:
        click.echo("relaycheck serve: --allow-private: loopback and private addresses can be tested", err=True)
    app = create_app(settings)
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"relaycheck serve: http://{shown}:{port}/  (database: {db})", err=True)
    uvicorn.run(app, host=host, port=port, proxy_headers=False, timeout_graceful_shutdown=5, log_level="info")
