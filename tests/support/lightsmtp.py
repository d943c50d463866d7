"""A small ``asyncio.Protocol`` SMTP server that answers like ``BehaviourSMTP``, byte for byte.

``BehaviourSMTP`` (aiosmtpd underneath) costs several milliseconds of CPU per connection:
aiosmtpd's ``SMTP.__init__`` runs ``inspect.getmembers``/``dir`` on every connection, reads
through a ``StreamReader`` in a task, resets a timer and logs on every command. A scan
benchmark against a population of such servers measures the servers more than the scanner.
``LightSMTP`` is one plain Protocol object per connection: the greeting, EHLO/HELO/HELP replies
are computed once per server (``LightHost``), commands are dispatched through a module-level
table, and every reply to the commands of one ``data_received`` goes out in one write.

What it says is what ``BehaviourSMTP`` says with aiosmtpd 1.4.x, without TLS and without AUTH
(as the scan population runs it): the greeting (hostname and ``aiosmtpd.smtp.__ident__``),
EHLO (aiosmtpd's keywords, PIPELINING where ``BehaviourHandler`` puts it), HELO, MAIL, RCPT
(``decide_rcpt``, shared with ``BehaviourSMTP``), RSET, VRFY, EXPN, NOOP, QUIT, HELP, STARTTLS
("454 TLS not available"), AUTH (refused the way aiosmtpd refuses it without TLS), DATA (503
without recipients, the ``refuse_data`` refusal, or 354 then the content read and discarded
with aiosmtpd's line and size limits, then the handler's "250 2.0.0 Ok: queued"), verbs in any
case, unknown verbs (500, and aiosmtpd's 502 goodbye at the fifth), empty or non-ASCII lines
and command lines over aiosmtpd's limits ("500 Command line too long": a line over
``SMTP.line_length_limit`` bytes before its LF, or over the per-command size limit). Input is
bounded: an over-long line is skipped, never buffered, and DATA content is counted, not kept.

Supported behaviours: every one in ``BEHAVIOURS`` except ``starttls-required`` — closed,
open, percent-only, null-sender-only, spoofed-local-sender-only, source-route-only,
greylisting (the same ``BehaviourHandler.greylist_passed`` book), relay-denied-4xx,
reject-everything, catch-all, relay-domain, refuse-at-data, no-pipelining, multiline — and the
``Behaviour`` knobs banner, drop_after_commands, errors_before_421, vrfy_enabled, greylist_reply,
refuse_senders/sender_reply, starttls_failure (STARTTLS advertised, then 454, or 220 and a fatal TLS alert),
max_connections (421 at the greeting), refuse_after_dot. Refused
(``ValueError``): ``require_starttls`` (needs TLS), ``auth_any_password`` (needs AUTH),
``next_hop`` (forwarding accepted messages).

Known differences from aiosmtpd, none visible to relaycheck's check or scan:

- no idle timeout (aiosmtpd closes a connection idle for 300 s);
- accepted DATA content is discarded: ``BehaviourHandler.messages`` stays empty;
- aiosmtpd keeps MAIL's line limit in a dict shared by all its connections (cleared when any
  connection starts, raised by 26 at every EHLO on any connection); here it is per connection
  (512, plus 26 per EHLO on this connection): the same as aiosmtpd's when connections do not
  overlap;
- after closing (QUIT, 421, a drop) nothing more is read; aiosmtpd may still parse (and record
  in ``BehaviourHandler.commands``) pipelined commands that followed, answering into a closed
  transport;
- replies are written in fewer, larger segments (the bytes are the same).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol, cast

import aiosmtpd.smtp as aiosmtpd_smtp

from relaycheck.testing.servers import (
    HANDSHAKE_FAILURE,
    MAIL_OK,
    MAIL_SYNTAX,
    NEED_MAIL,
    NEED_RCPT,
    NESTED_MAIL,
    QUEUED,
    RCPT_SYNTAX,
    READY_FOR_TLS,
    REFUSED_AFTER_DOT,
    REFUSED_AT_DATA,
    RSET_OK,
    TLS_UNAVAILABLE,
    TOO_MANY_CONNECTIONS,
    TOO_MANY_ERRORS,
    Behaviour,
    BehaviourHandler,
    BehaviourSMTP,
    Path,
    decide_rcpt,
    ehlo_keywords,
    mail_reply,
    read_path,
    vrfy_reply,
)

IDENT: str = aiosmtpd_smtp.__ident__  # "Python SMTP 1.4.6"
LINE_LIMIT: int = aiosmtpd_smtp.SMTP.line_length_limit  # bytes before the LF (1001)
COMMAND_LIMIT: int = aiosmtpd_smtp.SMTP.command_size_limit  # a command line without CRLF (512)
MAIL_LIMIT_STEP = 26  # aiosmtpd's EHLO raises MAIL's limit by this (room for SIZE=)
DATA_SIZE_LIMIT: int = aiosmtpd_smtp.DATA_SIZE_DEFAULT  # advertised as SIZE, enforced at DATA
BOGUS_LIMIT: int = aiosmtpd_smtp.BOGUS_LIMIT  # unknown verbs: the last one gets a goodbye

# aiosmtpd 1.4.x's own replies (smtp.py), for the commands BehaviourSMTP leaves to it
BAD_SYNTAX = "500 Error: bad syntax"
LINE_TOO_LONG = "500 Command line too long"
STRICT_ASCII = "500 Error: strict ASCII mode"
UNKNOWN = '500 Error: command "{}" not recognized'
TOO_MANY_UNKNOWN = "502 5.5.1 Too many unrecognized commands, goodbye."
SEND_HELO = "503 Error: send {} first"
HELO_SYNTAX = "501 Syntax: HELO hostname"
EHLO_SYNTAX = "501 Syntax: EHLO hostname"
OK = "250 OK"
QUIT_SYNTAX = "501 Syntax: QUIT"
BYE = "221 Bye"
STARTTLS_SYNTAX = "501 Syntax: STARTTLS"
NO_TLS = "454 TLS not available"
AUTH_NOT_EXTENDED = "500 Error: command 'AUTH' not recognized"
AUTH_NEEDS_TLS = "538 5.7.11 Encryption required for requested authentication mechanism"
DATA_SYNTAX = "501 Syntax: DATA"
START_DATA = "354 End data with <CR><LF>.<CR><LF>"
DATA_LINE_TOO_LONG = "500 Line too long (see RFC5321 4.5.3.1.6)"
TOO_MUCH_DATA = "552 Error: Too much mail data"
NO_EXPN = "502 EXPN not implemented"


def _help_table() -> tuple[dict[str, tuple[str, str]], str]:
    """HELP's texts as aiosmtpd builds them for a ``BehaviourSMTP`` without TLS: the verbs with
    ``@syntax`` help (BehaviourSMTP's own MAIL/RCPT/RSET/VRFY/DATA have none), once, here."""
    table: dict[str, tuple[str, str]] = {}
    for name in dir(BehaviourSMTP):
        method = getattr(BehaviourSMTP, name)
        text = getattr(method, "__smtp_syntax__", None)
        if not name.startswith("smtp_") or text is None:
            continue
        if getattr(method, "__smtp_syntax_when__", None):  # "tls_context": this server has none
            continue
        table[name[5:]] = (text, getattr(method, "__smtp_syntax_extended__", None) or "")
    return table, " ".join(sorted(table))


HELP_SYNTAX, HELP_VERBS = _help_table()
HELP_LIST = "250 Supported commands: " + HELP_VERBS
HELP_UNKNOWN = "501 Supported commands: " + HELP_VERBS


def unsupported(behaviour: Behaviour) -> str | None:
    """Why ``LightSMTP`` cannot play ``behaviour`` exactly like ``BehaviourSMTP`` (None: it can)."""
    if behaviour.require_starttls:
        return "requires STARTTLS (the light server has no TLS)"
    if behaviour.auth_any_password:
        return "offers AUTH (the light server has none)"
    if behaviour.next_hop is not None:
        return "forwards accepted messages (the light server discards them)"
    return None


class ConnectionCounter(Protocol):
    def opened(self) -> None: ...

    def closed(self) -> None: ...


def _line(text: str) -> bytes:
    return text.encode("ascii") + b"\r\n"


class LightHost:
    """One light server (one behaviour, one book): what all its connections share."""

    def __init__(self, behaviour: Behaviour, book: BehaviourHandler, counter: ConnectionCounter | None = None) -> None:
        reason = unsupported(behaviour)
        if reason is not None:
            raise ValueError(f"behaviour {behaviour.name!r} {reason}")
        self.behaviour = behaviour
        self.book = book
        self.counter = counter
        name = behaviour.hostname if behaviour.banner is None else behaviour.banner
        ident = IDENT if behaviour.banner is None else ""  # BehaviourSMTP blanks the ident for a banner
        self.greeting = _line(f"220 {name} {ident}")
        self.helo = _line(f"250 {name}")
        aiosmtpd_ehlo = [f"250-{name}", f"250-SIZE {DATA_SIZE_LIMIT}", "250-8BITMIME", "250 HELP"]
        self.ehlo = b"".join(_line(r) for r in ehlo_keywords(behaviour, aiosmtpd_ehlo))

    def protocol(self) -> LightSMTP:
        """The protocol factory for ``loop.create_server``."""
        return LightSMTP(self)


# constant replies, encoded once
_B = {
    text: _line(text)
    for text in (
        BAD_SYNTAX, LINE_TOO_LONG, STRICT_ASCII, TOO_MANY_UNKNOWN, HELO_SYNTAX, EHLO_SYNTAX, OK, QUIT_SYNTAX, BYE,
        STARTTLS_SYNTAX, NO_TLS, AUTH_NOT_EXTENDED, AUTH_NEEDS_TLS, DATA_SYNTAX, START_DATA, DATA_LINE_TOO_LONG,
        TOO_MUCH_DATA, NO_EXPN, HELP_LIST, HELP_UNKNOWN, MAIL_OK, RSET_OK, QUEUED, TOO_MANY_ERRORS,
        TLS_UNAVAILABLE, READY_FOR_TLS, REFUSED_AFTER_DOT,
    )
}  # fmt: skip
_SEND_HELO = _line(SEND_HELO.format("HELO"))
_SEND_EHLO = _line(SEND_HELO.format("EHLO"))

_NOMINAL, _TOO_LONG, _TOO_MUCH = 0, 1, 2  # aiosmtpd's DATA states


class LightSMTP(asyncio.Protocol):
    """One SMTP connection to a ``LightHost``."""

    __slots__ = (
        "_bogus", "_buf", "_counted", "_counted_peer", "_data_bytes", "_data_line", "_data_state", "_done",
        "_errors", "_extended", "_host", "_host_name", "_in_data", "_mail", "_mail_limit", "_out", "_peer", "_rcpts",
        "_skipping", "_tls_hello", "_transport",
    )  # fmt: skip

    def __init__(self, host: LightHost) -> None:
        self._host = host
        self._transport: asyncio.Transport | None = None
        self._peer = "?"
        self._buf = bytearray()
        self._out: list[bytes] = []
        self._done = False  # closing: read nothing more
        self._skipping = False  # inside an over-long command line
        self._host_name: str | None = None  # HELO/EHLO argument
        self._extended = False
        self._mail_limit = COMMAND_LIMIT
        self._mail: Path | None = None
        self._rcpts = 0
        self._counted = 0
        self._errors = 0
        self._bogus = BOGUS_LIMIT
        self._in_data = False
        self._data_bytes = 0
        self._data_line = 0  # bytes of the current content line already counted and dropped
        self._data_state = _NOMINAL
        self._counted_peer = False  # counted in the book's sessions (max_connections)
        self._tls_hello = False  # a broken STARTTLS: the next bytes are the client's hello

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        counter = self._host.counter
        if counter is not None:
            counter.opened()
        peer = transport.get_extra_info("peername")
        if peer:
            self._peer = str(peer[0])
        behaviour = self._host.behaviour
        self._counted_peer = True
        if self._host.book.connection_opened(self._peer, behaviour.max_connections):
            self._transport.write(_line(TOO_MANY_CONNECTIONS.format(host=behaviour.hostname, peer=self._peer)))
            self._done = True
            self._transport.close()
            return
        self._transport.write(self._host.greeting)

    def connection_lost(self, exc: Exception | None) -> None:
        self._done = True
        self._transport = None
        if self._counted_peer:
            self._counted_peer = False
            self._host.book.connection_closed(self._peer)
        counter = self._host.counter
        if counter is not None:
            counter.closed()

    def eof_received(self) -> bool:
        self._done = True
        return False  # the transport closes, as aiosmtpd closes on EOF

    def data_received(self, data: bytes) -> None:
        if self._done:
            return
        if self._tls_hello:  # the alert, then the end (as aiosmtpd ends at the end of its input)
            self._out.append(HANDSHAKE_FAILURE)
            self._done = True
            self._flush()
            return
        buf = self._buf
        buf += data
        end = len(buf)
        pos = 0
        while pos < end and not self._done:
            if self._in_data:
                pos = self._content(buf, pos, end)
                if self._in_data:
                    break  # waiting for the rest of a line
                continue
            newline = buf.find(b"\n", pos)
            if self._skipping:  # the rest of an over-long line, dropped as it comes
                if newline < 0:
                    pos = end
                    break
                pos = newline + 1
                self._skipping = False
                self._out.append(_B[LINE_TOO_LONG])
                continue
            if newline < 0:
                if end - pos > LINE_LIMIT:  # aiosmtpd's StreamReader limit: skip to the LF, then 500
                    self._skipping = True
                    pos = end
                break
            if newline - pos > LINE_LIMIT:
                self._out.append(_B[LINE_TOO_LONG])
            else:
                self._command(bytes(buf[pos:newline]))
            pos = newline + 1
        del buf[:pos]
        self._flush()

    # output

    def _flush(self) -> None:
        transport = self._transport
        if transport is None:
            return
        if self._out:
            transport.write(b"".join(self._out))
            self._out.clear()
        if self._done:
            transport.close()

    def _push(self, text: str) -> None:
        self._out.append(_line(text))

    def _reply(self, text: str) -> None:
        """BehaviourSMTP._reply: errors are counted, and past the limit the answer is 421 and close."""
        if text[0] in "45":
            self._errors += 1
            limit = self._host.behaviour.errors_before_421
            if limit is not None and self._errors > limit:
                self._out.append(_B[TOO_MANY_ERRORS])
                self._done = True
                return
        self._push(text)

    def _count(self, verb: str, arg: str | None) -> bool:
        """BehaviourSMTP._count: record the command; False when the behaviour drops the connection."""
        self._host.book.note(f"{verb} {arg}" if arg else verb)
        self._counted += 1
        limit = self._host.behaviour.drop_after_commands
        if limit is not None and self._counted > limit:
            self._done = True
            return False
        return True

    # commands

    def _command(self, line: bytes) -> None:
        """One command line, without its LF: aiosmtpd's ``_handle_client`` checks, then the verb."""
        line = line.rstrip(b"\r\n")
        if not line:
            self._out.append(_B[BAD_SYNTAX])
            return
        verb_bytes, _, arg_bytes = line.partition(b" ")
        try:
            verb = verb_bytes.upper().decode("ascii")
        except UnicodeDecodeError:
            self._out.append(_B[BAD_SYNTAX])
            return
        arg: str | None = None
        if arg_bytes:
            try:
                arg = arg_bytes.strip().decode("ascii")
            except UnicodeDecodeError:
                self._out.append(_B[STRICT_ASCII])
                return
        limit = self._mail_limit if self._extended and verb == "MAIL" else COMMAND_LIMIT
        if len(line) > limit:
            self._out.append(_B[LINE_TOO_LONG])
            return
        handler = _VERBS.get(verb)
        if handler is None:
            self._bogus -= 1
            if self._bogus < 1:
                self._out.append(_B[TOO_MANY_UNKNOWN])
                self._done = True
                return
            self._push(UNKNOWN.format(verb))
            return
        handler(self, arg)

    def _helo(self, arg: str | None) -> None:
        if not arg:
            self._out.append(_B[HELO_SYNTAX])
            return
        self._extended = False
        self._host_name = arg
        self._out.append(self._host.helo)

    def _ehlo(self, arg: str | None) -> None:
        if not arg:
            self._out.append(_B[EHLO_SYNTAX])
            return
        self._extended = True
        self._mail_limit += MAIL_LIMIT_STEP
        self._host_name = arg
        self._out.append(self._host.ehlo)

    def _mail_from(self, arg: str | None) -> None:
        if not self._count("MAIL", arg):
            return
        if not self._host_name:
            self._out.append(_SEND_HELO)
            return
        if not arg or not arg.upper().startswith("FROM:"):
            self._reply(MAIL_SYNTAX)
            return
        if self._mail is not None:
            self._reply(NESTED_MAIL)
            return
        mail = read_path(arg[5:])
        reply = mail_reply(self._host.behaviour, self._host.book.literal, mail)
        if reply != MAIL_OK:
            self._reply(reply)
            return
        self._mail = mail
        self._rcpts = 0
        self._out.append(_B[MAIL_OK])

    def _rcpt_to(self, arg: str | None) -> None:
        if not self._count("RCPT", arg):
            return
        if self._mail is None:
            self._reply(NEED_MAIL)
            return
        if not arg or not arg.upper().startswith("TO:"):
            self._reply(RCPT_SYNTAX)
            return
        host = self._host
        reply = decide_rcpt(
            host.behaviour, host.book, self._mail, read_path(arg[3:]), tls=False, peer=self._peer, authenticated=False
        )
        if reply.startswith("250"):
            self._rcpts += 1
        self._reply(reply)

    def _rset(self, arg: str | None) -> None:
        if not self._count("RSET", arg):
            return
        self._mail = None
        self._rcpts = 0
        self._out.append(_B[RSET_OK])

    def _vrfy(self, arg: str | None) -> None:
        self._host.book.note(f"VRFY {arg}")
        self._reply(vrfy_reply(self._host.behaviour, arg))

    def _data(self, arg: str | None) -> None:
        book = self._host.book
        book.note("DATA")
        if self._mail is None or not self._rcpts:
            self._reply(NEED_RCPT)
            return
        if self._host.behaviour.refuse_data:
            self._reply(REFUSED_AT_DATA)
            return
        book.data_started += 1
        # from here on, aiosmtpd's smtp_DATA
        if not self._host_name:
            self._out.append(_SEND_HELO)
            return
        if arg:
            self._out.append(_B[DATA_SYNTAX])
            return
        self._out.append(_B[START_DATA])
        self._in_data = True
        self._data_bytes = 0
        self._data_line = 0
        self._data_state = _NOMINAL

    def _content(self, buf: bytearray, pos: int, end: int) -> int:
        """Count and drop DATA content lines up to the lone dot; returns the new position. Like
        aiosmtpd: a line over ``LINE_LIMIT`` bytes (CRLF included) or content over
        ``DATA_SIZE_LIMIT`` bytes is refused once the dot arrives, whichever came first."""
        while True:
            crlf = buf.find(b"\r\n", pos)
            if crlf < 0:
                if end - pos > 3:  # keep the last byte (a CR?) and count the rest of the line
                    self._data_line += end - 1 - pos
                    return end - 1
                return pos
            after = crlf + 2
            length = self._data_line + after - pos
            if length == 3 and self._data_line == 0 and buf[pos] == 0x2E:  # ".\r\n"
                self._in_data = False
                state = self._data_state
                done = REFUSED_AFTER_DOT if self._host.behaviour.refuse_after_dot else QUEUED
                reply = DATA_LINE_TOO_LONG if state == _TOO_LONG else TOO_MUCH_DATA if state == _TOO_MUCH else done
                self._out.append(_B[reply])
                return after
            self._data_line = 0
            pos = after
            if length - 2 > LINE_LIMIT:  # aiosmtpd's reader overruns: too long, then counted
                if self._data_state == _NOMINAL:
                    self._data_state = _TOO_LONG
                self._data_bytes += length
                continue
            self._data_bytes += length
            if self._data_state == _NOMINAL and self._data_bytes > DATA_SIZE_LIMIT:
                self._data_state = _TOO_MUCH
            if self._data_state == _NOMINAL and length > LINE_LIMIT:
                self._data_state = _TOO_LONG

    def _noop(self, arg: str | None) -> None:
        self._out.append(_B[OK])

    def _quit(self, arg: str | None) -> None:
        if arg:
            self._out.append(_B[QUIT_SYNTAX])
            return
        self._out.append(_B[BYE])
        self._done = True

    def _starttls(self, arg: str | None) -> None:
        failure = self._host.behaviour.starttls_failure
        if arg:
            self._out.append(_B[STARTTLS_SYNTAX])
        elif failure is None:
            self._out.append(_B[NO_TLS])
        elif failure == "454":
            self._out.append(_B[TLS_UNAVAILABLE])
        else:  # "handshake": agree, then answer the client's hello with a fatal alert
            self._out.append(_B[READY_FOR_TLS])
            self._tls_hello = True

    def _auth(self, arg: str | None) -> None:
        if not self._host_name:
            self._out.append(_SEND_EHLO)
        elif not self._extended:
            self._out.append(_B[AUTH_NOT_EXTENDED])
        else:
            self._out.append(_B[AUTH_NEEDS_TLS])

    def _help(self, arg: str | None) -> None:
        if not arg:
            self._out.append(_B[HELP_LIST])
            return
        syntax = HELP_SYNTAX.get(arg.upper())
        if syntax is None:
            self._out.append(_B[HELP_UNKNOWN])
            return
        text, extended = syntax
        self._push("250 Syntax: " + (text + extended if self._extended else text))

    def _expn(self, arg: str | None) -> None:
        self._out.append(_B[NO_EXPN])


# every verb aiosmtpd's BehaviourSMTP knows (``smtp_*``), and nothing else
_VERBS: dict[str, Callable[[LightSMTP, str | None], None]] = {
    "AUTH": LightSMTP._auth,
    "DATA": LightSMTP._data,
    "EHLO": LightSMTP._ehlo,
    "EXPN": LightSMTP._expn,
    "HELO": LightSMTP._helo,
    "HELP": LightSMTP._help,
    "MAIL": LightSMTP._mail_from,
    "NOOP": LightSMTP._noop,
    "QUIT": LightSMTP._quit,
    "RCPT": LightSMTP._rcpt_to,
    "RSET": LightSMTP._rset,
    "STARTTLS": LightSMTP._starttls,
    "VRFY": LightSMTP._vrfy,
}
VERBS = frozenset(_VERBS)
