"""The honeypot process: bind, make or load the certificate, drop privileges, serve until a signal.

Ports are bound first (port 25 needs root or CAP_NET_BIND_SERVICE), then ``--user`` takes over
for good; SIGTERM and SIGINT end the process cleanly: listeners closed, open sessions ended and
recorded, exit status 0.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import pwd
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from relaycheck.errors import UsageError
from relaycheck.honeypot.certificate import self_signed, server_context
from relaycheck.honeypot.command import parse_endpoint, parse_tags
from relaycheck.honeypot.deliver import Smarthost
from relaycheck.honeypot.personas import PERSONAS
from relaycheck.honeypot.publish import SECRET_VARIABLE, HpfeedsTarget
from relaycheck.honeypot.runtime import Listener, Settings, start, stop
from relaycheck.honeypot.server import HoneypotConfig, Limits, bind

MB = 1024 * 1024


def drop_privileges(user: str, data_dir: Path) -> None:
    """Become ``user`` for good (after binding): its group only, the data directory its own."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise UsageError(f"--user: no such user {user!r}") from None
    if os.geteuid() != 0:
        if os.geteuid() == entry.pw_uid:
            return
        raise UsageError("--user needs the honeypot to start as root (it binds first, then becomes that user)")
    for root, directories, files in os.walk(data_dir):
        for name in [root, *(os.path.join(root, d) for d in directories), *(os.path.join(root, f) for f in files)]:
            os.chown(name, entry.pw_uid, entry.pw_gid)
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    if os.getuid() != entry.pw_uid or os.geteuid() != entry.pw_uid:
        raise UsageError(f"could not become {user}")


# Charsets spam comes in: their codecs are imported on first use, so they are looked up before
# privileges go (an unknown one later only falls back to UTF-8).
CHARSETS = (
    "ascii", "latin-1", "iso-8859-2", "iso-8859-15", "windows-1250", "windows-1251", "windows-1252", "koi8-r",
    "koi8-u", "gb2312", "gbk", "gb18030", "big5", "shift_jis", "euc-jp", "iso-2022-jp", "euc-kr", "utf-16",
    "utf-7", "idna",
)  # fmt: skip
_SAMPLE = (
    b"From: a@b.example\r\nSubject: =?utf-8?b?dGVzdA==?=\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/html; charset=koi8-r\r\n'
    b'Content-Transfer-Encoding: quoted-printable\r\n\r\n<a href=3D"http://x.example/">x</a>\r\n--b\r\n'
    b'Content-Type: application/zip; name="a.zip"\r\nContent-Transfer-Encoding: base64\r\n\r\nUEsDBA==\r\n--b--\r\n'
)


def warm_up() -> None:
    """Import now whatever the sessions import on first use.

    After ``--user`` the process may no longer read the Python installation (a root-only
    prefix such as /root/.pyenv), so every lazy import must already have happened: the
    catalogue and its patterns, the MIME parser and its codecs, the fuzzy hash.
    """
    import codecs
    import concurrent.futures.thread  # noqa: F401  (asyncio.to_thread's pool)

    from relaycheck.catalogue.analysis import ServerNames, analyse_recipient
    from relaycheck.honeypot.message import message_facts

    for charset in CHARSETS:
        codecs.lookup(charset)
    analyse_recipient("<a@b.example>", "<c%d.example@[192.0.2.1]>", ServerNames(frozenset(), frozenset()))
    message_facts(_SAMPLE)


def _delay(text: str) -> tuple[float, float]:
    try:
        low, _, high = text.partition(":")
        pair = (float(low), float(high or low))
    except ValueError:
        raise UsageError(f"--delay takes MIN:MAX seconds, e.g. 0.05:0.35, not {text!r}") from None
    if not 0 <= pair[0] <= pair[1] <= 30:
        raise UsageError(f"--delay: need 0 <= MIN <= MAX <= 30, not {text!r}")
    return pair


def _hpfeeds(options: dict[str, Any]) -> HpfeedsTarget | None:
    if not options["hpfeeds"]:
        if options["hpfeeds_ident"]:
            raise UsageError("--hpfeeds-ident is for --hpfeeds HOST:PORT")
        return None
    if importlib.util.find_spec("hpfeeds") is None:
        raise UsageError("--hpfeeds needs the hpfeeds extra: pip install 'relaycheck[hpfeeds]'")
    host, port = parse_endpoint(options["hpfeeds"], "--hpfeeds")
    secret = os.environ.get(SECRET_VARIABLE, "")
    if not options["hpfeeds_ident"] or not secret:
        raise UsageError(f"--hpfeeds needs --hpfeeds-ident and the secret in ${SECRET_VARIABLE}")
    return HpfeedsTarget(host, port, options["hpfeeds_ident"], secret, options["hpfeeds_channel"])


