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
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import click

from relaycheck import validate
from relaycheck.api import CheckOptions, check
from relaycheck.boundedio import shorten
from relaycheck.engine import EngineOptions
from relaycheck.errors import RelaycheckError, UsageError
from relaycheck.extras import MissingExtra, import_feature, is_own_module, split_spec
from relaycheck.hygiene import HygieneOptions
from relaycheck.imap import PASSWORD_VARIABLE, ImapWatcher, imap_tls_context, parse_imap_url
from relaycheck.model import Report, Severity
from relaycheck.options.table import build_check, command_options, sections_of
from relaycheck.render import ReportKind, chosen_format, exit_status, render
from relaycheck.report import EXIT_INCONCLUSIVE, EXIT_OK, EXIT_USAGE, summarize
from relaycheck.stopping import stop_on_signals
from relaycheck.terminal import StatusLine, is_terminal, style_for

STATUS_INTERVAL = 1.0  # seconds before the status line appears, and between its updates

# Commands that live in their own packages, imported only when used (the web UI and Dask are
# heavy imports that ``relaycheck check`` should not pay for). name -> "module:attribute", plus
# " [extra]" when the command needs an optional extra (the entry-point syntax).
LAZY_COMMANDS = {
    "audit": "relaycheck.audit.command:audit_command",
    "scan": "relaycheck.scan.command:scan_command",
    "report": "relaycheck.scan.command:report_command",
    "serve": "relaycheck.web.command:serve_command [web]",
    "exporter": "relaycheck.monitor.command:exporter_command [monitor]",
    "watch": "relaycheck.monitor.watch_command:watch_command [monitor]",
    "history": "relaycheck.monitor.watch_command:history_command [monitor]",
    "honeypot": "relaycheck.honeypot.command:honeypot_command [honeypot]",
}


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(split_spec(LAZY_COMMANDS[name])[0]) is not None
    except ModuleNotFoundError as exc:  # importing the parent package failed
        return not is_own_module(exc.name)  # it is there, but needs an extra that is not


def _missing_extra_command(name: str, missing: MissingExtra) -> click.Command:
    """Stands in for a command whose extra is not installed: listed in --help with the extra to
    install, and whatever it is given, it says that in one line (exit 2)."""

    def refuse() -> None:
        raise missing

    return click.Command(
        name,
        callback=refuse,
        short_help=f"(needs relaycheck[{missing.extra}]: not installed)",
        add_help_option=False,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *(n for n in LAZY_COMMANDS if _importable(n))})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in LAZY_COMMANDS:
            module_name, attribute, extra = split_spec(LAZY_COMMANDS[cmd_name])
            try:
                module = import_feature(module_name, f"'{cmd_name}'", extra)
            except MissingExtra as missing:
                return _missing_extra_command(cmd_name, missing)
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
@command_options("check", sections_of(CheckOptions()), report=ReportKind.CHECK)
def check_command(targets: tuple[str, ...], **values: Any) -> None:
    """Test TARGETS (host, host:port, IP, [IPv6]:port, or a mail domain: every MX)."""
    output_format = chosen_format(values["output_format"], values["as_json"])  # before any target is touched
    if values["warn_severity"] and output_format != "nagios":
        raise UsageError("--warn-severity is for --format nagios")
    warn = values["warn_severity"]
    style = replace(style_for(sys.stdout, verbose=values["verbose"]), warn_severity=Severity(warn) if warn else None)
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
    waiting = None if confirm or not is_terminal(sys.stderr) else StatusLine(sys.stderr, style_for(sys.stderr).width)
    report = asyncio.run(_check_with_status(list(targets), options, waiting, on_status=_status if confirm else None))
    click.echo(render(ReportKind.CHECK, report, output_format, style), nl=False)
    own = exit_status(ReportKind.CHECK, report, output_format, style)  # nagios: the plugin's codes
    raise SystemExit(summarize(report).exit_code if own is None else own)


