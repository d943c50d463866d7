"""``relaycheck serve``: run the web UI and the JSON API with uvicorn (one process)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import click

from relaycheck.options import CheckOptions
from relaycheck.options.table import apply, build_engine, command_options, sections_of
from relaycheck.web.settings import DEFAULT_PORTS, Settings


@click.command("serve")
@command_options("serve", {**sections_of(CheckOptions(engine=Settings().engine)), "web": Settings()})
def serve_command(**values: Any) -> None:
    """Serve the web UI and the JSON API (/api/v1) for testing mail servers."""
    import uvicorn

    from relaycheck.web.app import create_app

    base = Settings()
    engine = build_engine(values, base.engine)
    settings = apply("web", replace(base, engine=engine, ports=tuple(sorted({*DEFAULT_PORTS, *values["allow_ports"]}))),
                     values)
    host, port = values["listen"]
    if settings.allow_private:
        click.echo("relaycheck serve: --allow-private: loopback and private addresses can be tested", err=True)
    app = create_app(settings)
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"relaycheck serve: http://{shown}:{port}/  (database: {settings.db_url})", err=True)
    uvicorn.run(app, host=host, port=port, proxy_headers=False, timeout_graceful_shutdown=5, log_level="info")
