"""``relaycheck honeypot``: run the fake open relay; ``report`` and ``blocklist`` read what it saw."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from relaycheck import durations
from relaycheck.errors import UsageError
from relaycheck.honeypot.personas import PERSONAS
from relaycheck.options.table import command_options
from relaycheck.render import ReportKind, chosen_format, render


def parse_endpoint(text: str, what: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT`` -> (host, port). Port 0 is allowed (a listener on any free
    port), which is why this is not ``dns.split_host_port``, whose ports are targets' (1-65535)."""
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^:\[\]]+):(\d{1,5})", text.strip())
    if match is None:
        raise UsageError(f"{what} takes HOST:PORT (IPv6 as [ADDRESS]:PORT), not {text!r}")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if port > 65535:
        raise UsageError(f"{what}: port {port} is out of range")
    return host, port


def parse_duration(text: str) -> timedelta:
    return timedelta(seconds=durations.seconds(text, "--since"))


def parse_tags(values: tuple[str, ...]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for value in values:
        key, sep, content = value.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}", key) or len(content) > 256:
            raise UsageError(f"--tag takes KEY=VALUE (a key of letters, digits, _ . -), not {value!r}")
        tags[key] = content
    return tags


def _data_dir(path: Path) -> Path:
    if not path.is_dir():
        raise UsageError(f"{path} is not a honeypot data directory")
    return path


@click.group("honeypot", invoke_without_command=True)
@click.option(
    "--listen", multiple=True, metavar="HOST:PORT", help="Plain SMTP listener, STARTTLS offered (repeatable)."
)
@click.option(
    "--listen-tls", multiple=True, metavar="HOST:PORT", help="Implicit-TLS listener, port 465 style (repeatable)."
)
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), help="Where records and messages go.")
@click.option(
    "--persona", type=click.Choice(sorted(PERSONAS)), default="postfix", show_default=True, help="MTA to imitate."
)
@click.option("--hostname", default=None, help="Name in the banner and certificate (default: this machine's FQDN).")
@click.option("--sensor", default=None, help="Sensor name in every record (default: the host name).")
@click.option("--user", default=None, help="Drop root privileges to this user once the ports are bound.")
@click.option(
    "--tls-cert", type=click.Path(dir_okay=False, path_type=Path), help="Certificate (PEM); default self-signed."
)
@click.option("--tls-key", type=click.Path(dir_okay=False, path_type=Path), help="Key of --tls-cert (PEM).")
@click.option("--deliver-probes", is_flag=True, help="Deliver messages classified as relay tests (opt-in).")
@click.option("--smarthost", metavar="HOST:PORT", help="Where --deliver-probes hands relay tests.")
@click.option(
    "--max-probe-deliveries", type=click.IntRange(0, 10_000), default=10, show_default=True, help="Per UTC day."
)
@click.option(
    "--auth",
    "auth_mode",
    type=click.Choice(["refuse", "accept-any"]),
    default="refuse",
    show_default=True,
    help="AUTH after STARTTLS: refuse every login, or accept any (credentials are recorded either way).",
)
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="Field added to every record (repeatable).")
@click.option(
    "--disk-quota",
    type=click.IntRange(1, 10**7),
    default=1024,
    show_default=True,
    metavar="MB",
    help="Disk for raw messages; the oldest are pruned first.",
)
@click.option(
    "--max-log",
    type=click.IntRange(1, 10**7),
    default=1024,
    show_default=True,
    metavar="MB",
    help="sessions.jsonl size before it rotates to sessions.jsonl.1.",
)
@click.option(
    "--delay",
    default="0.05:0.35",
    show_default=True,
    metavar="MIN:MAX",
    help="Seconds of jitter before each reply (0:0 for none).",
)
@click.option("--idle-timeout", type=click.FloatRange(1, 3600), default=30, show_default=True, metavar="SECONDS")
@click.option("--session-limit", type=click.FloatRange(1, 86400), default=300, show_default=True, metavar="SECONDS")
@click.option(
    "--max-message-size", type=click.IntRange(1024, 100 * 2**20), default=10 * 2**20, show_default=True, metavar="BYTES"
)
@click.option("--max-recipients", type=click.IntRange(1, 10_000), default=100, show_default=True)
@click.option(
    "--max-per-address",
    type=click.IntRange(1, 10_000),
    default=10,
    show_default=True,
    help="Concurrent sessions from one client address.",
)
@click.option(
    "--max-sessions",
    type=click.IntRange(1, 100_000),
    default=500,
    show_default=True,
    help="Concurrent sessions in all.",
)
@click.option("--hpfeeds", metavar="HOST:PORT", help="Publish every record to this hpfeeds broker ('hpfeeds' extra).")
@click.option("--hpfeeds-ident", metavar="IDENT", help="hpfeeds identity (secret: $RELAYCHECK_HPFEEDS_SECRET).")
@click.option("--hpfeeds-channel", default="relaycheck.honeypot", show_default=True, metavar="CHANNEL")
@click.pass_context
def honeypot_command(ctx: click.Context, /, **options: object) -> None:
    """A fake open relay that records spammers' relay tests and delivers nothing.

    \b
    relaycheck honeypot --listen 0.0.0.0:25 --listen-tls 0.0.0.0:465 --data-dir DIR
    relaycheck honeypot report DIR --since 7d --format html
    relaycheck honeypot blocklist DIR --since 24h --format rbldnsd
    """
    if ctx.invoked_subcommand is not None:
        return
    from relaycheck.honeypot.run import run

    ctx.exit(run(options))


@honeypot_command.command("report")
@click.argument("data_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--since", default="7d", show_default=True, help="Window: 30m, 24h, 7d, 2w…")
@command_options(("output_format",), {}, report=ReportKind.HONEYPOT)
def report_command(data_dir: Path, since: str, output_format: str | None) -> None:
    """What the honeypot saw: sources, drop-boxes, campaigns, scanners, credentials."""
    from relaycheck.honeypot.record import read_records
    from relaycheck.honeypot.report import summarise

    now = datetime.now(UTC)
    start = now - parse_duration(since)
    summary = summarise(read_records(_data_dir(data_dir), start), start, now)
    click.echo(render(ReportKind.HONEYPOT, summary, chosen_format(output_format, False)), nl=False)


@honeypot_command.command("blocklist")
@click.argument("data_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--since", default="24h", show_default=True, help="Window; each entry expires this long after its last sighting."
)
@click.option("--format", "output_format", type=click.Choice(["plain", "rbldnsd"]), default="plain", show_default=True)
def blocklist_command(data_dir: Path, since: str, output_format: str) -> None:
    """Addresses seen relaying or testing within --since, for a firewall or an rbldnsd zone."""
    from relaycheck.honeypot.blocklist import RENDERERS, entries
    from relaycheck.honeypot.record import read_records

    now = datetime.now(UTC)
    window = parse_duration(since)
    listed = entries(read_records(_data_dir(data_dir), now - window), window)
    click.echo(RENDERERS[output_format](listed, window, now), nl=False)
