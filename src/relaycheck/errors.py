"""The one exception tree of relaycheck.

SMTP reply codes are data (see ``model.Reply``), never exceptions: a ``550`` is an answer, not a
failure. Exceptions cover what stops a step from producing an answer at all: bad usage, DNS
failures, transport failures (refused, timeout, TLS) and protocol violations by the peer.
Every exception carries a one-line message fit to show a user as it is.
"""

from __future__ import annotations


class RelaycheckError(Exception):
    """Base of every error relaycheck raises on purpose."""


class UsageError(RelaycheckError):
    """The user asked for something malformed (bad target, bad option value)."""


class DnsError(RelaycheckError):
    """A DNS lookup needed to find the targets failed (NXDOMAIN, no answer, timeout)."""


class TransportError(RelaycheckError):
    """The connection could not be used: refused, reset, closed, timed out."""


class ConnectError(TransportError):
    """The TCP connection could not be established."""


class ConnectionLimited(ConnectError):
    """The server answered a new session with 421 at the greeting ("too many connections"): a
    per-client limit (Postfix anvil, Exim smtp_accept_max_per_host) when other sessions are open."""


class StepTimeout(TransportError):
    """A read or write did not finish within its time budget."""


class ConnectionClosed(TransportError):
    """The peer closed the connection (possibly after a 421)."""


class TlsError(TransportError):
    """The TLS handshake failed."""


class ProtocolError(RelaycheckError):
    """The peer sent bytes that are not an SMTP reply, or more than we are willing to read."""


class ReplyTooLong(ProtocolError):
    """A reply line or a whole reply exceeded the byte caps."""


class MalformedReply(ProtocolError):
    """A line that does not start with a three-digit code and a separator."""