def settings_from(options: dict[str, Any]) -> tuple[Settings, list[tuple[str, int, bool]]]:
    """The settings and listeners the options ask for (validated: UsageError otherwise)."""
    listen = [(*parse_endpoint(t, "--listen"), False) for t in options["listen"]]
    listen += [(*parse_endpoint(t, "--listen-tls"), True) for t in options["listen_tls"]]
    if not listen:
        raise UsageError("give at least one --listen HOST:PORT or --listen-tls HOST:PORT")
    if options["data_dir"] is None:
        raise UsageError("--data-dir is required")
    if bool(options["tls_cert"]) != bool(options["tls_key"]):
        raise UsageError("--tls-cert and --tls-key go together")
    smarthost = None
    if options["deliver_probes"]:
        if not options["smarthost"]:
            raise UsageError("--deliver-probes needs --smarthost HOST:PORT")
        smarthost = Smarthost(*parse_endpoint(options["smarthost"], "--smarthost"))
    elif options["smarthost"]:
        raise UsageError("--smarthost is for --deliver-probes (the honeypot never relays otherwise)")
    hostname = options["hostname"] or socket.getfqdn()
    hpfeeds = _hpfeeds(options)
    limits = Limits(
        idle_timeout=options["idle_timeout"],
        session_limit=options["session_limit"],
        message_size=options["max_message_size"],
        recipients=options["max_recipients"],
        per_address=options["max_per_address"],
        total_sessions=options["max_sessions"],
        delay=_delay(options["delay"]),
    )
    config = HoneypotConfig(
        persona=PERSONAS[options["persona"]],
        hostname=hostname,
        sensor=options["sensor"] or hostname,
        limits=limits,
        auth_accept_any=options["auth_mode"] == "accept-any",
        tags=parse_tags(options["tags"]),
    )
    settings = Settings(
        data_dir=Path(options["data_dir"]),
        config=config,
        disk_quota=options["disk_quota"] * MB,
        max_log=options["max_log"] * MB,
        smarthost=smarthost,
        max_probe_deliveries=options["max_probe_deliveries"],
        hpfeeds=hpfeeds,
    )
    return settings, listen


def _say(text: str) -> None:
    print(f"relaycheck honeypot: {text}", file=sys.stderr, flush=True)


async def _serve(settings: Settings, listeners: list[Listener], cert: Path, key: Path) -> None:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stopping.set)
    running = await start(settings, listeners, server_context(cert, key))
    persona = settings.config.persona.name
    for host, port, tls in running.addresses:
        shown = f"[{host}]" if ":" in host else host
        _say(f"listening on {shown}:{port} ({'implicit TLS' if tls else 'STARTTLS offered'}), persona {persona}")
    if settings.smarthost is not None:
        s = settings.smarthost
        _say(f"delivering relay tests to {s.host}:{s.port}, at most {settings.max_probe_deliveries} a day")
    else:
        _say("nothing will be relayed")
    if running.publisher is not None:
        t = running.publisher.target
        state = "connected" if running.publisher.connected else "not connected yet, retrying"
        _say(f"publishing records to hpfeeds {t.host}:{t.port} channel {t.channel} ({state})")
    _say(f"ready; recording to {settings.data_dir / 'sessions.jsonl'}")
    await stopping.wait()
    await stop(running)
    hp = running.honeypot
    _say(
        f"stopped: {hp.sessions} session(s) recorded, {hp.refused_connections} connection(s) refused over the "
        f"limits; at most {hp.peak_total} open at once, {hp.peak_per_address} from one address"
    )


def run(options: dict[str, Any]) -> int:
    settings, wanted = settings_from(options)
    directory = settings.data_dir
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o750)
        if options["tls_cert"]:
            cert, key = Path(options["tls_cert"]), Path(options["tls_key"])
        else:
            cert, key = self_signed(directory, settings.config.hostname)
        server_context(cert, key)  # fail now, while the error can still be reported plainly
    except (OSError, ValueError) as exc:
        raise UsageError(f"TLS certificate or data directory: {exc}") from None
    listeners = []
    for host, port, tls in wanted:
        try:
            listeners.append(Listener(bind(host, port), tls))
        except OSError as exc:
            raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    # aiosmtpd logs every unknown command a client sends as a warning: the records keep them.
    logging.getLogger("mail.log").setLevel(logging.CRITICAL)
    if options["user"]:
        warm_up()
        drop_privileges(options["user"], directory)
    asyncio.run(_serve(settings, listeners, cert, key))
    return 0
