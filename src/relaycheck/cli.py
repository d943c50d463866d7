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

import click

from relaycheck import validate
from relaycheck.api import CheckOptions, check
from relaycheck.boundedio import shorten
from relaycheck.engine import DEFAULT_OUTSIDE, EngineOptions, default_helo
from relaycheck.errors import RelaycheckError, UsageError
from relaycheck.extras import MissingExtra, import_feature, is_own_module, split_spec
from relaycheck.hygiene import HygieneOptions
from relaycheck.imap import PASSWORD_VARIABLE, ImapWatcher, imap_tls_context, parse_imap_url
from relaycheck.model import Report, Transport
from relaycheck.report import EXIT_INCONCLUSIVE, EXIT_OK, EXIT_USAGE, summarize
from relaycheck.stopping import stop_on_signals
from relaycheck.terminal import StatusLine, is_terminal, style_for


def _option_name(param: click.Parameter) -> str:
    return param.opts[0] if param.opts else str(param.name)


def _addresses(_ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(validate.address(v, _option_name(param)) for v in values)


def _one_address(_ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    return None if value is None else validate.address(value, _option_name(param))


STATUS_INTERVAL = 1.0  # seconds before the status line appears, and between its updates

# Commands that live in their own packages, imported only when used (the web UI and Dask are
# heavy imports that ``relaycheck check`` should not pay for). name -> "module:attribute", plus
# " [extra]" when the command needs an optional extra (the entry-point syntax).
LAZY_COMMANDS = {
    "audit": "relaycheck.audit.command:audit_command",
    "scan": "relaycheck.scan.command:scan_command",
    "report": "relaycheck.scan.command:report_command",
    "serve": "relaycheck.web.command:serve_command [web]",
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
@click.option("--json", "as_json", is_flag=True, help="Print the versioned JSON report (same as --format json).")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json", "markdown", "html"]),
    default="text",
    show_default=True,
    help="Output format; markdown and html make a shareable report (html is self-contained).",
)
@click.option("-v", "--verbose", is_flag=True, help="Show every probe and the full SMTP transcripts.")
@click.option(
    "--ext-recipient",
    "ext_recipients",
    multiple=True,
    callback=_addresses,
    metavar="ADDRESS",
    help="Outside recipient for relay probes (repeatable; use two unrelated domains). "
    f"Default: {', '.join(DEFAULT_OUTSIDE)}.",
)
@click.option("--sender", callback=_one_address, metavar="ADDRESS", help="Outside sender address.")
@click.option("--local-domain", metavar="DOMAIN", help="The server's mail domain (default: from DNS/banner).")
@click.option("--helo", metavar="NAME", help="EHLO name to announce (default: this machine's FQDN).")
@click.option("--resolver", metavar="IP[:PORT]", help="Ask this DNS server instead of the system's.")
@click.option(
    "--retry-budget",
    type=click.FloatRange(0, 3600),
    default=0.0,
    show_default=True,
    metavar="SECONDS",
    help="Keep retrying deferred (4xx, greylisted) probes this long.",
)
@click.option(
    "--data-probe",
    is_flag=True,
    help="For accepted recipients, send DATA and hang up on 354 before any content (no message is created).",
)
@click.option(
    "--confirm",
    "confirm",
    callback=_one_address,
    metavar="ADDRESS",
    help="Delivery mode: relay probes go to ADDRESS (a mailbox you control); each accepted one sends "
    "one labelled test message, and its arrival is checked (--sink or --imap).",
)
@click.option("--sink", "sink_listen", metavar="HOST:PORT", help="Receive test messages with relaycheck's own sink.")
@click.option(
    "--imap",
    "imap_url",
    metavar="URL",
    help=f"Look for test messages in this mailbox: imaps://user@host/INBOX (password: ${PASSWORD_VARIABLE} "
    "or a prompt).",
)
@click.option("--imap-keep", is_flag=True, help="Leave the test messages in the IMAP mailbox.")
@click.option(
    "--imap-cafile",
    type=click.Path(exists=True, dir_okay=False),
    metavar="FILE",
    help="Trust only this certificate (PEM) for the IMAP server, e.g. its self-signed one. Default: the "
    "system's trust store.",
)
@click.option(
    "--confirm-timeout",
    type=click.FloatRange(1, 3600),
    default=120.0,
    show_default=True,
    metavar="SECONDS",
    help="How long to wait for test messages to arrive.",
)
@click.option(
    "--transport",
    type=click.Choice([t.value for t in Transport]),
    help="plain, starttls or tls (implicit TLS). Default: tls on port 465, plain otherwise.",
)
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=25,
    show_default=True,
    help="Port for targets given without one (MX hosts included); 465 implies implicit TLS.",
)
@click.option(
    "--ports",
    metavar="LIST",
    help="Ports to test for targets given without one, e.g. 25,465,587 (465: implicit TLS; 587: "
    "submission, where relaying without AUTH is an open relay too). Default: 25.",
)
@click.option("--all-ports", is_flag=True, help="Same as --ports 25,465,587.")
@click.option("--no-ptr", is_flag=True, help="Skip the reverse DNS (PTR, FCrDNS) checks.")
@click.option("--no-dnsbl", is_flag=True, help="Skip the blocklist (DNSBL) lookups.")
@click.option("--dnsbl-zone", "dnsbl_zones", multiple=True, metavar="ZONE", help="Also ask this DNSBL zone.")
@click.option("--no-tls-check", is_flag=True, help="Skip the certificate and TLS protocol checks.")
@click.option("--no-tls-battery", is_flag=True, help="Do not repeat the relay battery over STARTTLS.")
@click.option("--no-vrfy", is_flag=True, help="Skip the VRFY/EXPN user-enumeration check.")
@click.option(
    "--auth-bypass-check",
    is_flag=True,
    help="Try ONE AUTH with a random user and password, then a relay probe (servers that relay after "
    "any AUTH are open). Never more than one attempt.",
)
@click.option("--all-probes", is_flag=True, help="Also run the optional probes (the V26 address-literal control).")
@click.option("--no-mx", is_flag=True, help="Treat names as hosts: do not look up MX records.")
@click.option(
    "--timeout",
    type=click.FloatRange(0.1, 600),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="Per-step timeout (greeting, each reply).",
)
@click.option(
    "--max-connections",
    type=click.IntRange(1, 10),
    default=3,
    show_default=True,
    help="Connections at once per host.",
)
def check_command(
    targets: tuple[str, ...],
    as_json: bool,
    output_format: str,
    verbose: bool,
    ext_recipients: tuple[str, ...],
    sender: str | None,
    local_domain: str | None,
    helo: str | None,
    resolver: str | None,
    retry_budget: float,
    data_probe: bool,
    confirm: str | None,
    sink_listen: str | None,
    imap_url: str | None,
    imap_keep: bool,
    imap_cafile: str | None,
    confirm_timeout: float,
    transport: str | None,
    port: int,
    ports: str | None,
    all_ports: bool,
    no_ptr: bool,
    no_dnsbl: bool,
    dnsbl_zones: tuple[str, ...],
    no_tls_check: bool,
    no_tls_battery: bool,
    no_vrfy: bool,
    auth_bypass_check: bool,
    all_probes: bool,
    no_mx: bool,
    timeout: float,
    max_connections: int,
) -> None:
    """Test TARGETS (host, host:port, IP, [IPv6]:port, or a mail domain: every MX)."""
    if as_json and output_format not in ("text", "json"):
        raise UsageError(f"--json and --format {output_format} contradict each other: choose one")
    outside = ext_recipients or DEFAULT_OUTSIDE
    watcher = _watcher(confirm, sink_listen, imap_url, imap_keep, imap_cafile)
    if not confirm and len({a.rpartition("@")[2].lower() for a in outside}) < 2:
        click.echo(
            "relaycheck: note: with a single outside domain a backup MX for it looks like an "
            "open relay; give a second --ext-recipient at an unrelated domain.",
            err=True,
        )
    engine = EngineOptions(
        ext_recipients=outside,
        sender=sender,
        local_domain=local_domain.lower().rstrip(".") if local_domain else None,
        helo=helo or default_helo(),
        retry_budget=retry_budget,
        data_probe=data_probe,
        confirm_address=confirm,
        confirm_timeout=confirm_timeout,
        max_connections=max_connections,
        all_probes=all_probes,
        command_timeout=timeout,
        greeting_timeout=timeout,
        connect_timeout=min(timeout, 10.0),
        resolver=resolver,
        hygiene=HygieneOptions(
            ptr=not no_ptr,
            dnsbl=not no_dnsbl,
            extra_dnsbl_zones=tuple(z.lower().strip(".") for z in dnsbl_zones),
            tls=not no_tls_check,
            tls_battery=not no_tls_battery,
            vrfy=not no_vrfy,
            auth_bypass=auth_bypass_check,
        ),
    )
    engine = validate.wire_ready(engine)  # before any target is touched
    options = CheckOptions(
        engine=engine,
        transport=Transport(transport) if transport else None,
        resolver=engine.resolver,
        use_mx=not no_mx,
        port=port,
        ports=(25, 465, 587) if all_ports else _ports(ports),
        sink_listen=sink_listen,
        watcher=watcher,
    )
    waiting = None if confirm or not is_terminal(sys.stderr) else StatusLine(sys.stderr, style_for(sys.stderr).width)
    report = asyncio.run(_check_with_status(list(targets), options, waiting, on_status=_status if confirm else None))
    _emit(report, output_format="json" if as_json else output_format, verbose=verbose)
    raise SystemExit(summarize(report).exit_code)


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


def _ports(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        ports = tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise UsageError(f"--ports takes numbers separated by commas, not {text!r}") from None
    if not ports or not all(0 < p < 65536 for p in ports):
        raise UsageError(f"--ports takes port numbers from 1 to 65535, not {text!r}")
    return tuple(dict.fromkeys(ports))


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
    # The renderers (rich, the HTML templates) load here: `scan`, `audit` and the rest never need them.
    from relaycheck.render.html import render_html
    from relaycheck.render.json import render_json
    from relaycheck.render.markdown import render_markdown
    from relaycheck.render.text import render_text

    if output_format == "json":
        click.echo(render_json(report), nl=False)
    elif output_format == "markdown":
        click.echo(render_markdown(report), nl=False)
    elif output_format == "html":
        click.echo(render_html(report), nl=False)
    else:
        style = style_for(sys.stdout)
        click.echo(render_text(report, verbose=verbose, color=style.color, width=style.width), nl=False)


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
    try:
        with stop_on_signals():
            cli.main(args=list(argv) if argv is not None else None, prog_name="relaycheck", standalone_mode=False)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    except click.exceptions.Abort:
        click.echo("relaycheck: interrupted", err=True)
        return 130
    except click.ClickException as exc:
        click.echo(f"relaycheck: {click_error_line(exc)}", err=True)
        return EXIT_USAGE
    except UsageError as exc:
        click.echo(f"relaycheck: {error_line(exc)}", err=True)
        return EXIT_USAGE
    except RelaycheckError as exc:
        click.echo(f"relaycheck: {error_line(exc)}", err=True)
        return EXIT_INCONCLUSIVE
    except KeyboardInterrupt:
        click.echo("relaycheck: interrupted", err=True)
        return 130
    except Exception as exc:  # a bug: one line for the user, the traceback on request
        if os.environ.get("RELAYCHECK_DEBUG"):
            raise
        click.echo(
            f"relaycheck: internal error: {type(exc).__name__}: {error_line(exc)} "
            "(set RELAYCHECK_DEBUG=1 for the traceback, and please report it)",
            err=True,
        )
        return EXIT_INCONCLUSIVE
    return EXIT_OK


def entry_point() -> None:
    sys.exit(main())


