"""Command line: ``relaycheck check TARGET…`` and ``relaycheck demo`` (the default).

The only place (with the web entry point) that starts an event loop. Every error relaycheck
raises on purpose becomes one line on stderr and an exit code, never a traceback.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import click

from relaycheck.api import CheckOptions, check
from relaycheck.engine import EngineOptions
from relaycheck.errors import RelaycheckError, UsageError
from relaycheck.hygiene import HygieneOptions
from relaycheck.imap import PASSWORD_VARIABLE, ImapWatcher, imap_tls_context, parse_imap_url
from relaycheck.model import Report
from relaycheck.options.table import build_check, command_options, sections_of
from relaycheck.render import ReportKind, Style, chosen_format, render
from relaycheck.report import EXIT_INCONCLUSIVE, EXIT_OK, EXIT_USAGE, summarize

# Commands that live in their own packages, imported only when used (the web UI and Dask are
# heavy imports that ``relaycheck check`` should not pay for). name -> "module:attribute".
LAZY_COMMANDS = {
    "audit": "relaycheck.audit.command:audit_command",
    "scan": "relaycheck.scan.command:scan_command",
    "report": "relaycheck.scan.command:report_command",
    "serve": "relaycheck.web.command:serve_command",
}


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(LAZY_COMMANDS[name].split(":")[0]) is not None
    except ModuleNotFoundError:  # the parent package is not there either
        return False


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *(n for n in LAZY_COMMANDS if _importable(n))})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in LAZY_COMMANDS:
            module_name, attribute = LAZY_COMMANDS[cmd_name].split(":")
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError:
                return None
            command = getattr(module, attribute)
            assert isinstance(command, click.Command)
            return command
        return super().get_command(ctx, cmd_name)


@click.group(
    cls=LazyGroup, invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.version_option(package_name="relaycheck")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Tell, with evidence, whether an SMTP server is an open relay.

    Without a command, runs the demo against local servers (no network needed).
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(demo)




@cli.command("check")
@click.argument("targets", nargs=-1, required=True)
@command_options("check", sections_of(CheckOptions()))
def check_command(targets: tuple[str, ...], **values: Any) -> None:
    """Test TARGETS (host, host:port, IP, [IPv6]:port, or a mail domain: every MX)."""
    options = build_check(values)
    confirm = options.engine.confirm_address
    watcher = _watcher(confirm, options.sink_listen, values["imap_url"], values["imap_keep"], values["imap_cafile"])
    if not confirm and len({a.rpartition("@")[2].lower() for a in options.engine.ext_recipients}) < 2:
        click.echo(
            "relaycheck: note: with a single outside domain a backup MX for it looks like an "
            "open relay; give a second --ext-recipient at an unrelated domain.",
            err=True,
        )
    options = replace(options, watcher=watcher)
    report = asyncio.run(check(list(targets), options, on_status=_status if confirm else None))
    _emit(report, output_format=chosen_format(values["output_format"], values["as_json"]), verbose=values["verbose"])
    raise SystemExit(summarize(report).exit_code)


def _watcher(
    confirm: str | None, sink_listen: str | None, imap_url: str | None, keep: bool, cafile: str | None
) -> ImapWatcher | None:
    """Check the delivery-mode options; the IMAP watcher when --imap is used."""
    if not confirm:
        if sink_listen or imap_url:
            raise UsageError("--sink and --imap are for delivery mode: add --confirm ADDRESS")
        return None
    if bool(sink_listen) == bool(imap_url):
        raise UsageError("--confirm needs exactly one of --sink HOST:PORT or --imap URL")
    if cafile and not imap_url:
        raise UsageError("--imap-cafile is for --imap")
    if not imap_url:
        return None
    location = parse_imap_url(imap_url)
    password = os.environ.get(PASSWORD_VARIABLE)
    if password is None:
        if not sys.stdin.isatty():
            raise UsageError(f"set ${PASSWORD_VARIABLE} (the IMAP password is never taken from the command line)")
        password = click.prompt(f"IMAP password for {location.user}@{location.host}", hide_input=True)
    return ImapWatcher(location, password, keep=keep, tls_context=imap_tls_context(cafile))


def _status(message: str) -> None:
    click.echo(f"relaycheck: {message}", err=True)


def _emit(report: Report, *, output_format: str, verbose: bool) -> None:
    style = Style(verbose=verbose, color=sys.stdout.isatty())
    click.echo(render(ReportKind.CHECK, report, output_format, style), nl=False)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the JSON report instead of text.")
@click.option("-v", "--verbose", is_flag=True, help="Show every probe and the SMTP transcripts.")
def demo(as_json: bool = False, verbose: bool = False) -> None:
    """Check local demo servers (open, closed, percent hack, greylisting, 454) — no network."""
    from relaycheck.demo import DEMO_DNSBL_ZONE, DEMO_LOCAL_DOMAIN, DEMO_OUTSIDE, demo_lab

    with demo_lab() as lab:
        servers = lab.servers
        if not as_json:
            click.echo("relaycheck demo: local SMTP servers with known behaviours on loopback:")
            for server in servers:
                click.echo(
                    f"  {server.address:<18} {server.hostname:<16} {server.behaviour:<18} expected: {server.expected}"
                )
            click.echo()
        engine = EngineOptions(
            ext_recipients=DEMO_OUTSIDE,
            local_domain=DEMO_LOCAL_DOMAIN,
            helo="relaycheck.demo.test",
            resolver=lab.resolver,
            hygiene=HygieneOptions(dnsbl_zones=(DEMO_DNSBL_ZONE,)),
        )
        report = asyncio.run(check([s.address for s in servers], CheckOptions(engine=engine, resolver=lab.resolver)))
    _emit(report, output_format="json" if as_json else "text", verbose=verbose)
    wrong = [
        f"{s.behaviour}: got {t.verdict.kind}, expected {s.expected}"
        for s, t in zip(servers, report.targets, strict=True)
        if t.verdict.kind is not s.expected
    ]
    if not as_json:
        click.echo("demo: every verdict as expected" if not wrong else "demo: UNEXPECTED " + "; ".join(wrong))
    raise SystemExit(EXIT_INCONCLUSIVE if wrong else EXIT_OK)


@cli.command("sink")
@click.option("--domain", required=True, metavar="DOMAIN", help="Accept mail for this domain only.")
@click.option("--listen", default="0.0.0.0:25", show_default=True, metavar="HOST:PORT", help="Where to listen.")
def sink_command(domain: str, listen: str) -> None:
    """Receive relaycheck test messages for DOMAIN and print each token as it arrives."""
    from relaycheck.dns import split_host_port
    from relaycheck.sink import Arrival, Sink

    host, port = split_host_port(listen, default_port=25)

    def show(arrival: Arrival) -> None:
        path = " <- ".join(arrival.received) or "(no Received headers)"
        click.echo(f"{arrival.token} from {arrival.peer} to {', '.join(arrival.rcpt_tos)}: {path}")

    async def serve() -> None:
        try:
            sink = Sink(domain, host, port or 25)
            sink.handler.on_arrival = show
            async with sink:
                click.echo(f"relaycheck sink: listening on {sink.host}:{sink.port} for mail to @{domain}", err=True)
                await asyncio.Event().wait()
        except OSError as exc:
            raise UsageError(f"cannot listen on {listen}: {exc.strerror or exc}") from None

    asyncio.run(serve())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code (for tests and ``entry_point``)."""
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="relaycheck", standalone_mode=False)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    except click.exceptions.Abort:
        click.echo("relaycheck: interrupted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return EXIT_USAGE
    except UsageError as exc:
        click.echo(f"relaycheck: {exc}", err=True)
        return EXIT_USAGE
    except RelaycheckError as exc:
        click.echo(f"relaycheck: {exc}", err=True)
        return EXIT_INCONCLUSIVE
    except KeyboardInterrupt:
        click.echo("relaycheck: interrupted", err=True)
        return 130
    except Exception as exc:  # a bug: one line for the user, the traceback on request
        if os.environ.get("RELAYCHECK_DEBUG"):
            raise
        click.echo(
            f"relaycheck: internal error: {type(exc).__name__}: {exc} "
            "(set RELAYCHECK_DEBUG=1 for the traceback, and please report it)",
            err=True,
        )
        return EXIT_INCONCLUSIVE
    return EXIT_OK


def entry_point() -> None:
    sys.exit(main())


