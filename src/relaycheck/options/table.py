"""ONE table of the options of every command, and what it generates: the click options of a
command, and the options objects (``CheckOptions``, ``ScanConfig``, the web ``Settings``…) built
from what was given.

An entry says once what a flag means: its help, its type, the dataclass fields it sets
(``to``: ``"section.field"``), and the ``check`` that validates and normalises one given value.
Defaults are not in the table: they are the dataclasses' defaults (or the base object a command
passes, e.g. scans keep DNSBL lookups off), and ``--help`` shows them from there. Only options
that no dataclass holds (output paths, the format…) carry a ``default`` here.

A value that was not given is ``None`` (switches included), so building leaves the base object's
field alone: ``apply`` sets only what the user asked for.

Adopting the table in a new command: list its option names in ``COMMANDS`` (or pass them to
``command_options``), decorate it with ``@command_options("name", defaults)``, take ``**values``,
and build its objects with ``apply``/``build_check`` (entries it needs that are not here yet are
one ``Option`` each). Adding an option to existing commands is one entry here and its name in
their lists: no command code changes when the option sets a dataclass field.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import click

from relaycheck import validate
from relaycheck.errors import UsageError
from relaycheck.model import Severity, Transport
from relaycheck.options import CheckOptions, EngineOptions
from relaycheck.options import values as v
from relaycheck.render import ReportKind, format_names

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

# The sections an entry's ``to`` may name, from the innermost out: a command builds the objects
# it needs (``build_check`` nests the first three).
SECTIONS = ("hygiene", "engine", "check", "scan", "web", "exporter")


@dataclass(frozen=True)
class Option:
    flags: tuple[str, ...]
    help: str
    to: tuple[str, ...] = ()  # "section.field" set from the value; () for options a command reads itself
    type: Any = None  # a click type; None: text
    metavar: str | None = None
    multiple: bool = False
    switch: Any = None  # a switch (no value): the value it stands for (True, or False for --no-X)
    on_off: bool = False  # flags is ("--x/--no-x",): explicit True or False, None when absent
    check: Callable[[str], Any] | None = None  # one given value -> field value; ValueError: bad input
    default: Any = None  # only for options no dataclass field holds
    shown: str | None = None  # the field whose value --help shows as the default, when not to[0]
    formats: bool = False  # the choices are the output formats of the command's kind of report


def _timeout(help_: str) -> dict[str, Any]:
    return {"type": click.FloatRange(0.1, 600), "metavar": "SECONDS", "help": help_}


OPTIONS: dict[str, Option] = {
    # -- output -------------------------------------------------------------------------------
    "as_json": Option(("--json",), "Print the versioned JSON report (same as --format json).", switch=True,
                      default=False),
    "output_format": Option(("--format",), "Output format (default: text); markdown and html make a shareable "
                            "report (html is self-contained); nagios (check): a Monitoring Plugins status line with "
                            "perfdata and exit codes 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.",
                            formats=True),
    "warn_severity": Option(("--warn-severity",), "With --format nagios: findings of this severity or higher make "
                            "the state WARNING (default: off).", type=click.Choice([s.value for s in Severity])),
    "verbose": Option(("-v", "--verbose"), "Show everything: every probe and the full SMTP transcripts (check), "
                      "every line that could not be parsed (audit).", switch=True, default=False),
    # -- what to connect to -------------------------------------------------------------------
    "port": Option(("-p", "--port", "--ports"), "Port(s) for targets given without one (MX hosts included): 25, "
                   "or a list like 25,465,587 (465: implicit TLS; 587: submission, where relaying without AUTH "
                   "is an open relay too).", to=("check.ports",), check=v.ports, metavar="PORTS",
                   shown="check.port"),
    "all_ports": Option(("--all-ports",), "Same as --port 25,465,587.", to=("check.ports",), switch=(25, 465, 587)),
    "transport": Option(("--transport",), "plain, starttls or tls (implicit TLS). Default: tls on port 465, "
                        "plain otherwise.", to=("check.transport",), check=v.transport,
                        type=click.Choice([t.value for t in Transport])),
    "no_mx": Option(("--no-mx",), "Treat names as hosts: do not look up MX records.", to=("check.use_mx",),
                    switch=False),
    "resolver": Option(("--resolver",), "Ask this DNS server instead of the system's.",
                       to=("engine.resolver", "check.resolver", "web.resolver", "exporter.resolver"),
                       metavar="IP[:PORT]"),
    # -- the relay test -----------------------------------------------------------------------
    "ext_recipients": Option(("--ext-recipient",), "Outside recipient for relay probes (repeatable; use two "
                             "unrelated domains).", to=("engine.ext_recipients",), check=v.mail_address,
                             multiple=True, metavar="ADDRESS"),
    "sender": Option(("--sender",), "Outside sender address.", to=("engine.sender",), check=v.mail_address,
                     metavar="ADDRESS"),
    "local_domain": Option(("--local-domain",), "The server's mail domain, for every target (default: from "
                           "DNS/banner).", to=("engine.local_domain",), check=v.domain, metavar="DOMAIN"),
    "helo": Option(("--helo",), "EHLO name to announce (default: this machine's FQDN; in a scan, the --contact "
                   "URL's host first).", to=("engine.helo",), metavar="FQDN"),
    "retry_budget": Option(("--retry-budget",), "Keep retrying deferred (4xx, greylisted) probes this long.",
                           to=("engine.retry_budget",), type=click.FloatRange(0, 3600), metavar="SECONDS"),
    "data_probe": Option(("--data-probe",), "For accepted recipients, send DATA and hang up on 354 before any "
                         "content (no message is created).", to=("engine.data_probe",), switch=True),
    "all_probes": Option(("--all-probes",), "Also run the optional probes (the V26 address-literal control).",
                         to=("engine.all_probes",), switch=True),
    "exhaustive": Option(("--exhaustive",), "Run every relay probe even once the server is proven open, to list "
                         "every accepted path (default: stop when proven, the rest reported as not run).",
                         to=("engine.exhaustive",), switch=True),
    "max_connections": Option(("--max-connections",), "Connections at once per host.",
                              to=("engine.max_connections",), type=click.IntRange(1, 10)),
    "probes_per_connection": Option(("--probes-per-connection",), "Refusable relay probes sent on one connection "
                                    "before a fresh one (stay under the server's error limit: Postfix slows down "
                                    "after 10 errors, Exchange tarpits).", to=("engine.probes_per_connection",),
                                    type=click.IntRange(1, 50)),
    "connect_timeout": Option(("--connect-timeout",), **_timeout("TCP connect timeout (never above --timeout)."),
                              to=("engine.connect_timeout",)),
    "timeout": Option(("--timeout",), **_timeout("Per-step timeout (greeting, each reply)."),
                      to=("engine.command_timeout", "engine.greeting_timeout")),
    "target_timeout": Option(("--target-timeout",), "Whole-target budget (plus --retry-budget).",
                             to=("engine.deadline",), type=click.FloatRange(1, 3600), metavar="SECONDS"),
    # -- delivery mode ------------------------------------------------------------------------
    "confirm": Option(("--confirm",), "Delivery mode: relay probes go to ADDRESS (a mailbox you control); each "
                      "accepted one sends one labelled test message, and its arrival is checked (--sink or "
                      "--imap).", to=("engine.confirm_address",), check=v.mail_address, metavar="ADDRESS"),
    "confirm_timeout": Option(("--confirm-timeout",), "How long to wait for test messages to arrive.",
                              to=("engine.confirm_timeout",), type=click.FloatRange(1, 3600), metavar="SECONDS"),
    "sink_listen": Option(("--sink",), "Receive test messages with relaycheck's own sink.",
                          to=("check.sink_listen",), metavar="HOST:PORT"),
    "imap_url": Option(("--imap",), "Look for test messages in this mailbox: imaps://user@host/INBOX (password: "
                       "$RELAYCHECK_IMAP_PASSWORD or a prompt).", metavar="URL"),
    "imap_keep": Option(("--imap-keep",), "Leave the test messages in the IMAP mailbox.", switch=True,
                        default=False),
    "imap_cafile": Option(("--imap-cafile",), "Trust only this certificate (PEM) for the IMAP server, e.g. its "
                          "self-signed one. Default: the system's trust store.",
                          type=click.Path(exists=True, dir_okay=False), metavar="FILE"),
    # -- hygiene checks -----------------------------------------------------------------------
    "no_ptr": Option(("--no-ptr",), "Skip the reverse DNS (PTR, FCrDNS) checks.", to=("hygiene.ptr",),
                     switch=False),
    "dnsbl": Option(("--dnsbl/--no-dnsbl",), "Look the server up in DNS blocklists (on in check, off in scan: "
                    "public DNSBLs refuse bulk use).", to=("hygiene.dnsbl",), on_off=True),
    "dnsbl_zones": Option(("--dnsbl-zone",), "Ask this DNSBL zone instead of the default list (repeatable; e.g. "
                          "your own mirror); implies --dnsbl.", to=("hygiene.dnsbl_zones",), check=v.dnsbl_zone,
                          multiple=True, metavar="ZONE"),
    "no_tls_check": Option(("--no-tls-check",), "Skip the certificate and TLS protocol checks.",
                           to=("hygiene.tls",), switch=False),
    "no_tls_battery": Option(("--no-tls-battery",), "Do not repeat the relay battery over STARTTLS.",
                             to=("hygiene.tls_battery",), switch=False),
    "no_vrfy": Option(("--no-vrfy",), "Skip the VRFY/EXPN user-enumeration check.", to=("hygiene.vrfy",),
                      switch=False),
    "auth_bypass_check": Option(("--auth-bypass-check",), "Try ONE AUTH with a random user and password, then a "
                                "relay probe (servers that relay after any AUTH are open). Never more than one "
                                "attempt.", to=("hygiene.auth_bypass",), switch=True),
    # -- configuration audits ----------------------------------------------------------------
    "is_postfix": Option(("--postfix",), "Audit as Postfix (main.cf, master.cf, postconf -n).", switch=True,
                         default=False),
    "is_exim": Option(("--exim",), "Audit as Exim (exim4.conf, update-exim4.conf.conf, conf.d).", switch=True,
                      default=False),
    "is_exchange": Option(("--exchange",), "Audit as Exchange (Get-ReceiveConnector output).", switch=True,
                          default=False),
    "is_sendmail": Option(("--sendmail",), "Audit as Sendmail (sendmail.mc, access).", switch=True, default=False),
    "is_opensmtpd": Option(("--opensmtpd",), "Audit as OpenSMTPD (smtpd.conf).", switch=True, default=False),
    "no_tables": Option(("--no-tables",), "Do not read the Postfix lookup tables the configuration names.",
                        switch=True, default=False),
    # -- scans --------------------------------------------------------------------------------
    "lists": Option(("-iL", "--input-list"), "Read targets from FILE ('-': stdin): one or more per line, or CSV "
                    "ip,domain,tag,port.", multiple=True, metavar="FILE"),
    "output": Option(("-o", "--output"), "JSON Lines results, one record per target ('-': stdout).",
                     metavar="FILE", default="-"),
    "metadata": Option(("-m", "--metadata"), "The scan's metadata JSON. Default: the results file's name plus "
                       ".meta.json.", metavar="FILE"),
    "limit": Option(("--limit",), "At most this many servers listed per section (0: all).",
                    type=click.IntRange(0), default=200),
    "resume": Option(("--resume",), "Continue a scan: keep OUTPUT, skip targets already in it.", switch=True,
                     default=False),
    "excludes": Option(("--exclude",), "Never touch these addresses (IP, CIDR, a-b; repeatable, "
                       "comma-separated).", multiple=True, metavar="BLOCK"),
    "exclude_files": Option(("--exclude-file",), "More excludes, one block per line, '#' comments (zmap "
                            "blocklist format).", multiple=True, metavar="FILE"),
    "include_reserved": Option(("--include-reserved",), "Lift the default exclude list (IANA special-purpose "
                               "ranges): labs and internal audits.", switch=True, default=False),
    "rate": Option(("--rate",), "New TCP connections per second, all targets together (0: unlimited).",
                   to=("scan.rate",), type=click.FloatRange(0)),
    "concurrency": Option(("--concurrency",), "Targets tested at once.", to=("scan.concurrency",),
                          type=click.IntRange(1, 20000)),
    "per_subnet": Option(("--per-subnet",), "Hosts of one /24 (IPv6: /64) tested at once (0: no cap).",
                         to=("scan.per_subnet",), type=click.IntRange(0)),
    "contact": Option(("--contact",), "Where operators learn about the scan / opt out (http(s) or mailto); see "
                      "docs/scan.md.", check=v.contact_url, metavar="URL"),
    "seed": Option(("--seed",), "Order of addresses and the shard split.", type=int, default=0),
    "shards": Option(("--shards",), "Split the scan in N parts.", type=click.IntRange(1), default=1),
    "shard": Option(("--shard",), "Which part (0-based).", type=click.IntRange(0), default=0),
    "dask": Option(("--dask",), "Run on a Dask cluster (tcp://scheduler:8786) or N local worker processes.",
                   metavar="ADDRESS|local[:N]"),
    "workers": Option(("--workers",), "Scan in N local processes, one core each (0: one per CPU). One process "
                      "tests about 150 servers a second; use more when --rate allows more.",
                      type=click.IntRange(0, 256), default=1),
    "chunk_size": Option(("--chunk-size",), "Targets per Dask task.", type=click.IntRange(1, 100000), default=256),
    "full": Option(("--full",), "Records carry every observation and the SMTP transcripts.", to=("scan.full",),
                   switch=True),
    "progress": Option(("--progress",), "Progress on stderr: a bar on a terminal, status lines otherwise.",
                       type=click.Choice(["auto", "bar", "lines", "none"]), default="auto"),
    "status_interval": Option(("--status-interval",), "Seconds between status lines.", type=click.FloatRange(0.1),
                              metavar="SECONDS", default=5.0),
    # -- the Prometheus exporter --------------------------------------------------------------
    "exporter_listen": Option(("--listen",), "Where to serve HTTP ([IPv6]:PORT for IPv6).", check=v.exporter_listen,
                              metavar="HOST:PORT", default="127.0.0.1:9925"),
    "cache_ttl": Option(("--cache-ttl",), "Reuse a target's result this long (scrapes in between get the cached "
                        "result).", to=("exporter.cache_ttl",), type=click.FloatRange(0, 86_400), metavar="SECONDS"),
    "max_checks": Option(("--max-checks",), "Checks running at once.", to=("exporter.max_checks",),
                         type=click.IntRange(1, 100)),
    "max_waiting": Option(("--max-waiting",), "Checks waiting for a slot; further /probe requests for new targets "
                          "get 503.", to=("exporter.max_waiting",), type=click.IntRange(0, 10_000)),
    "scrape_timeout": Option(("--timeout",), "Longest wait for a result within one scrape (Prometheus's scrape "
                             "timeout header lowers it); a check that takes longer goes on and fills the cache.",
                             to=("exporter.check_timeout",), type=click.FloatRange(1, 3600), metavar="SECONDS"),
    # -- the web service ----------------------------------------------------------------------
    "listen": Option(("--listen",), "Address to serve HTTP on ([IPv6]:PORT for IPv6). Put a TLS reverse proxy "
                     "in front for the Internet.", check=v.listen, metavar="HOST:PORT", default="127.0.0.1:8025"),
    "db": Option(("--db",), "SQLite file, or any SQLAlchemy URL (e.g. postgresql+psycopg://user@host/db).",
                 to=("web.db_url",), metavar="PATH|URL"),
    "allow_private": Option(("--allow-private",), "Also test loopback, private, link-local… addresses (labs and "
                            "internal use only).", to=("web.allow_private", "exporter.allow_private"), switch=True),
    "allow_ports": Option(("--allow-port",), "Also allow this port (repeatable; 25, 465 and 587 are always "
                          "allowed).", type=click.IntRange(1, 65535), multiple=True, metavar="PORT"),
    "requests_per_minute": Option(("--rate",), "Requests per minute per client address (IPv6: per /64).",
                                  to=("web.requests_per_minute",), type=click.IntRange(1, 100_000)),
    "max_per_client": Option(("--max-per-client",), "Tests running at once per client address.",
                             to=("web.max_running_per_client",), type=click.IntRange(1, 1000)),
    "max_running": Option(("--max-running",), "Tests running at once.", to=("web.max_running",),
                          type=click.IntRange(1, 10_000)),
    "cooldown": Option(("--cooldown",), "Wait before the same target may be tested again (earlier requests get "
                       "the recent result).", to=("web.cooldown",), type=click.FloatRange(0, 86_400),
                       metavar="SECONDS"),
    "max_streams_per_client": Option(("--max-streams-per-client",), "Open live-progress streams per client "
                                     "address (pages beyond it follow by polling).",
                                     to=("web.max_streams_per_client",), type=click.IntRange(1, 1000)),
    "trusted_proxies": Option(("--trusted-proxy",), "Reverse proxy whose X-Forwarded-For is believed "
                              "(repeatable).", to=("web.trusted_proxies",), check=v.network, multiple=True,
                              metavar="ADDRESS|NETWORK"),
    "allow_data_probe": Option(("--allow-data-probe",), "Let API clients ask for mode data-probe (DATA, then hang "
                               "up on 354). Off: probe mode only.", to=("web.allow_data_probe",), switch=True),
    "public_history": Option(("--public-history",), "Show every test of a target to everyone (history pages, API). "
                             "Off: a client sees only its own tests.", to=("web.public_history",), switch=True),
}


# The options of each command, in --help order. A command that adopts the table adds its list
# here (or keeps its own tuple) and passes it to ``command_options``.
COMMANDS: dict[str, tuple[str, ...]] = {
    "check": (
        "as_json", "output_format", "warn_severity", "verbose", "ext_recipients", "sender", "local_domain", "helo",
        "resolver", "retry_budget", "data_probe", "confirm", "sink_listen", "imap_url", "imap_keep", "imap_cafile",
        "confirm_timeout", "transport", "port", "all_ports", "no_ptr", "dnsbl", "dnsbl_zones", "no_tls_check",
        "no_tls_battery", "no_vrfy", "auth_bypass_check", "all_probes", "exhaustive", "no_mx", "connect_timeout",
        "timeout", "target_timeout", "max_connections", "probes_per_connection",
    ),
    "scan": (
        "lists", "output", "metadata", "resume", "port", "transport", "no_mx", "resolver", "excludes",
        "exclude_files", "include_reserved", "rate", "concurrency", "max_connections", "probes_per_connection",
        "per_subnet",
        "connect_timeout", "timeout", "target_timeout", "retry_budget", "helo", "contact", "ext_recipients",
        "sender", "local_domain", "data_probe", "exhaustive", "no_ptr", "dnsbl", "dnsbl_zones", "no_tls_check",
        "no_tls_battery", "no_vrfy", "seed", "shards", "shard", "dask", "workers", "chunk_size", "full", "progress",
        "status_interval",
    ),
    "serve": (
        "listen", "db", "allow_private", "allow_ports", "resolver", "requests_per_minute", "max_per_client",
        "max_running", "cooldown", "retry_budget", "max_streams_per_client", "trusted_proxies", "helo",
        "ext_recipients", "allow_data_probe", "public_history",
    ),
    "audit": (
        "is_postfix", "is_exim", "is_exchange", "is_sendmail", "is_opensmtpd", "as_json", "output_format",
        "no_tables", "verbose",
    ),
    "report": ("output_format", "metadata", "limit"),
    "exporter": (
        "exporter_listen", "cache_ttl", "max_checks", "max_waiting", "scrape_timeout", "allow_private", "allow_ports",
        "resolver", "helo", "ext_recipients", "local_domain", "no_ptr", "dnsbl",
    ),
}


def checker(name: str) -> Callable[[str], Any]:
    """The check of option ``name``'s value, for forms that take the same value (the web UI):
    one given text -> the field value, ``ValueError`` for bad input."""
    check = OPTIONS[name].check
    if check is None:
        raise KeyError(f"option {name!r} takes its value as given")
    return check


def _field(objects: Mapping[str, object], path: str) -> Any:
    section, _, name = path.partition(".")
    return getattr(objects[section], name) if section in objects else None


def _shown_default(option: Option, objects: Mapping[str, object]) -> str | None:
    if option.switch is not None or option.on_off or "efault:" in option.help:  # the help says it in words
        return None
    value = _field(objects, option.shown or option.to[0]) if option.to or option.shown else option.default
    if value is None or value == ():
        return None
    if isinstance(value, tuple):
        return ", ".join(map(str, value))
    return str(getattr(value, "value", value))


def _callback(check: Callable[[str], Any]) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def callback(_ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
        try:
            if value is None:
                return None
            if isinstance(value, tuple):
                return tuple(check(item) for item in value)
            return check(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None

    return callback


def click_option(name: str, objects: Mapping[str, object], report: ReportKind | None = None) -> Callable[[F], F]:
    """The click option of table entry ``name``; ``objects`` (section -> object) hold the defaults
    ``--help`` shows; ``report``: the kind of report the command prints (its --format choices)."""
    option = OPTIONS[name]
    if option.formats:
        option = replace(option, type=click.Choice(format_names(report)))
    shown = _shown_default(option, objects)
    help_ = option.help if shown is None else f"{option.help}  [default: {shown}]"
    attrs: dict[str, Any] = {"help": help_, "metavar": option.metavar, "multiple": option.multiple}
    if option.switch is not None:
        attrs.update(is_flag=True, flag_value=option.switch, default=option.default)
    elif option.on_off:
        attrs.update(default=None)
    else:
        attrs.update(type=option.type, default=option.default)
    if option.check is not None:
        attrs["callback"] = _callback(option.check)
    return click.option(name, *option.flags, **attrs)


def command_options(
    command: str | Iterable[str], objects: Mapping[str, object], *, report: ReportKind | None = None
) -> Callable[[F], F]:
    """Decorate a command with its options (``COMMANDS[command]``, or the names given), in that
    order in ``--help``; ``report`` is the kind of report it prints, when it has --format."""
    names = COMMANDS[command] if isinstance(command, str) else tuple(command)
    decorators = [click_option(n, objects, report) for n in names]

    def decorate(function: F) -> F:
        for decorator in reversed(decorators):
            function = decorator(function)
        return function

    return decorate


def sections_of(check: CheckOptions, **more: object) -> dict[str, object]:
    """The objects each section names, for ``--help``'s defaults: a check's three, plus ``more``."""
    return {"hygiene": check.engine.hygiene, "engine": check.engine, "check": check, **more}


def apply(section: str, obj: T, values: Mapping[str, Any]) -> T:
    """``obj`` with every field of ``section`` that a given value sets (in table order)."""
    changes: dict[str, Any] = {}
    for name, option in OPTIONS.items():
        value = values.get(name)
        if value is None or value == ():
            continue  # not given: the base object's value stands
        for path in option.to:
            where, _, field_name = path.partition(".")
            if where == section:
                changes[field_name] = value
    return replace(obj, **changes) if changes else obj  # type: ignore[type-var]


def build_check(values: Mapping[str, Any], base: CheckOptions | None = None) -> CheckOptions:
    """The ``CheckOptions`` a command's given values stand for, over ``base`` (default: the dataclasses')."""
    base = base or CheckOptions()
    hygiene = apply("hygiene", base.engine.hygiene, values)
    if hygiene.dnsbl_zones and values.get("dnsbl_zones"):
        if values.get("dnsbl") is False:
            raise UsageError("--dnsbl-zone asks DNSBL zones and --no-dnsbl asks none: give one of them")
        hygiene = replace(hygiene, dnsbl=True)
    engine = apply("engine", replace(base.engine, hygiene=hygiene), values)
    # A connect never waits longer than any other step.
    engine = replace(engine, connect_timeout=min(engine.connect_timeout, engine.command_timeout))
    check = apply("check", replace(base, engine=engine), values)
    if check.ports is not None:  # --port: one port is `port`; `ports` only holds a list
        check = replace(check, port=check.ports[0], ports=check.ports if len(check.ports) > 1 else None)
    # Every value that reaches a server or a resolver, checked before any target is touched.
    engine = validate.wire_ready(check.engine)
    return replace(check, engine=engine, resolver=engine.resolver)


def build_engine(values: Mapping[str, Any], base: EngineOptions) -> EngineOptions:
    """The engine options alone (for commands that test through a service of their own)."""
    return build_check(values, CheckOptions(engine=base)).engine
