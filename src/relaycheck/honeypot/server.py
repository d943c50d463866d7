"""The honeypot's SMTP server: aiosmtpd underneath, speaking like the chosen MTA persona.

Every recipient is accepted like an open relay would; nothing is relayed (only relay tests,
through the operator's smarthost, when delivery is opted in). ``HoneypotSMTP`` overrides the
verbs whose raw arguments matter (MAIL, RCPT: the relay tricks must be seen as sent, not as
aiosmtpd normalises them) and translates aiosmtpd's few own replies into the persona's words.
``Honeypot`` holds what the sessions share: limits and counters, the session log, the message
store, the drop-box registry and the optional delivery of relay tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
import re
import secrets
import socket
import ssl
import string
import sys
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import formatdate
from typing import Any, AnyStr, cast

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session, TLSSetupException

from relaycheck.catalogue.analysis import ServerNames, analyse_recipient, envelope_path
from relaycheck.honeypot.classify import Identity, classify, is_relay_test, mentions
from relaycheck.honeypot.deliver import ProbeDelivery
from relaycheck.honeypot.dropbox import DropboxRegistry
from relaycheck.honeypot.message import message_facts
from relaycheck.honeypot.model import (
    MAX_AUTH,
    MAX_COMMANDS,
    MAX_TRANSACTIONS,
    RECORD_VERSION,
    AuthAttempt,
    Classification,
    Recipient,
    SessionRecord,
    Transaction,
    cap,
)
from relaycheck.honeypot.personas import Persona
from relaycheck.honeypot.record import SessionLog
from relaycheck.honeypot.store import MessageStore

MB = 1024 * 1024
TOOL_MEMORY_SECONDS = 600.0  # a client's tool, remembered this long for its other sessions
TOOL_MEMORY_ENTRIES = 4096
BACKLOG = 1024  # pending connections the kernel holds while the loop accepts
MAX_DEFERRED = 50  # unnamed scanner records held per client until its last session ends
DROPBOX_SAVE_DELAY = 2.0  # seconds between rewrites of the drop-box registry


@dataclass(frozen=True)
class Limits:
    idle_timeout: float = 30.0
    session_limit: float = 300.0
    message_size: int = 10 * MB
    recipients: int = 100
    per_address: int = 10  # concurrent sessions from one client address
    total_sessions: int = 500  # concurrent sessions in all
    data_memory: int = 256 * MB  # message bytes held in memory at once, all sessions together
    delay: tuple[float, float] = (0.05, 0.35)  # jitter before each reply, seconds (min, max)
    finish_timeout: float = 60.0  # how long a session's record waits for its message work


@dataclass(frozen=True)
class HoneypotConfig:
    persona: Persona
    hostname: str
    sensor: str
    limits: Limits = Limits()
    auth_accept_any: bool = False
    tags: dict[str, str] = field(default_factory=dict)
    extra_names: tuple[str, ...] = ()  # more names the honeypot answers to (local domains)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _literal(address: str) -> str:
    ip = ipaddress.ip_address(address)
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return f"[ipv6:{ip.compressed}]" if ip.version == 6 else f"[{ip}]"


def _plain_ip(address: str) -> str:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return ip.compressed


def _worth_saying(count: int) -> bool:
    """1st, 10th, 100th… time: a full disk under a flood must not flood stderr too."""
    return count > 0 and 10 ** len(str(count)) // 10 == count


def _queue_id(length: int) -> str:
    return "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(length))


class Honeypot:
    """State shared by all sessions (one event loop)."""

    def __init__(
        self,
        config: HoneypotConfig,
        log: SessionLog,
        store: MessageStore,
        dropboxes: DropboxRegistry,
        delivery: ProbeDelivery | None = None,
        on_record: Callable[[SessionRecord], None] | None = None,
    ) -> None:
        self.config = config
        self.log = log
        self.store = store
        self.dropboxes = dropboxes
        self.delivery = delivery
        self.on_record = on_record
        self.active: dict[str, int] = {}
        self.total = 0
        self.memory_in_use = 0
        self.refused_connections = 0
        self.peak_total = 0  # most sessions open at once
        self.peak_per_address = 0  # most sessions open at once from one address
        self.sessions = 0
        self._finishing: set[asyncio.Task[None]] = set()
        self.live: set[HoneypotSMTP] = set()
        self._idle = asyncio.Event()  # set whenever a session leaves ``live``
        self._save_handle: asyncio.TimerHandle | None = None
        self._deferred: dict[str, list[SessionRecord]] = {}  # client -> unnamed scanner records held back
        self._recent_tools: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self.domains = self._domains()

    def _domains(self) -> frozenset[str]:
        names = {self.config.hostname.lower().rstrip("."), "localhost"}
        names |= {n.lower().rstrip(".") for n in self.config.extra_names}
        labels = self.config.hostname.lower().rstrip(".").split(".")
        if len(labels) > 2:
            names.add(".".join(labels[1:]))  # mail.example.org answers for example.org
        return frozenset(names)

    def admit(self, address: str) -> bool:
        if (
            self.total >= self.config.limits.total_sessions
            or self.active.get(address, 0) >= self.config.limits.per_address
        ):
            self.refused_connections += 1
            return False
        self.total += 1
        self.active[address] = count = self.active.get(address, 0) + 1
        self.peak_total = max(self.peak_total, self.total)
        self.peak_per_address = max(self.peak_per_address, count)
        return True

    def joined(self, session: HoneypotSMTP) -> None:
        self.live.add(session)

    def left(self, session: HoneypotSMTP, address: str) -> None:
        """A session admitted by ``admit`` ended."""
        self.live.discard(session)
        self._idle.set()
        self.total -= 1
        left = self.active.get(address, 1) - 1
        if left:
            self.active[address] = left
        else:
            self.active.pop(address, None)

    def take_memory(self, size: int) -> bool:
        if self.memory_in_use + size > self.config.limits.data_memory:
            return False
        self.memory_in_use += size
        return True

    def give_memory(self, size: int) -> None:
        self.memory_in_use -= size

    def protocol(self, listener: str, starttls: ssl.SSLContext | None) -> _Gate:
        return _Gate(self, listener, starttls)

    async def abort_all(self, timeout: float = 10.0) -> None:
        """End every open session now (shutdown) and wait until each has handed over its record."""
        for session in list(self.live):
            if session.record is not None:
                session.record.end_reason = "shutdown"
            if session.transport is not None:
                cast(asyncio.Transport, session.transport).abort()
        deadline = asyncio.get_running_loop().time() + timeout
        while self.live and asyncio.get_running_loop().time() < deadline:
            self._idle.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, deadline - asyncio.get_running_loop().time())):
                    await self._idle.wait()

    def finish_later(self, work: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._finishing.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._finishing.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            # A record lost is evidence lost: say so, with the reason, every time.
            print(f"relaycheck honeypot: a session record was lost: {type(error).__name__}: {error}", file=sys.stderr)

    async def drain(self) -> None:
        """Wait for the records of ended sessions to be written (at shutdown)."""
        while self._finishing:
            await asyncio.gather(*self._finishing, return_exceptions=True)

    async def finish(self, record: SessionRecord, pending: list[asyncio.Task[None]]) -> None:
        if pending:
            await asyncio.wait(pending, timeout=self.config.limits.finish_timeout)
        record.classification, record.tool, record.reasons = classify(record)
        ip = record.client_ip
        if (
            record.tool is None
            and record.classification == Classification.SCANNER
            and self.active.get(ip, 0) > 0
            and len(self._deferred.get(ip, ())) < MAX_DEFERRED
        ):
            # The same client is still connected: a tool working over parallel connections may
            # name itself in one that ends later. Written when the client's last session ends.
            self._deferred.setdefault(ip, []).append(record)
            return
        self._remember_tool(record)
        self._write(record)
        if self.active.get(ip, 0) == 0:
            for held in self._deferred.pop(ip, []):
                self._remember_tool(held)
                self._write(held)

    def _write(self, record: SessionRecord) -> None:
        self._link_dropboxes(record)
        self.sessions += 1
        if not self.log.write(record, self.config.tags) and _worth_saying(self.log.failed):
            print(f"relaycheck honeypot: {self.log.failed} session record(s) could not be written (disk full?)",
                  file=sys.stderr)  # fmt: skip
        if self.on_record is not None:
            self.on_record(record)

    def _remember_tool(self, record: SessionRecord) -> None:
        """A tool spreads its work over several connections; those without its traces (a
        STARTTLS check, a VRFY) are named after the same client's recent sessions."""
        now = time.monotonic()
        if record.tool is not None:
            self._recent_tools[record.client_ip] = (record.tool, now)
            self._recent_tools.move_to_end(record.client_ip)
            while len(self._recent_tools) > TOOL_MEMORY_ENTRIES:
                self._recent_tools.popitem(last=False)
        elif record.classification == Classification.SCANNER:
            recent = self._recent_tools.get(record.client_ip)
            if recent is not None and now - recent[1] <= TOOL_MEMORY_SECONDS:
                record.tool = recent[0]
                record.reasons.append(f"same client as a {recent[0]} session {now - recent[1]:.0f} s earlier")

    def _link_dropboxes(self, record: SessionRecord) -> None:
        changed = False
        if record.classification == Classification.RELAY_TEST:
            for t in record.transactions:
                if t.message is not None and t.message.relay_test:
                    for r in t.recipients:
                        if r.scope == "relay":
                            self.dropboxes.add_test(
                                r.address, session=record.session, source=record.client_ip, when=record.end
                            )
                            changed = True
        else:
            seen: set[str] = set()
            for t in record.transactions:
                for r in t.recipients:
                    box = self.dropboxes.add_campaign(r.address, session=record.session, when=record.end)
                    if box is not None and box.address not in seen:
                        seen.add(box.address)
                        r.dropbox = True
                        record.dropboxes.append(box.address)
                        record.linked_sessions.extend(s for s in box.tests if s not in record.linked_sessions)
                        changed = True
        if changed and self._save_handle is None:
            # Rewritten at most every few seconds (a campaign of sessions would rewrite it each
            # time), and at shutdown; the session records carry the links meanwhile.
            self._save_handle = asyncio.get_running_loop().call_later(DROPBOX_SAVE_DELAY, self.save_dropboxes)

    def save_dropboxes(self) -> None:
        if self._save_handle is not None:
            self._save_handle.cancel()
            self._save_handle = None
        self.dropboxes.save()


