"""Reading what the lab's daemons write: files read from an offset, and Postfix's log analysed."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .topology import CLIENT_IP

# Postfix's defaults, kept on purpose: relaycheck is meant to stay under them.
POSTFIX_SOFT_ERROR_LIMIT = 10
POSTFIX_HARD_ERROR_LIMIT = 20


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def read_from(path: Path, offset: int = 0) -> str:
    """What ``path`` holds past ``offset`` (nothing when it does not exist yet)."""
    try:
        with path.open("rb") as log:
            log.seek(offset)
            return log.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


# --------------------------------------------------------------------------------------------
# Postfix log analysis: did a client trip the error limits?
# --------------------------------------------------------------------------------------------

_DISCONNECT = re.compile(r"disconnect from \S*\[(?P<ip>[^\]]+)\](?P<counts>.*) commands=(?P<ok>\d+)(?:/(?P<all>\d+))?")


def _session_slept(failed: int, quit_sent: bool) -> bool:
    """Whether Postfix delayed a reply in a session with ``failed`` refused commands.

    smtpd counts an error after replying to a refused command, and sleeps
    smtpd_error_sleep_time before *every* reply once the count has reached
    smtpd_soft_error_limit. So the reply to any command after the limit-th refusal is delayed:
    certainly when more commands were refused, and when the session went on to QUIT (QUIT
    comes last). A client that hangs up right after the limit-th refusal escapes the sleep.
    """
    limit = POSTFIX_SOFT_ERROR_LIMIT
    return failed > limit or (failed == limit and quit_sent)


@dataclass(frozen=True)
class PostfixErrorStats:
    """What a Postfix log says about one client's sessions.

    Postfix does not log its error sleeps; they are inferred from each session's disconnect
    summary (``... quit=1 commands=ok/total``). At smtpd_hard_error_limit it drops the client
    and logs "too many errors after <command>".
    """

    sessions: int
    max_failed_commands: int
    error_sleep_sessions: int
    too_many_errors: int

    @property
    def error_sleeps(self) -> bool:
        return self.error_sleep_sessions > 0


def postfix_error_stats(log_text: str, client_ip: str = CLIENT_IP) -> PostfixErrorStats:
    sessions = max_failed = slept = too_many = 0
    for line in log_text.splitlines():
        if f"[{client_ip}]" not in line:
            continue
        if "too many errors" in line:
            too_many += 1
        match = _DISCONNECT.search(line)
        if match and match["ip"] == client_ip:
            sessions += 1
            ok = int(match["ok"])
            failed = int(match["all"]) - ok if match["all"] else 0
            max_failed = max(max_failed, failed)
            slept += _session_slept(failed, " quit=" in match["counts"])
    return PostfixErrorStats(sessions, max_failed, slept, too_many)


# smtpd logs "client=" once a recipient is accepted, message or not; qmgr's "from=" line
# appears only for a message that was really queued, with its number of recipients.
_CLIENT = re.compile(r"smtpd\[\d+\]: (?P<qid>[0-9A-F]+): client=\S*\[(?P<ip>[^\]]+)\]")
_QUEUED = re.compile(r"qmgr\[\d+\]: (?P<qid>[0-9A-F]+): from=<(?P<sender>[^>]*)>, size=\d+, nrcpt=(?P<nrcpt>\d+)")
_DELIVERED = re.compile(
    r"postfix/(?P<agent>[a-z]+)\[\d+\]: (?P<qid>[0-9A-F]+): to=<(?P<to>[^>]*)>"
    r"(?:, orig_to=<(?P<orig_to>[^>]*)>)?, relay=(?P<relay>[^,]+),.* status=(?P<status>[a-z]+)"
)


@dataclass(frozen=True)
class PostfixDelivery:
    """One delivery attempt Postfix logged: which message, to whom, through which next hop."""

    qid: str
    agent: str  # smtp, lmtp, discard, error, ...
    to: str
    orig_to: str | None  # the recipient as the client gave it, when Postfix rewrote it
    relay: str  # e.g. client.lab.test[198.18.0.2]:25
    status: str  # sent, deferred, bounced


@dataclass(frozen=True)
class PostfixMessage:
    qid: str
    sender: str
    recipients: int


def postfix_queued(log_text: str, client_ip: str = CLIENT_IP) -> list[PostfixMessage]:
    """The messages Postfix queued from ``client_ip``: everything that client made it send."""
    from_client = {m["qid"] for m in _CLIENT.finditer(log_text) if m["ip"] == client_ip}
    return [
        PostfixMessage(m["qid"], m["sender"], int(m["nrcpt"]))
        for m in _QUEUED.finditer(log_text)
        if m["qid"] in from_client
    ]


def postfix_deliveries(log_text: str) -> list[PostfixDelivery]:
    return [
        PostfixDelivery(m["qid"], m["agent"], m["to"], m["orig_to"], m["relay"], m["status"])
        for m in _DELIVERED.finditer(log_text)
    ]
