"""aiosmtpd servers with specific relay behaviours, for the tests, the demo and the honeypot.

aiosmtpd's own MAIL/RCPT parsing normalises or refuses the odd paths a relay tester sends
(``u@ext@[ip]``, unbracketed paths, source routes), so ``BehaviourSMTP`` overrides those verbs
to see the raw arguments and decide like a simple MTA would: a recipient is *local* when its
domain (after the last ``@``) is one of the server's, *outside* otherwise, and the policy says
which outside recipients it relays for.

Servers run on their own event loop in a thread (``ServerThread``), bound to loopback port 0,
so a synchronous caller (the CLI's demo, a CLI test) and an async test can both use them.
Readiness is signalled with an event, never guessed with a sleep.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any, Protocol

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session

from relaycheck.testing.loopthread import LoopThread

LOCAL_USERS = frozenset({"postmaster", "abuse", "alice"})

# BehaviourSMTP's own replies (Postfix's wording), shared with ``tests.support.lightsmtp``
# so both servers say exactly the same thing.
MAIL_OK = "250 2.1.0 Ok"
RCPT_OK = "250 2.1.5 Ok"
RSET_OK = "250 2.0.0 Ok"
QUEUED = "250 2.0.0 Ok: queued"
MAIL_SYNTAX = "501 5.5.4 Syntax: MAIL FROM:<address>"
RCPT_SYNTAX = "501 5.5.4 Syntax: RCPT TO:<address>"
NESTED_MAIL = "503 5.5.1 Error: nested MAIL command"
NEED_MAIL = "503 5.5.1 Error: need MAIL command"
NEED_RCPT = "503 5.5.1 Error: need RCPT command"
REFUSED_AT_DATA = "554 5.7.1 Error: relaying denied at DATA"
TOO_MANY_ERRORS = "421 4.7.0 mx.relay.test Error: too many errors"
TOO_MANY_CONNECTIONS = "421 4.7.0 {host} Error: too many connections from {peer}"
STARTTLS_OFFERED = "250-STARTTLS"
TLS_UNAVAILABLE = "454 4.7.0 TLS not available due to local problem"
READY_FOR_TLS = "220 2.0.0 Ready to start TLS"
# What a broken TLS layer answers the client's hello with: a fatal "handshake failure" alert record
HANDSHAKE_FAILURE = b"\x15\x03\x01\x00\x02\x02\x28"
REFUSED_AFTER_DOT = "554 5.7.1 Error: relaying denied after the message was read"
VRFY_CANNOT = "252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery"
PIPELINING = "250-PIPELINING"


@dataclass(frozen=True)
class Path:
    """A naive MTA's reading of a MAIL/RCPT argument."""

    raw: str
    local: str
    domain: str  # "" when unqualified
    source_routed: bool


def read_path(arg: str) -> Path:
    text = arg.strip()
    # drop ESMTP parameters after the path
    bracketed = text.startswith("<") and ">" in text
    text = text[1 : text.rindex(">")] if bracketed else text.split(" ", 1)[0]
    routed = text.startswith("@") and ":" in text
    if routed:
        text = text.split(":", 1)[1]
    local, at, domain = text.rpartition("@")
    if not at:
        return Path(arg, text, "", routed)
    return Path(arg, local, domain.lower(), routed)


def relayed_address(path: Path) -> str:
    """Where a naive relay sends a (possibly tricked) recipient: quotes, % and ! undone."""
    local = path.local.strip('"')
    if "@" in local:  # "u@ext"@local, u@ext@local
        return local
    if "%" in local:
        user, _, domain = local.rpartition("%")
        return f"{user}@{domain}"
    if "!" in local:
        domain, _, user = local.partition("!")
        return f"{user}@{domain}"
    return f"{local}@{path.domain}" if path.domain else local


Rule = Callable[["Transaction"], bool]