async def _check_with_status(
    targets: list[str], options: CheckOptions, waiting: StatusLine | None, on_status: Callable[[str], None] | None
) -> Report:
    """``check``; on a terminal, a status line says what it is waiting for once it takes a while."""
    if waiting is None:
        return await check(targets, options, on_status=on_status)
    started = time.monotonic()
    task = asyncio.ensure_future(check(targets, options, on_exchange=waiting.exchange, on_status=on_status))
    try:
        while not (await asyncio.wait({task}, timeout=STATUS_INTERVAL))[0]:
            elapsed = time.monotonic() - started
            what = f"{len(targets)} targets" if len(targets) > 1 else shorten(targets[0], 40)
            if waiting.replies:
                waiting.show(f"relaycheck: testing {what}: {waiting.replies} exchanges, {elapsed:.0f} s")
            else:
                waiting.show(f"relaycheck: waiting for {what} to answer, {elapsed:.0f} s")
        return task.result()
    finally:
        task.cancel()
        waiting.clear()


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
    style = style_for(sys.stdout, verbose=verbose)
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
    domain = validate.domain(domain, "--domain")

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


MESSAGE_SHOWN = 300  # characters of an error message: a 10 kB argument quoted whole would bury it


def error_line(exc: BaseException) -> str:
    """An error as one line of reasonable length, whatever the input it quotes."""
    return shorten(" ".join(str(exc).split()), MESSAGE_SHOWN)


def click_error_line(exc: click.ClickException) -> str:
    """Click's usage errors in one line (click prints the usage and a hint on three), naming the
    command and where its help is."""
    message = shorten(" ".join(exc.format_message().split()), MESSAGE_SHOWN)
    context = getattr(exc, "ctx", None)
    if context is None:
        return message
    path = context.command_path
    return f"{message} (see '{path} --help')"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code (for tests and ``entry_point``)."""
    args = list(argv) if argv is not None else sys.argv[1:]
    code, message = _run(args)
    if message is not None:
        if _nagios(args):  # a monitoring system reads stdout and knows 3 as UNKNOWN, not 2
            from relaycheck.render.nagios import State, unknown

            click.echo(unknown(message.removeprefix("relaycheck: ")), nl=False)
            return int(State.UNKNOWN)
        click.echo(message, err=True)
    return code


def _nagios(args: list[str]) -> bool:
    """``check --format nagios`` was asked for: errors then follow the plugin conventions."""
    pairs = zip(args, [*args[1:], ""], strict=True)
    return "check" in args and ("--format=nagios" in args or ("--format", "nagios") in pairs)


def _run(args: list[str]) -> tuple[int, str | None]:
    """The exit code, and the one line to show when the command failed."""
    try:
        with stop_on_signals():
            cli.main(args=args, prog_name="relaycheck", standalone_mode=False)
    except SystemExit as exit_:
        return int(exit_.code or 0), None
    except click.exceptions.Abort:
        return 130, "relaycheck: interrupted"
    except click.ClickException as exc:
        line = f"relaycheck: {click_error_line(exc)}"
        return EXIT_USAGE, line
    except UsageError as exc:
        return EXIT_USAGE, f"relaycheck: {error_line(exc)}"
    except RelaycheckError as exc:
        return EXIT_INCONCLUSIVE, f"relaycheck: {error_line(exc)}"
    except KeyboardInterrupt:
        return 130, "relaycheck: interrupted"
    except Exception as exc:  # a bug: one line for the user, the traceback on request
        if os.environ.get("RELAYCHECK_DEBUG"):
            raise
        return EXIT_INCONCLUSIVE, (
            f"relaycheck: internal error: {type(exc).__name__}: {error_line(exc)} "
            "(set RELAYCHECK_DEBUG=1 for the traceback, and please report it)"
        )
    return EXIT_OK, None


def entry_point() -> None:
    sys.exit(main())


