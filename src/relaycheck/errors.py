"""The one exception tree of relaycheck.

SMTP reply codes are data (see ``model.Reply``), never exceptions: a ``550`` is an answer, not a
failure. Exceptions cover what stops a step from producing an answer at all: bad usage, DNS
failures, transport failures (refused, timeout, TLS) and protocol violations by the peer.
Every exception carries a one-line message fit to show a user as it is, and a ``kind`` (an
``ErrorKind``) set where it is raised: reports and scan records use the kind, never the words.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from relaycheck.model import Reply


class ErrorKind(StrEnum):
    USAGE = "usage"  # the user asked for something malformed
    DNS = "dns"  # a lookup needed to find the targets failed
    REFUSED = "refused"  # the TCP connection was refused (nothing listens)
    UNREACHABLE = "unreachable"  # any other failure to connect, or a session refused at the greeting
    TIMEOUT = "timeout"  # connect, a reply or the whole target took longer than allowed
    CLOSED = "closed"  # the peer closed the connection
    TLS = "tls"  # STARTTLS refused, or the TLS handshake failed
    PROTOCOL = "protocol"  # bytes that are not SMTP replies, or more than we read
    MAILBOX = "mailbox"  # the IMAP mailbox of delivery mode could not be read
    LIMITED = "limited"  # a rate or capacity limit of the service said "not now"
    INTERNAL = "internal"  # relaycheck's own data is broken (a bug)


class RelaycheckError(Exception):
    """Base of every error relaycheck raises on purpose."""

    kind: ClassVar[ErrorKind] = ErrorKind.INTERNAL

    def __init__(self, message: str = "", *, kind: ErrorKind | None = None) -> None:
        super().__init__(message)
        if kind is not None:
            self.kind = kind  # type: ignore[misc]  # one instance narrower than its class


class UsageError(RelaycheckError):
    """The user asked for something malformed (bad target, bad option value)."""

    kind = ErrorKind.USAGE


class DnsError(RelaycheckError):
    """A DNS lookup needed to find the targets failed (NXDOMAIN, no answer, timeout)."""

    kind = ErrorKind.DNS


class TransportError(RelaycheckError):
    """The connection could not be used: refused, reset, closed, timed out."""

    kind = ErrorKind.UNREACHABLE


class ConnectError(TransportError):
    """The TCP connection could not be established (``kind``: refused, timeout or unreachable)."""


class ConnectionLimited(ConnectError):
    """The server answered a new session with 421 at the greeting ("too many connections"): a
    per-client limit (Postfix anvil, Exim smtp_accept_max_per_host) when other sessions are open."""


class StepTimeout(TransportError):
    """A read or write did not finish within its time budget."""

    kind = ErrorKind.TIMEOUT


class ConnectionClosed(TransportError):
    """The peer closed the connection (possibly after a 421)."""

    kind = ErrorKind.CLOSED


class TlsError(TransportError):
    """STARTTLS was refused or the TLS handshake failed."""

    kind = ErrorKind.TLS


class CertificateUnverified(TlsError):
    """The handshake failed because the certificate did not verify: ``reason`` says why."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class ProtocolError(RelaycheckError):
    """The peer sent bytes that are not an SMTP reply, or more than we are willing to read."""

    kind = ErrorKind.PROTOCOL


class ReplyTooLong(ProtocolError):
    """A reply line or a whole reply exceeded the byte caps."""


class MalformedReply(ProtocolError):
    """A line that does not start with a three-digit code and a separator."""


class PartialReplies(RelaycheckError):
    """A pipeline that ended early: ``cause`` says why, ``replies`` holds what did arrive."""

    def __init__(self, cause: Exception, replies: list[Reply]) -> None:
        super().__init__(str(cause), kind=kind_of(cause))
        self.cause = cause
        self.replies = replies


class ImapError(RelaycheckError):
    """The mailbox could not be read (login refused, no such mailbox, connection failed)."""

    kind = ErrorKind.MAILBOX


class CatalogueError(RelaycheckError, ValueError):
    """The catalogue file is malformed (a bug in the package, caught by the catalogue tests)."""

    kind = ErrorKind.INTERNAL


def kind_of(exc: BaseException) -> ErrorKind:
    """The kind of any failure: ours carry it; anything else is ``INTERNAL`` (a bug)."""
    return exc.kind if isinstance(exc, RelaycheckError) else ErrorKind.INTERNAL