@dataclass(frozen=True)
class Transaction:
    mail: Path
    rcpt: Path
    tls: bool
    peer: str
    authenticated: bool = False


@dataclass(frozen=True)
class Behaviour:
    """What a server does. Defaults: a correctly closed MTA for ``relay.test``."""

    name: str
    hostname: str = "mx.relay.test"
    local_domains: frozenset[str] = frozenset({"relay.test", "mx.relay.test"})
    relay_if: Rule = lambda t: False  # when an outside recipient is relayed
    catch_all: bool = False
    percent_hack: bool = False  # local part "u%ext" at a local domain is relayed to ext
    deny_reply: str = "554 5.7.1 <{rcpt}>: Relay access denied"
    unknown_user_reply: str = "550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown"
    refuse_everything: str | None = None  # reply to every RCPT, postmaster included
    greylist_delay: float | None = None  # seconds a new (mail, rcpt) pair is deferred
    greylist_reply: str = "451 4.7.1 <{rcpt}>: Recipient address rejected: Greylisted, try again later"
    # Senders refused at MAIL, by kind: "outside" (a domain not ours), "null" (<>), "local" (one of
    # our domains, or unqualified): sender domain checks, SPF, a resolver that cannot see the domain.
    refuse_senders: frozenset[str] = frozenset()
    sender_reply: str = "553 5.1.8 <{sender}>: Sender address rejected: Domain not found"
    # STARTTLS advertised but failing: "454" (refused) or "handshake" (220, then a fatal TLS alert)
    starttls_failure: str | None = None
    max_connections: int | None = None  # sessions at once per client address; 421 at the greeting beyond
    delivery_delay: float = 0.0  # seconds before an accepted message is forwarded (a later queue run)
    refuse_after_dot: bool = False  # take the content, then refuse the message at the final dot
    require_starttls: bool = False
    pipelining: bool = True
    drop_after_commands: int | None = None  # close without a reply after N MAIL/RCPT/RSET
    errors_before_421: int | None = None  # say 421 and close after N errors in a session
    refuse_data: bool = False  # accept recipients, refuse DATA (servers that check late)
    multiline_replies: bool = False  # relay refusals as multi-line replies
    banner: str | None = None  # full greeting text after "220 " (default: hostname + ESMTP)
    next_hop: tuple[str, int] | None = None  # relay accepted messages there (else keep them: discard)
    vrfy_enabled: bool = False  # VRFY answers 250 for real users, 550 for others (enumeration)
    auth_any_password: bool = False  # offers AUTH PLAIN/LOGIN in clear text and accepts any password
    description: str = ""


