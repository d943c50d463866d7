"""PURE: what to do when a target could not be tested, chosen by the kind of failure (the
exception's class), never by its message. A protocol error is not "many networks block port 25"."""

from __future__ import annotations

from relaycheck.errors import (
    ConnectError,
    ConnectionClosed,
    ProtocolError,
    StepTimeout,
    TlsError,
)

CANNOT_CONNECT = (
    "Check the host name and port, and that outbound connections to it are allowed from here (many networks "
    "block port 25)."
)
ADVICE: tuple[tuple[type[BaseException], str], ...] = (
    (ConnectError, CANNOT_CONNECT),
    (
        TlsError,
        "TLS could not be set up: check --transport (465 speaks TLS from the first byte; 25 and 587 use "
        "STARTTLS) and whether the server's TLS configuration works with a current client.",
    ),
    (
        StepTimeout,
        "The server took the connection but did not answer in time (a tarpit, a greeting delay, or an "
        "overloaded server): test again with a longer --timeout.",
    ),
    (
        ConnectionClosed,
        "The server hung up before the test could run: it may limit connections per client or refuse clients "
        "like us. Test again later, or with --max-connections 1.",
    ),
    (
        ProtocolError,
        "What answered does not speak SMTP as a mail server should (another service on this port, or a broken "
        "server): check the port, and look at the transcript with -v.",
    ),
)


def advice_for(failure: BaseException) -> str:
    cause = getattr(failure, "cause", None)  # a pipeline that ended early carries its cause
    if isinstance(cause, BaseException):
        failure = cause
    for kind, text in ADVICE:
        if isinstance(failure, kind):
            return text
    return CANNOT_CONNECT
