"""``relaycheck watch`` (re-test on a schedule, alert on change) and ``relaycheck history``."""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from relaycheck import durations, validate
from relaycheck.api import parse_target
from relaycheck.dns import split_host_port
from relaycheck.errors import UsageError
from relaycheck.options import CheckOptions, default_helo
from relaycheck.options.table import build_check, command_options, sections_of
from relaycheck.render import ReportKind

if TYPE_CHECKING:
    from relaycheck.monitor.channels import Mail

PASSWORD_VARIABLE = "RELAYCHECK_SMTP_PASSWORD"
# What each round asks of the check: the same flags, meanings and defaults as ``relaycheck check``.
WATCH_CHECK_OPTIONS = (
    "ext_recipients", "local_domain", "helo", "resolver", "port", "no_mx", "no_ptr", "dnsbl", "retry_budget",
    "connect_timeout", "timeout",
)  # fmt: skip
DEFAULT_DB = "~/.local/share/relaycheck/history.db"
def _duration(_ctx: click.Context, _param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = durations.seconds(value, "--every")
    except UsageError as exc:
        raise click.BadParameter(str(exc)) from None
    if seconds < 60:
        raise click.BadParameter("at least 60 s between rounds (a mail server is not a stress test)")
    return seconds


def _address(value: str, option: str) -> str:
    return validate.address(value, option)


def _db_path(db: str) -> str:
    if "://" in db:
        return db
    path = Path(db).expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the directory of --db {db}: {exc.strerror or exc}") from None
    return str(path)


def _mail_channel(
    mail_to: tuple[str, ...],
    mail_from: str | None,
    smtp_server: str | None,
    smtp_user: str | None,
    smtp_cafile: str | None,
    helo: str,
) -> Mail | None:
    from relaycheck.monitor.channels import Mail

    if not mail_to:
        if smtp_server or smtp_user or mail_from:
            raise UsageError("--smtp-server, --smtp-user and --mail-from are for --mail-to")
        return None
    if not smtp_server:
        raise UsageError("--mail-to needs --smtp-server HOST:PORT (an authenticated submission server)")
    host, port = split_host_port(smtp_server, default_port=587)
    password = os.environ.get(PASSWORD_VARIABLE)
    if smtp_user and password is None:
        raise UsageError(f"set ${PASSWORD_VARIABLE} for --smtp-user (never on the command line)")
    context = None
    if smtp_cafile:
        context = ssl.create_default_context(cafile=smtp_cafile)
    sender = mail_from or (smtp_user if smtp_user and "@" in smtp_user else f"relaycheck@{default_helo()}")
    return Mail(
        host=host,
        port=port or 587,
        sender=_address(sender, "--mail-from"),
        recipients=tuple(_address(a, "--mail-to") for a in mail_to),
        user=smtp_user,
        password=password,
        tls_context=context,
        helo=helo,
    )


@click.command("watch")
@click.argument("targets", nargs=-1, required=True)
@click.option(
    "--db",
    default=DEFAULT_DB,
    show_default=True,
    metavar="PATH|URL",
    help="History database (SQLite file or SQLAlchemy URL); `serve --db` can share it.",
)
@click.option("--every", callback=_duration, metavar="DURATION", help="Time between rounds, e.g. 15m, 1h (default 1h).")
@click.option(
    "--once", is_flag=True, help="Run one round and exit with check's exit codes (for cron or a systemd timer)."
)
@click.option("--exit-on-change", is_flag=True, help="End on the first round with a change (exit code: that round's).")
@click.option(
    "--jitter",
    type=click.FloatRange(0, 3600),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="Random pause, at most this long, between two targets of a round.",
)
@click.option(
    "--webhook", "webhooks", multiple=True, metavar="URL", help="POST the alert (JSON) here on a change (repeatable)."
)
@click.option(
    "--mail-to", multiple=True, metavar="ADDRESS", help="E-mail the alert to ADDRESS (repeatable); needs --smtp-server."
)
@click.option(
    "--mail-from", metavar="ADDRESS", help="Sender of the alert e-mail (default: --smtp-user, or relaycheck@this host)."
)
@click.option(
    "--smtp-server",
    metavar="HOST:PORT",
    help="Submission server for alert e-mail; STARTTLS is required (port 587 by default).",
)
@click.option("--smtp-user", metavar="USER", help=f"Log in as USER (password: ${PASSWORD_VARIABLE}).")
@click.option(
    "--smtp-cafile",
    type=click.Path(exists=True, dir_okay=False),
    metavar="FILE",
    help="Trust only this CA (PEM) for the submission server.",
)
@click.option(
    "--exec",
    "commands",
    multiple=True,
    metavar="CMD",
    help="Run CMD on a change with the alert (JSON) on its stdin (repeatable).",
)
@click.option(
    "--alert-retries", type=click.IntRange(1, 20), default=3, show_default=True, help="Attempts per alert and channel."
)
@click.option(
    "--alert-retry-wait",
    type=click.FloatRange(0, 600),
    default=2.0,
    show_default=True,
    metavar="SECONDS",
    help="Wait before the first retry (doubled for each further one).",
)
@command_options(WATCH_CHECK_OPTIONS, sections_of(CheckOptions()))
def watch_command(
    targets: tuple[str, ...],
    db: str,
    every: float | None,
    once: bool,
    exit_on_change: bool,
    jitter: float,
    webhooks: tuple[str, ...],
    mail_to: tuple[str, ...],
    mail_from: str | None,
    smtp_server: str | None,
    smtp_user: str | None,
    smtp_cafile: str | None,
    commands: tuple[str, ...],
    alert_retries: int,
    alert_retry_wait: float,
    **values: Any,
) -> None:
    """Re-test TARGETS on a schedule, store every run, and alert when something changes."""
    from relaycheck.history.store import Store
    from relaycheck.monitor.channels import Channel, command, webhook
    from relaycheck.monitor.watch import Watcher, WatchSettings, jobs, watch_loop

    if once and (every is not None or exit_on_change):
        raise UsageError("--once runs one round: it does not go with --every or --exit-on-change")
    options = build_check(values)
    name = options.engine.helo
    channels: list[Channel] = [webhook(u) for u in webhooks]
    mail = _mail_channel(mail_to, mail_from, smtp_server, smtp_user, smtp_cafile, name)
    if mail is not None:
        channels.append(mail)
    channels += [command(c) for c in commands]
    round_jobs = jobs(targets, options)
    store = Store(_db_path(db))
    settings = WatchSettings(
        check=options,
        channels=tuple(channels),
        jitter=jitter,
        alert_attempts=alert_retries,
        alert_wait=alert_retry_wait,
    )
    watcher = Watcher(store, settings, log=click.echo, warn=lambda m: click.echo(f"relaycheck watch: {m}", err=True))

    async def run() -> int:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for number in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(number, task.cancel)
        try:
            return await watch_loop(
                watcher, round_jobs, interval=every or 3600.0, once=once, exit_on_change=exit_on_change
            )
        except asyncio.CancelledError:
            click.echo("relaycheck watch: stopped", err=True)
            return 0

    try:
        code = asyncio.run(run())
    finally:
        store.close()
    sys.stdout.flush()
    raise SystemExit(code)


@click.command("history")
@click.argument("target")
@click.option(
    "--db", default=DEFAULT_DB, show_default=True, metavar="PATH|URL", help="History database (watch's or serve's)."
)
@click.option(
    "--port", type=click.IntRange(1, 65535), default=25, show_default=True, help="Port, when TARGET has none."
)
@command_options(("output_format",), {}, report=ReportKind.HISTORY)
@click.option(
    "--limit", type=click.IntRange(1, 10_000), default=50, show_default=True, help="Runs shown, newest first."
)
def history_command(target: str, db: str, port: int, output_format: str | None, limit: int) -> None:
    """Show the stored runs of TARGET with the changes marked (from `watch` and the web UI)."""
    from relaycheck.history.store import Store
    from relaycheck.history.timeline import timeline
    from relaycheck.render import chosen_format, render
    from relaycheck.render.history import HistoryReport
    from relaycheck.web.guard import target_key

    spec = parse_target(target)
    key = target_key(spec.host, spec.port or port)
    if "://" not in db and not Path(db).expanduser().exists():
        raise UsageError(f"no history database at {db} (watch --db creates one)")
    store = Store(_db_path(db))
    try:
        rows = store.history(key, limit, with_reports=True)
        before = store.previous_done(key, rows[-1].created) if rows else None
        entries = timeline(rows, before)
        alerts = store.alerts_of(key)
        total = store.count(key)
    finally:
        store.close()
    shown = HistoryReport(key, entries, [a for a in alerts if a.status != "baseline"], total)
    click.echo(render(ReportKind.HISTORY, shown, chosen_format(output_format, False)), nl=False)
