"""A small asyncio SMTP client session for probing.

Built on an ``asyncio.Protocol`` rather than streams so that the reply parser sees bytes the
moment they arrive (caps enforced at once, not after buffering) and so that STARTTLS can discard,
provably, every byte received before the handshake (a MITM or a buggy server can inject replies
there: CVE-2011-0411 style command injection).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import ssl
import time
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from relaycheck.errors import (
    CertificateUnverified,
    ConnectError,
    ConnectionClosed,
    ErrorKind,
    PartialReplies,
    ProtocolError,
    StepTimeout,
    TlsError,
)
from relaycheck.model import ConnectionLog, Exchange, Reply, Transport
from relaycheck.smtp.wire import Ehlo, ReplyParser, command_line, encode_command, parse_ehlo

__all__ = ["PartialReplies", "SessionConfig", "SmtpSession", "probing_tls_context"]

# More queued, unrequested replies than this is a flood, not a conversation.
_MAX_QUEUED_REPLIES = 256


@dataclass(frozen=True)
class SessionConfig:
    helo_name: str
    connect_timeout: float = 10.0
    greeting_timeout: float = 30.0  # greeting delays (postscreen, tarpits) are legitimate
    command_timeout: float = 30.0
    deadline: float | None = None  # absolute ``time.monotonic()`` after which nothing is waited


@functools.cache
def probing_tls_context() -> ssl.SSLContext:
    """A TLS context that talks to any server: we test relaying, not certificates, here.

    Built once per process: creating a context loads the trust store, which costs ~0.1 s.
    """
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with contextlib.suppress(ssl.SSLError):  # old servers: still get through to test relaying
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():  # deprecated, but old MTAs still speak only TLS 1.0
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
    return context


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = ReplyParser()
        self.replies: deque[Reply] = deque()
        self.failure: Exception | None = None
        self.closed = False
        self.transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[None] | None = None  # the reader waiting for news, if any

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # any event loop's transport

    def data_received(self, data: bytes) -> None:
        try:
            self.replies.extend(self.parser.feed(data))
            if len(self.replies) > _MAX_QUEUED_REPLIES:
                raise ProtocolError("server floods replies that were never asked for")
        except ProtocolError as exc:
            self.failure = exc
            if self.transport is not None:
                self.transport.abort()
        self._wake()

    def eof_received(self) -> bool | None:
        self.closed = True
        self._wake()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def discard_buffered(self) -> None:
        self.parser.reset()
        self.replies.clear()

    async def next_reply(self, timeout: float) -> Reply:
        """The next reply, waiting at most ``timeout`` seconds for it (``TimeoutError``).

        A bare future and one timer per wait, not ``asyncio.timeout`` + ``Event``: this is the
        hottest wait of a scan (a few per connection), and the cheaper form halves its cost.
        """
        loop = asyncio.get_running_loop()
        expires = loop.time() + timeout
        while True:
            if self.replies:
                return self.replies.popleft()
            if self.failure is not None:
                raise self.failure
            if self.closed:
                raise ConnectionClosed("server closed the connection")
            left = expires - loop.time()
            if left <= 0:
                raise TimeoutError
            waiter = self._waiter = loop.create_future()
            timer = loop.call_later(left, _expire, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class SmtpSession:
    """One connection. Replies are data; only transport and protocol failures raise."""

    def __init__(
        self,
        host: str,
        port: int,
        config: SessionConfig,
        *,
        address: str | None = None,
        transport: Transport = Transport.PLAIN,
        index: int = 0,
        on_exchange: Callable[[int, Exchange], None] | None = None,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.address = address or host
        self.config = config
        self.transport_kind = transport
        self.index = index
        self.tls = False
        self.round_trips = 0
        self.exchanges: list[Exchange] = []
        self.error: str | None = None
        self._on_exchange = on_exchange
        self._tls_context = tls_context  # for implicit TLS; default: accept any certificate
        self._protocol: _Protocol | None = None
        self._started = time.monotonic()

    # -- bookkeeping -------------------------------------------------------------------------

    def _record(self, sent: str | None, reply: Reply | None, note: str | None = None) -> None:
        exchange = Exchange(sent=sent, reply=reply, at=time.monotonic() - self._started, note=note)
        self.exchanges.append(exchange)
        if self._on_exchange is not None:
            self._on_exchange(self.index, exchange)

    def log(self) -> ConnectionLog:
        return ConnectionLog(
            index=self.index,
            transport=self.transport_kind,
            tls=self.tls,
            exchanges=tuple(self.exchanges),
            error=self.error,
        )

    def _budget(self, step: float) -> float:
        if self.config.deadline is None:
            return step
        left = self.config.deadline - time.monotonic()
        if left <= 0:
            raise StepTimeout("the per-target deadline was reached")
        return min(step, left)

    @property
    def peer_address(self) -> str | None:
        """The IP address actually connected to (what the address literal probes must use)."""
        if self._protocol is None or self._protocol.transport is None:
            return None
        peer = self._protocol.transport.get_extra_info("peername")
        return str(peer[0]).split("%", 1)[0] if peer else None

    @property
    def ssl_object(self) -> ssl.SSLObject | None:
        """The TLS state of the connection (version, cipher, peer certificate), once TLS is up."""
        if self._protocol is None or self._protocol.transport is None:
            return None
        obj = self._protocol.transport.get_extra_info("ssl_object")
        return obj if isinstance(obj, ssl.SSLObject) else None

    @property
    def connected(self) -> bool:
        return self._protocol is not None and not self._protocol.closed

    def _require(self) -> _Protocol:
        if self._protocol is None or self._protocol.transport is None:
            raise ConnectionClosed("not connected")
        if self._protocol.closed:
            raise ConnectionClosed("server closed the connection")
        return self._protocol

    async def _read(self, timeout: float, waiting_for: str) -> Reply:
        protocol = self._require() if self._protocol is None else self._protocol
        try:
            return await protocol.next_reply(self._budget(timeout))
        except TimeoutError:
            raise StepTimeout(f"no reply to {waiting_for} within {timeout:g} s") from None

    # -- connection ------------------------------------------------------------------------

    async def connect(self) -> Reply:
        """Open the connection (TLS first for implicit TLS) and wait for the full greeting."""
        loop = asyncio.get_running_loop()
        self._started = time.monotonic()
        implicit = self.transport_kind is Transport.TLS
        try:
            async with asyncio.timeout(self._budget(self.config.connect_timeout)):
                _, protocol = await loop.create_connection(
                    _Protocol,
                    self.address,
                    self.port,
                    ssl=(self._tls_context or probing_tls_context()) if implicit else None,
                    server_hostname=self.host if implicit and not _is_ip(self.host) else None,
                )
        except TimeoutError:
            raise ConnectError(
                f"connection to {self.address} port {self.port} timed out after {self.config.connect_timeout:g} s",
                kind=ErrorKind.TIMEOUT,
            ) from None
        except ssl.SSLError as exc:
            message = f"TLS handshake with {self.address}:{self.port} failed: {exc}"
            if isinstance(exc, ssl.SSLCertVerificationError):
                raise CertificateUnverified(message, str(exc.verify_message)) from None
            raise TlsError(message) from None
        except OSError as exc:
            reason = exc.strerror or str(exc)
            kind = ErrorKind.REFUSED if isinstance(exc, ConnectionRefusedError) else ErrorKind.UNREACHABLE
            raise ConnectError(f"cannot connect to {self.address} port {self.port}: {reason}", kind=kind) from None
        self._protocol = protocol
        self.tls = implicit
        self.round_trips += 1
        try:
            greeting = await self._read(self.config.greeting_timeout, "the greeting")
        except (ConnectionClosed, StepTimeout, ProtocolError) as exc:
            self._record(None, None, note=str(exc))
            raise
        self._record(None, greeting, note="TLS established" if implicit else None)
        return greeting

    async def command(self, line: str, *, timeout: float | None = None) -> Reply:
        """Send one command and wait for its reply."""
        return (await self.pipeline([line], timeout=timeout))[0]

    async def pipeline(self, lines: Sequence[str], *, timeout: float | None = None) -> list[Reply]:
        """Send ``lines`` in one write and read one reply per line (RFC 2920).

        Only call with several lines when the server advertised PIPELINING. If the connection
        drops part-way, the replies received so far are recorded and the error is raised with
        them attached as ``partial`` so the caller can keep what it learnt.
        """
        protocol = self._require()
        assert protocol.transport is not None
        protocol.transport.write(b"".join(encode_command(line) for line in lines))
        self.round_trips += 1
        replies: list[Reply] = []
        step = self.config.command_timeout if timeout is None else timeout
        queued = protocol.replies
        if lines[-1:] == ["QUIT"]:
            self._end_stream()
        for line in lines:
            if queued:  # pipelined replies mostly arrive together: take them without a wait
                reply = queued.popleft()
                self._record(line, reply)
                replies.append(reply)
                continue
            try:
                reply = await self._read(step, line.split(":", 1)[0].split(" ", 1)[0])
            except (ConnectionClosed, StepTimeout, ProtocolError) as exc:
                self._record(line, None, note=str(exc))
                self.error = str(exc)
                raise PartialReplies(exc, replies) from exc
            self._record(line, reply)
            replies.append(reply)
        return replies

    def _end_stream(self) -> None:
        """Nothing follows QUIT: close our sending side at once (a FIN). Exim holds its 221 back
        (TCP_CORK) and waits up to 200 ms for the client to close first; our end of the stream
        lets it go. (The battery sends QUIT alone, once everything else is answered.)"""
        transport = self._protocol.transport if self._protocol is not None else None
        if transport is not None and transport.can_write_eof():
            with contextlib.suppress(OSError):  # already gone: the read that follows says so
                transport.write_eof()

    async def ehlo(self) -> tuple[Reply, Ehlo | None]:
        """EHLO, falling back to HELO when EHLO is refused. Returns the reply and extensions."""
        reply = await self.command(command_line("EHLO ", self.config.helo_name))
        if reply.code == 250:
            return reply, parse_ehlo(reply)
        if reply.code in (500, 501, 502, 504, 550):
            helo = await self.command(command_line("HELO ", self.config.helo_name))
            return helo, None
        return reply, None

    async def starttls(self, context: ssl.SSLContext | None = None) -> Reply:
        """Send STARTTLS (advertised or not) and, on 220, upgrade the connection.

        Everything received before the handshake is discarded: it cannot be trusted.
        ``context`` defaults to one that accepts any certificate (we test relaying here).
        """
        reply = await self.command("STARTTLS")
        if reply.code != 220:
            return reply
        protocol = self._require()
        assert protocol.transport is not None
        protocol.discard_buffered()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._budget(self.config.command_timeout)):
                new_transport = await loop.start_tls(
                    protocol.transport,
                    protocol,
                    context or probing_tls_context(),
                    server_hostname=None if _is_ip(self.host) else self.host,
                )
        except (TimeoutError, ssl.SSLError, OSError, ConnectionError) as exc:
            if isinstance(exc, ssl.SSLCertVerificationError):
                message = f"certificate verify failed: {exc.verify_message}"
            else:
                message = "timed out" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__
            self.error = f"TLS handshake failed: {message}"
            self._record(None, None, note=self.error)
            protocol.transport.abort()
            if isinstance(exc, ssl.SSLCertVerificationError):
                raise CertificateUnverified(self.error, str(exc.verify_message)) from None
            raise TlsError(self.error) from None
        if new_transport is None:
            raise TlsError("TLS handshake failed: connection closed")
        # Any event loop's TLS transport (uvloop's is not an asyncio.Transport subclass).
        protocol.transport = new_transport
        protocol.discard_buffered()
        self.tls = True
        self._record(None, None, note="TLS established")
        return reply

    async def data_then_abort(self) -> Reply:
        """Send DATA; on 354 drop the connection before a single content line: probe mode never creates a message."""
        reply = await self.command("DATA")
        if reply.code == 354:
            self.abort(note="connection dropped after 354, before any content: no message exists")
        return reply

    async def send_content(self, content: bytes) -> Reply:
        """After a 354: send the (dot-stuffed, terminated) content and read the final reply."""
        protocol = self._require()
        assert protocol.transport is not None
        protocol.transport.write(content)
        self.round_trips += 1
        try:
            reply = await self._read(self.config.command_timeout, "the end of the message")
        except (ConnectionClosed, StepTimeout, ProtocolError) as exc:
            self._record(f"<message content, {len(content)} bytes>", None, note=str(exc))
            raise PartialReplies(exc, []) from exc
        self._record(f"<message content, {len(content)} bytes>", reply)
        return reply

    async def quit(self) -> None:
        """Polite QUIT; the reply is read briefly but not required."""
        if not self.connected:
            self.close()
            return
        with contextlib.suppress(PartialReplies, ConnectionClosed, StepTimeout, ProtocolError):
            await self.command("QUIT", timeout=min(2.0, self.config.command_timeout))
        self.close()

    def abort(self, note: str | None = None) -> None:
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.abort()
            self._protocol.closed = True
        if note:
            self._record(None, None, note=note)

    def close(self) -> None:
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True