def _plain_recipient(path: str) -> str | None:
    """The mailbox of a plain ``<user@domain>`` path (the only kind a relay test is delivered to)."""
    address = path.strip().removeprefix("<").removesuffix(">")
    if re.fullmatch(r"[^\s@<>\"%!:]{1,64}@[A-Za-z0-9.-]{1,253}", address):
        return address
    return None


def _peer_ip(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return _plain_ip(str(peer[0])) if peer else "?"


class _Gate(asyncio.Protocol):
    """Admission before anything else: a connection over the caps gets the persona's 421 and is
    closed before an SMTP session (costly to build) exists, so a flood is turned away cheaply."""

    def __init__(self, honeypot: Honeypot, listener: str, starttls: ssl.SSLContext | None) -> None:
        self.hp = honeypot
        self.listener = listener
        self.starttls = starttls

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        address = _peer_ip(transport)
        if not self.hp.admit(address):
            text = self.hp.config.persona.too_many_connections.format(hostname=self.hp.config.hostname, ip=address)
            cast(asyncio.Transport, transport).write(text.encode() + b"\r\n")
            transport.close()
            return
        session = HoneypotSMTP(self.hp, self.listener, self.starttls)
        transport.set_protocol(session)
        session.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        """Bytes from a refused client before the close: dropped."""


class HoneypotSMTP(SMTP):
    """One client session."""

    # Real MTAs take longer lines than RFC 5321's 1000 (HTML spam has them, and so must we); it is
    # also the most a command line may buffer before it is refused.
    line_length_limit = 32768

    def __init__(self, honeypot: Honeypot, listener: str, starttls: ssl.SSLContext | None) -> None:
        config = honeypot.config
        self.hp = honeypot
        self.persona = config.persona
        self.listener = listener
        self.limits = config.limits
        super().__init__(
            _Handler(self),
            hostname=config.hostname,
            ident="-",
            data_size_limit=config.limits.message_size,
            enable_SMTPUTF8=True,
            tls_context=starttls,
            require_starttls=False,
            timeout=config.limits.idle_timeout,
            auth_require_tls=True,
            authenticator=self._check_login,
        )
        self._smtp_methods = {verb: self._noted(verb, method) for verb, method in self._smtp_methods.items()}
        self._translations = self._aiosmtpd_replies()
        self.record: SessionRecord | None = None
        self._ended = False
        self._greeted = False
        self._address = ""
        self._started = 0.0
        self._session_timer: asyncio.TimerHandle | None = None
        self._transaction: Transaction | None = None
        self._pending: list[asyncio.Task[None]] = []
        self._reserved = 0
        self._mail_argument = ""
        self._in_data = False
        self._last_input = time.monotonic()
        self._names = ServerNames(honeypot.domains, frozenset())
        self._identity = Identity((), ())

    # -- connection life -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.record is None:  # the TCP connection (STARTTLS calls this again, with TLS)
            peer = transport.get_extra_info("peername") or ("?", 0)
            sock = transport.get_extra_info("sockname") or ("?", 0)
            self._address = _peer_ip(transport)
            self._started = time.monotonic()
            self.hp.joined(self)
            server_ip = _plain_ip(str(sock[0])) if sock[0] != "?" else "?"
            self.record = SessionRecord(
                version=RECORD_VERSION,
                session=secrets.token_hex(8),
                sensor=self.hp.config.sensor,
                persona=self.persona.name,
                start=_now(),
                end="",
                duration_s=0.0,
                client_ip=self._address,
                client_port=int(peer[1]),
                server_ip=server_ip,
                server_port=int(sock[1]),
                listener=self.listener,
            )
            literals = {_literal(server_ip)} if server_ip != "?" else set()
            self._names = ServerNames(self.hp.domains, frozenset(literals))
            names = (self.hp.config.hostname, *self.hp.config.extra_names)
            self._identity = Identity((server_ip,) if server_ip != "?" else (), names, int(sock[1]))
            loop = asyncio.get_running_loop()
            self._session_timer = loop.call_later(self.limits.session_limit, self._session_expired)
        self._note_tls(transport)
        super().connection_made(transport)

    def _note_tls(self, transport: asyncio.BaseTransport) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None and self.record is not None:
            self.record.tls_version = ssl_object.version()
            cipher = ssl_object.cipher()
            self.record.tls_cipher = cipher[0] if cipher else None

    def connection_lost(self, error: Exception | None) -> None:
        if self._ended:
            return
        super().connection_lost(error)
        if self.record is None:
            return
        if self._in_data and self._transaction is not None:
            self._transaction.data_outcome = "aborted"  # cut off in the middle of its message
        self._close_transaction()  # a transaction left open (QUIT after RCPT) is part of the record
        record, self.record = self.record, None
        if self._session_timer is not None:
            self._session_timer.cancel()
        self.hp.left(self, self._address)
        record.end = _now()
        record.duration_s = round(time.monotonic() - self._started, 3)
        self.hp.finish_later(self.hp.finish(record, self._pending))
        self._ended = True  # a second call (TLS teardown) has nothing left to do

    def _session_expired(self) -> None:
        if self.record is not None:
            self.record.end_reason = "session-limit"
        if self.transport is not None:
            text = self.persona.timeout.format(hostname=self.hp.config.hostname, client="", ip=self._address)
            transport = cast(asyncio.Transport, self.transport)
            transport.write(text.encode() + b"\r\n")
            transport.abort()

    def data_received(self, data: bytes) -> None:
        self._last_input = time.monotonic()
        super().data_received(data)

    def _timeout_cb(self) -> None:
        # During DATA the idle time runs from the last bytes received, not from the last command:
        # a big message on a slow link is not idle (the session limit still bounds it).
        quiet = time.monotonic() - self._last_input
        if self._in_data and quiet < self.limits.idle_timeout:
            self._reset_timeout(self.limits.idle_timeout - quiet)
            return
        if self.record is not None:
            self.record.end_reason = "idle-timeout"
        if self.transport is not None:
            text = self.persona.timeout.format(hostname=self.hp.config.hostname, client="", ip=self._address)
            cast(asyncio.Transport, self.transport).write(text.encode() + b"\r\n")
            self.transport.close()

    # -- replies -------------------------------------------------------------------------------

    def _fill(self, text: str, **more: str) -> str:
        if "{" not in text:  # most replies have no slot: no date or queue id to make
            return text
        session = self.session
        values = {
            "hostname": self.hp.config.hostname,
            "client": (session.host_name if session is not None and session.host_name else "") or "unknown",
            "ip": self._address,
            "address": "",
            "size": str(self.limits.message_size),
        }
        if "{date}" in text:
            values["date"] = formatdate(localtime=False)
        if "{queue_id}" in text:
            values["queue_id"] = _queue_id(self.persona.queue_id_length)
        values.update(more)
        return text.format_map(values)

    def _aiosmtpd_replies(self) -> dict[str, str]:
        p = self.persona
        return {
            "221 Bye": p.quit,
            "250 OK": p.noop,
            "220 Ready to start TLS": p.starttls,
            "503 Error: send HELO first": p.need_helo,
            "503 Error: send EHLO first": p.need_helo,
            "500 Command line too long": p.line_too_long,
            "500 Line too long (see RFC5321 4.5.3.1.6)": p.line_too_long,
            "500 Error: bad syntax": p.bad_command,
            "552 Error: Too much mail data": p.too_big,
            "503 Error: need RCPT command": p.need_rcpt,
            "354 End data with <CR><LF>.<CR><LF>": p.data_start,
            "503 Already authenticated": "503 5.5.1 Error: already authenticated",
        }

    async def push(self, status: AnyStr) -> None:
        if isinstance(status, str):
            if not self._greeted:
                self._greeted = True
                status = "220 " + self._fill(self.persona.banner)
            elif status in self._translations:
                self._outcome(status)
                status = self._fill(self._translations[status])
            elif status.startswith('500 Error: command "'):
                self._note(status.split('"')[1] + " (not recognized)")
                status = self._fill(self.persona.bad_command)
            low, high = self.limits.delay
            if high > 0 and (len(status) < 4 or status[3] != "-"):  # once per reply, not per line
                await asyncio.sleep(random.uniform(low, high))
        await super().push(status)

    def _outcome(self, aiosmtpd_reply: str) -> None:
        if self._transaction is None:
            return
        if aiosmtpd_reply.startswith("552"):
            self._transaction.data_outcome = "too-big"
        elif aiosmtpd_reply.startswith("500 Line too long"):
            self._transaction.data_outcome = "line-too-long"

    # -- what the client did ---------------------------------------------------------------------

    def _note(self, command: str) -> None:
        record = self.record
        if record is None:
            return
        if len(record.commands) < MAX_COMMANDS:
            record.commands.append(cap(command))
        else:
            record.commands_dropped += 1

    def _noted(
        self, verb: str, method: Callable[[str | None], Awaitable[None]]
    ) -> Callable[[str | None], Awaitable[None]]:
        async def noted(arg: str | None) -> None:
            shown = f"{verb} {arg}" if arg else verb
            if verb == "AUTH" and arg:
                shown = f"AUTH {arg.split()[0]} …"  # credentials go to the auth list only
            self._note(shown)
            await method(arg)

        return noted

    def _close_transaction(self) -> None:
        """The current transaction ends (RSET, new MAIL after DATA, end of session)."""
        record, transaction = self.record, self._transaction
        self._transaction = None
        if record is None or transaction is None:
            return
        if transaction.data_outcome is None and transaction.message is None and transaction.recipients:
            transaction.data_outcome = "no-data"
        if len(record.transactions) < MAX_TRANSACTIONS:
            record.transactions.append(transaction)
        else:
            record.transactions_dropped += 1

    def _check_login(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
        accepted = self.hp.config.auth_accept_any
        record = self.record
        if record is not None:
            user, password = "", ""
            if isinstance(data, LoginPassword):
                user = data.login.decode("utf-8", errors="replace")
                password = data.password.decode("utf-8", errors="replace")
            if len(record.auth) < MAX_AUTH:
                record.auth.append(AuthAttempt(mechanism, cap(user, 256), cap(password, 256), accepted))
            else:
                record.auth_dropped += 1
        if accepted:
            return AuthResult(success=True, message=self._fill(self.persona.auth_ok))
        return AuthResult(success=False, handled=False, message=self._fill(self.persona.auth_failed))

    # -- verbs -----------------------------------------------------------------------------------

    async def smtp_MAIL(self, arg: str | None) -> None:
        if await self.check_helo_needed():
            return
        if not arg or arg[:5].upper() != "FROM:":
            await self.push("501 5.5.4 Syntax: MAIL FROM:<address>")
            return
        if self._transaction is not None:
            await self.push(self._fill(self.persona.nested_mail))
            return
        size = re.search(r"\bSIZE=(\d{1,20})\b", arg[5:], re.IGNORECASE)
        if size and int(size.group(1)) > self.limits.message_size:
            await self.push(self._fill(self.persona.too_big))
            return
        path = envelope_path(arg[5:])
        self._transaction = Transaction(mail_from=cap(path))
        self._mail_argument = arg[5:]
        assert self.envelope is not None
        self.envelope.mail_from = path
        await self.push(self._fill(self.persona.mail_ok, address=path))

    async def smtp_RCPT(self, arg: str | None) -> None:
        if await self.check_helo_needed():
            return
        transaction = self._transaction
        if transaction is None:
            await self.push(self._fill(self.persona.need_mail))
            return
        if not arg or arg[:3].upper() != "TO:":
            await self.push("501 5.5.4 Syntax: RCPT TO:<address>")
            return
        if len(transaction.recipients) >= self.limits.recipients:
            transaction.refused_recipients += 1
            await self.push(self._fill(self.persona.too_many_recipients))
            return
        analysis = analyse_recipient(self._mail_argument, arg[3:], self._names)
        path = cap(analysis.path)
        transaction.recipients.append(
            Recipient(path, str(analysis.scope), analysis.probe_id, analysis.family, analysis.outside_domain)
        )
        assert self.envelope is not None
        self.envelope.rcpt_tos.append(path)
        await self.push(self._fill(self.persona.rcpt_ok, address=path))

    async def smtp_RSET(self, arg: str | None) -> None:
        self._close_transaction()
        self._set_rset_state()  # type: ignore[no-untyped-call]
        await self.push(self._fill(self.persona.rset))

    async def smtp_VRFY(self, arg: str | None) -> None:
        await self.push(self._fill(self.persona.vrfy, address=arg or ""))

    async def smtp_EXPN(self, arg: str | None) -> None:
        await self.push(self._fill(self.persona.expn, address=arg or ""))

    async def smtp_HELP(self, arg: str | None) -> None:
        await self.push(self._fill(self.persona.help))

    async def smtp_QUIT(self, arg: str | None) -> None:
        if self.record is not None:
            self.record.end_reason = "quit"
        await super().smtp_QUIT(None)

    async def smtp_DATA(self, arg: str | None) -> None:
        if await self.check_helo_needed():
            return
        if self._transaction is None or not self._transaction.recipients:
            await self.push(self._fill(self.persona.need_rcpt))
            return
        size = self.limits.message_size
        if not self.hp.take_memory(size):
            self._transaction.data_outcome = "no-space"
            await self.push(self._fill(self.persona.no_space))
            return
        self._reserved = size
        self._in_data = True
        try:
            await super().smtp_DATA(arg)
        finally:
            self._in_data = False
            if self._reserved:  # not handed over to the message's processing
                self.hp.give_memory(self._reserved)
                self._reserved = 0
        if self._transaction is not None and self._transaction.message is None:
            self._transaction.data_outcome = self._transaction.data_outcome or "refused"
            self._close_transaction()

    async def accept_message(self, raw: bytes) -> str:
        """The message of the current transaction arrived: answer at once, examine it apart."""
        transaction = self._transaction
        assert transaction is not None and self.record is not None
        reserved, self._reserved = self._reserved, 0
        transaction.data_outcome = "accepted"
        task = asyncio.ensure_future(self._examine(transaction, raw, reserved, self.record.session))
        self._pending.append(task)
        self._close_transaction()
        return self._fill(self.persona.queued)

    async def _examine(self, transaction: Transaction, raw: bytes, reserved: int, session: str) -> None:
        try:
            facts, text = await asyncio.to_thread(message_facts, raw)
            facts.mentions = mentions(text, self._identity)
            relays = [r for r in transaction.recipients if r.scope == "relay"]
            facts.relay_test = is_relay_test(facts, len(relays))
            transaction.message = facts
            facts.stored = await asyncio.to_thread(self.hp.store.put, facts.sha256, raw)
            if facts.relay_test and self.hp.delivery is not None:
                recipients = [a for r in relays if (a := _plain_recipient(r.address)) is not None]
                if recipients:
                    sender = transaction.mail_from.strip().removeprefix("<").removesuffix(">")
                    delivered, outcome = await asyncio.to_thread(
                        self.hp.delivery.deliver, session=session, mail_from=sender, recipients=recipients, raw=raw
                    )
                    facts.delivered, facts.delivery = delivered, outcome
                else:
                    facts.delivery = "not delivered: no plain outside recipient"
        finally:
            self.hp.give_memory(reserved)


class _Handler:
    """aiosmtpd's handler hooks: EHLO/HELO wording and the arrival of a message."""

    def __init__(self, server: HoneypotSMTP) -> None:
        self.server = server

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        own = self.server
        if own.record is not None:
            own.record.helo, own.record.helo_verb = cap(hostname, 255), "EHLO"
        offered = " ".join(responses)
        lines = [own._fill(own.persona.ehlo_greeting, client=hostname)]
        for keyword in own.persona.ehlo_keywords:
            if keyword == "STARTTLS" and "STARTTLS" not in offered:
                continue
            if keyword.startswith("AUTH") and "AUTH" not in offered:
                continue  # AUTH only once TLS is up, like a careful MTA
            lines.append(own._fill(keyword))
        return [f"250-{line}" for line in lines[:-1]] + [f"250 {lines[-1]}"]

    async def handle_HELO(self, server: SMTP, session: Session, envelope: Envelope, hostname: str) -> str:
        session.host_name = hostname
        own = self.server
        if own.record is not None:
            own.record.helo, own.record.helo_verb = cap(hostname, 255), "HELO"
        return own._fill(own.persona.helo, client=hostname)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return await self.server.accept_message(envelope.original_content or b"")

    async def handle_exception(self, error: Exception) -> str:
        """A failed STARTTLS handshake or a broken connection: noted, never a traceback."""
        own = self.server
        if own.record is not None:
            own.record.end_reason = f"error: {type(error).__name__}"
        if isinstance(error, TLSSetupException):
            return "454 4.7.0 TLS not available due to local problem"
        # Not the client's doing: a bug or a resource problem the operator must hear about.
        print(f"relaycheck honeypot: session error: {type(error).__name__}: {error}", file=sys.stderr)
        return "451 4.3.0 Error: internal error"


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (bound before privileges are dropped)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind((host, port))
    sock.listen(BACKLOG)
    sock.setblocking(False)
    return sock


async def serve(
    honeypot: Honeypot, sock: socket.socket, *, implicit_tls: ssl.SSLContext | None, starttls: ssl.SSLContext | None
) -> asyncio.Server:
    """Serve one bound socket: STARTTLS offered on a plain listener, TLS from the start on 465."""
    loop = asyncio.get_running_loop()
    listener = "tls" if implicit_tls is not None else "plain"
    return await loop.create_server(
        lambda: honeypot.protocol(listener, None if implicit_tls is not None else starttls),
        sock=sock,
        ssl=implicit_tls,
        backlog=BACKLOG,  # asyncio would listen() again with 100: a flood's SYNs dropped, 1 s retries
        ssl_handshake_timeout=honeypot.config.limits.idle_timeout if implicit_tls is not None else None,
        start_serving=True,
    )