BEHAVIOURS: dict[str, Behaviour] = {
    b.name: b
    for b in (
        Behaviour("closed", description="refuses relaying for everyone"),
        Behaviour("open", relay_if=lambda t: True, description="relays for anyone"),
        Behaviour("percent-only", percent_hack=True, description="relays only through the percent hack"),
        Behaviour(
            "null-sender-only",
            relay_if=lambda t: t.mail.raw.strip().startswith("<>"),
            description="relays bounces (null sender) only",
        ),
        Behaviour(
            "spoofed-local-sender-only",
            relay_if=lambda t: t.mail.domain in ("relay.test", "mx.relay.test"),
            description="relays when the sender claims to be local",
        ),
        Behaviour(
            "source-route-only",
            relay_if=lambda t: t.rcpt.source_routed,
            description="honours source routes",
        ),
        Behaviour(
            "greylisting",
            relay_if=lambda t: True,
            greylist_delay=0.5,
            description="an open relay behind greylisting",
        ),
        Behaviour(
            "relay-denied-4xx",
            deny_reply="454 4.7.1 <{rcpt}>: Relay access denied",
            description="Postfix's stock defer_unauth_destination",
        ),
        Behaviour(
            "reject-everything",
            refuse_everything="554 5.7.1 Client host rejected: Access denied",
            description="refuses every recipient, postmaster included",
        ),
        Behaviour(
            "starttls-required",
            relay_if=lambda t: t.tls,
            require_starttls=True,
            description="requires STARTTLS, then relays",
        ),
        Behaviour("catch-all", catch_all=True, description="closed, but takes any local user"),
        Behaviour(
            "relay-domain",
            relay_if=lambda t: t.rcpt.domain == "outside-a.test",
            description="backup MX for outside-a.test only",
        ),
        Behaviour(
            "refuse-at-data",
            relay_if=lambda t: True,
            refuse_data=True,
            description="accepts any recipient but refuses at DATA",
        ),
        Behaviour("no-pipelining", pipelining=False, description="closed, without PIPELINING"),
        Behaviour("multiline", multiline_replies=True, description="closed, multi-line replies"),
        Behaviour(
            "outside-sender-refused",
            refuse_senders=frozenset({"outside"}),
            description="closed; refuses outside senders at MAIL (Sendmail whose resolver cannot see them)",
        ),
        Behaviour(
            "outside-sender-refused-open",
            relay_if=lambda t: True,
            refuse_senders=frozenset({"outside"}),
            sender_reply="550 5.7.1 <{sender}>: Sender address rejected: Access denied",
            description="relays for any sender it accepts; refuses outside senders at MAIL",
        ),
        Behaviour(
            "every-sender-refused",
            refuse_senders=frozenset({"outside", "null", "local"}),
            sender_reply="501 5.1.7 Bad sender address syntax",
            description="refuses every sender at MAIL",
        ),
        Behaviour("starttls-454", starttls_failure="454", description="closed; offers STARTTLS, then says 454"),
        Behaviour(
            "starttls-broken",
            relay_if=lambda t: True,
            starttls_failure="handshake",
            description="an open relay; offers STARTTLS, says 220, then no handshake",
        ),
        Behaviour("one-connection", max_connections=1, description="closed; one session at a time per client"),
        Behaviour(
            "refuse-after-dot",
            relay_if=lambda t: True,
            refuse_after_dot=True,
            description="accepts any recipient and DATA, refuses the message at the final dot",
        ),
    )
}


class RcptBook(Protocol):
    """What the RCPT decision needs from the server's records (``BehaviourHandler`` is one)."""

    literal: str  # the server's own address literal, e.g. "[127.0.0.1]": a local domain

    def greylist_passed(self, t: Transaction, delay: float) -> bool: ...


def decide_rcpt(
    behaviour: Behaviour, book: RcptBook, mail: Path, rcpt: Path, *, tls: bool, peer: str, authenticated: bool
) -> str:
    """The reply a ``behaviour`` server gives to RCPT ``rcpt`` in a transaction from ``mail``."""
    b = behaviour
    shown = f"{rcpt.local}@{rcpt.domain}" if rcpt.domain else rcpt.local
    if b.refuse_everything:
        return b.refuse_everything
    transaction = Transaction(mail, rcpt, tls, peer, authenticated)
    if b.greylist_delay is not None and not book.greylist_passed(transaction, b.greylist_delay):
        return b.greylist_reply.format(rcpt=shown)
    local_names = b.local_domains | {book.literal}
    if rcpt.domain in local_names or not rcpt.domain:
        if b.percent_hack and "%" in rcpt.local:
            return RCPT_OK
        if rcpt.local.lower() in LOCAL_USERS or b.catch_all:
            return RCPT_OK
        return b.unknown_user_reply.format(rcpt=shown)
    if b.relay_if(transaction):
        return RCPT_OK
    deny = b.deny_reply.format(rcpt=shown)
    if b.multiline_replies:
        code, rest = deny.split(" ", 1)
        return f"{code}-{rest}\r\n{code}-Relaying is for our own users only.\r\n{code} {rest}"
    return deny


