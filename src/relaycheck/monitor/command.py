"""``relaycheck exporter``: serve ``/probe`` and ``/metrics`` for Prometheus."""

from __future__ import annotations

import asyncio
import signal
from dataclasses import replace
from typing import Any

import click

from relaycheck.errors import UsageError
from relaycheck.monitor.settings import DEFAULT_PORTS, ExporterSettings
from relaycheck.options import CheckOptions, EngineOptions, HygieneOptions
from relaycheck.options.table import apply, build_engine, command_options, sections_of


def _missing_extra() -> None:
    try:
        import prometheus_client  # noqa: F401
    except ModuleNotFoundError:
        raise UsageError("the exporter needs the 'monitor' extra: pip install 'relaycheck[monitor]'") from None


def _within_scrape(engine: EngineOptions, limit: float) -> EngineOptions:
    """A check may take the whole scrape; each step at most 20 s, a connect 10 s."""
    return replace(
        engine,
        deadline=limit,
        command_timeout=min(20.0, limit),
        greeting_timeout=min(20.0, limit),
        connect_timeout=min(10.0, limit),
    )


@click.command("exporter")
@command_options("exporter", {**sections_of(CheckOptions()), "exporter": ExporterSettings()})
def exporter_command(**values: Any) -> None:
    """Prometheus exporter: GET /probe?target=HOST[&port=25] tests a server (every MX of a domain)."""
    _missing_extra()
    from relaycheck.monitor.exporter import Exporter, serve

    base = ExporterSettings(ports=tuple(sorted({*DEFAULT_PORTS, *values["allow_ports"]})))
    settings = apply("exporter", base, values)
    engine = build_engine(values, EngineOptions(hygiene=HygieneOptions(auth_bypass=False)))
    settings = replace(settings, engine=_within_scrape(engine, settings.check_timeout))
    allow_private = settings.allow_private
    host, port = values["exporter_listen"]

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