def sender_kind(behaviour: Behaviour, literal: str, mail: Path) -> str:
    """"null", "local" or "outside": how a naive MTA sees the sender."""
    if not mail.local and not mail.domain:
        return "null"
    if not mail.domain or mail.domain in behaviour.local_domains or mail.domain == literal:
        return "local"
    return "outside"


def mail_reply(behaviour: Behaviour, literal: str, mail: Path) -> str:
    """The reply to MAIL FROM ``mail`` (the syntax already checked)."""
    if behaviour.refuse_senders and sender_kind(behaviour, literal, mail) in behaviour.refuse_senders:
        shown = f"{mail.local}@{mail.domain}" if mail.domain else mail.local
        return behaviour.sender_reply.format(sender=shown)
    return MAIL_OK


def vrfy_reply(behaviour: Behaviour, arg: str | None) -> str:
    """The reply to VRFY ``arg`` (``None``: VRFY without an argument)."""
    if not behaviour.vrfy_enabled:
        return VRFY_CANNOT
    user = read_path(arg or "").local.lower()
    if user in LOCAL_USERS:
        return f"250 2.0.0 <{user}@{sorted(behaviour.local_domains)[0]}>"
    return f"550 5.1.1 <{arg}>: Recipient address rejected: User unknown"


def ehlo_keywords(behaviour: Behaviour, responses: list[str]) -> list[str]:
    """The EHLO reply lines, from aiosmtpd's (``responses``, last line "250 HELP"): AUTH kept only
    for the any-password behaviour, PIPELINING before the last line when the behaviour has it."""
    keywords = [r for r in responses if "AUTH" not in r or behaviour.auth_any_password]
    if behaviour.pipelining:
        keywords.insert(-1, PIPELINING)
    if behaviour.starttls_failure is not None:
        keywords.insert(-1, STARTTLS_OFFERED)
    return keywords


class BehaviourSMTP(SMTP):
    """aiosmtpd's SMTP with MAIL/RCPT/RSET/DATA decided by a ``Behaviour``, on raw arguments."""

    def __init__(self, handler: BehaviourHandler, behaviour: Behaviour, **kwargs: Any) -> None:
        super().__init__(handler, hostname=behaviour.hostname, **kwargs)
        self.behaviour = behaviour
        self.book = handler
        self._mail: Path | None = None
        self._rcpts: list[Path] = []
        self._counted = 0
        self._errors = 0
        self._peer: str | None = None  # counted against max_connections while connected
        self._over_limit = False
        if behaviour.banner is not None:
            self.__ident__ = ""
            self.hostname = behaviour.banner

    async def _reply(self, text: str) -> None:
        if text[0] in "45":
            self._errors += 1
            limit = self.behaviour.errors_before_421
            if limit is not None and self._errors > limit:
                await self.push(TOO_MANY_ERRORS)
                self._close()
                return
        await self.push(text)

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._peer is None:  # not again after STARTTLS
            peer = transport.get_extra_info("peername")
            self._peer = str(peer[0]) if peer else "?"
            self._over_limit = self.book.connection_opened(self._peer, self.behaviour.max_connections)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._peer is not None:
            self.book.connection_closed(self._peer)
            self._peer = None
        super().connection_lost(error)

    async def _handle_client(self) -> None:
        if self._over_limit:  # Postfix anvil / Exim smtp_accept_max_per_host
            await self.push(TOO_MANY_CONNECTIONS.format(host=self.behaviour.hostname, peer=self._peer))
            self._close()
            return
        await super()._handle_client()

    async def smtp_STARTTLS(self, arg: str) -> None:
        failure = self.behaviour.starttls_failure
        if failure is None or arg:
            await super().smtp_STARTTLS(arg)
        elif failure == "454":
            await self.push(TLS_UNAVAILABLE)
        else:  # "handshake": agree, then answer the client's hello with a fatal alert
            await self.push(READY_FOR_TLS)
            await self._reader.read(1)  # the hello has begun: what comes before it is discarded
            assert isinstance(self.transport, asyncio.Transport)
            self.transport.write(HANDSHAKE_FAILURE)
            self._close()

    def _count(self, verb: str, arg: str | None) -> bool:
        """Record the command; False when the behaviour says to drop the connection now."""
        self.book.note(f"{verb} {arg}" if arg else verb)
        self._counted += 1
        limit = self.behaviour.drop_after_commands
        if limit is not None and self._counted > limit:
            self._close()
            return False
        return True

    @property
    def _tls(self) -> bool:
        return self._tls_protocol is not None

    async def smtp_MAIL(self, arg: str | None) -> None:
        if not self._count("MAIL", arg):
            return
        if await self.check_helo_needed():
            return
        if not arg or not arg.upper().startswith("FROM:"):
            await self._reply(MAIL_SYNTAX)
            return
        if self._mail is not None:
            await self._reply(NESTED_MAIL)
            return
        mail = read_path(arg[5:])
        reply = mail_reply(self.behaviour, self.book.literal, mail)
        if reply != MAIL_OK:
            await self._reply(reply)
            return
        self._mail = mail
        self._rcpts = []
        await self.push(MAIL_OK)

    async def smtp_RCPT(self, arg: str | None) -> None:
        if not self._count("RCPT", arg):
            return
        if self._mail is None:
            await self._reply(NEED_MAIL)
            return
        if not arg or not arg.upper().startswith("TO:"):
            await self._reply(RCPT_SYNTAX)
            return
        rcpt = read_path(arg[3:])
        reply = self._decide(rcpt)
        if reply.startswith("250"):
            self._rcpts.append(rcpt)
        await self._reply(reply)

    def _decide(self, rcpt: Path) -> str:
        assert self._mail is not None
        peer = self.session.peer[0] if self.session is not None and self.session.peer else "?"
        authenticated = bool(self.session is not None and self.session.authenticated)
        return decide_rcpt(
            self.behaviour, self.book, self._mail, rcpt, tls=self._tls, peer=str(peer), authenticated=authenticated
        )

    async def smtp_VRFY(self, arg: str) -> None:
        self.book.note(f"VRFY {arg}")
        await self._reply(vrfy_reply(self.behaviour, arg))

    async def smtp_RSET(self, arg: str) -> None:
        if not self._count("RSET", arg):
            return
        self._mail = None
        self._rcpts = []
        await self.push(RSET_OK)

    async def smtp_DATA(self, arg: str) -> None:
        self.book.note("DATA")
        if self._mail is None or not self._rcpts:
            await self._reply(NEED_RCPT)
            return
        if self.behaviour.refuse_data:
            await self._reply(REFUSED_AT_DATA)
            return
        self.book.data_started += 1
        # Hand over to aiosmtpd's DATA handling so a real client could complete it; probe mode
        # never gets this far without hanging up right after 354.
        assert self.envelope is not None
        self.envelope.mail_from = self._mail.raw
        self.envelope.rcpt_tos = [r.raw for r in self._rcpts]
        await super().smtp_DATA(arg)


@dataclass
class BehaviourHandler:
    """aiosmtpd handler: EHLO keywords, and a record of what clients did (for tests)."""

    behaviour: Behaviour
    literal: str = "[127.0.0.1]"
    commands: list[str] = field(default_factory=list)
    messages: list[Envelope] = field(default_factory=list)
    data_started: int = 0
    _first_seen: dict[tuple[str, str, str], float] = field(default_factory=dict)
    keep_commands: bool = True  # False for long-running servers (the benchmark's population)
    sessions: dict[str, int] = field(default_factory=dict)  # open sessions per client address
    _later: set[asyncio.Task[None]] = field(default_factory=set)  # forwarding after delivery_delay

    def connection_opened(self, peer: str, limit: int | None) -> bool:
        """Count a new session; True when it is one more than ``limit`` allows from ``peer``."""
        self.sessions[peer] = self.sessions.get(peer, 0) + 1
        return limit is not None and self.sessions[peer] > limit

    def connection_closed(self, peer: str) -> None:
        self.sessions[peer] -= 1

    def note(self, command: str) -> None:
        """Record a command the client sent (tests read ``commands``)."""
        if self.keep_commands:
            self.commands.append(command)

    def greylist_passed(self, t: Transaction, delay: float) -> bool:
        key = (t.peer, t.mail.raw, t.rcpt.raw)
        first = self._first_seen.setdefault(key, time.monotonic())
        return time.monotonic() - first >= delay

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        return ehlo_keywords(self.behaviour, responses)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.behaviour.refuse_after_dot:
            return REFUSED_AFTER_DOT
        self.messages.append(envelope)
        if self.behaviour.next_hop is not None and self.behaviour.delivery_delay > 0:
            task = asyncio.ensure_future(self._forward_later(session, envelope))
            self._later.add(task)
            task.add_done_callback(self._later.discard)
        elif self.behaviour.next_hop is not None:
            await asyncio.to_thread(self._forward, session, envelope)
        return QUEUED

    async def _forward_later(self, session: Session, envelope: Envelope) -> None:
        """A queue run after ``delivery_delay`` seconds: the message leaves well after 250."""
        await asyncio.sleep(self.behaviour.delivery_delay)
        await asyncio.to_thread(self._forward, session, envelope)

    def _forward(self, session: Session, envelope: Envelope) -> None:
        """Relay like a naive MTA: undo the address tricks, add a Received header, pass it on."""
        assert self.behaviour.next_hop is not None
        peer = session.peer[0] if session.peer else "unknown"
        received = (
            f"Received: from {session.host_name} ([{peer}])\r\n\tby {self.behaviour.hostname} "
            f"(relaycheck test fixture) with ESMTP; {formatdate(localtime=False)}\r\n"
        ).encode()
        recipients = [relayed_address(read_path(r)) for r in envelope.rcpt_tos]
        host, port = self.behaviour.next_hop
        with smtplib.SMTP(host, port, timeout=10) as client:
            client.sendmail("", recipients, received + (envelope.original_content or b""))


def _any_password(server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
    """The "any password relays" misconfiguration: every AUTH succeeds."""
    return AuthResult(success=True)


class ServerThread(LoopThread):
    """Run one behaviour server on its own loop in a thread; ``with`` starts and stops it."""

    start_timeout = 10.0

    def __init__(
        self,
        behaviour: Behaviour | str,
        host: str = "127.0.0.1",
        port: int = 0,
        tls_context: ssl.SSLContext | None = None,
        implicit_tls: bool = False,
    ) -> None:
        """``tls_context`` offers STARTTLS, or with ``implicit_tls`` wraps the whole session (465)."""
        self.behaviour = BEHAVIOURS[behaviour] if isinstance(behaviour, str) else behaviour
        super().__init__(f"smtp-{self.behaviour.name}")
        self.host = host
        self.port = port
        self.implicit_tls = implicit_tls and tls_context is not None
        self.tls_context = tls_context
        literal = f"[IPv6:{host}]" if ":" in host else f"[{host}]"
        self.handler = BehaviourHandler(self.behaviour, literal=literal)
        self._server: asyncio.Server | None = None

    def _factory(self) -> BehaviourSMTP:
        auth: dict[str, Any] = {}
        if self.behaviour.auth_any_password:
            auth = {"authenticator": _any_password, "auth_require_tls": False}
        return BehaviourSMTP(
            self.handler,
            self.behaviour,
            tls_context=None if self.implicit_tls else self.tls_context,
            require_starttls=self.behaviour.require_starttls,
            loop=self._loop,
            **auth,
        )

    async def setup(self) -> None:
        self._server = await self._loop.create_server(
            self._factory, self.host, self.port, ssl=self.tls_context if self.implicit_tls else None
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def teardown(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

