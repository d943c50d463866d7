"""Records: the status taxonomy from engine errors, keys, excluded and error records."""

from __future__ import annotations

import errno

import pytest

from relaycheck.errors import (
    ConnectError,
    ConnectionClosed,
    ErrorKind,
    MalformedReply,
    PartialReplies,
    ProtocolError,
    RelaycheckError,
    ReplyTooLong,
    StepTimeout,
    TlsError,
    kind_of,
)
from relaycheck.model import (
    Confidence,
    ConnectionLog,
    Exchange,
    Reply,
    Target,
    TargetReport,
    Transport,
    Verdict,
    VerdictKind,
)
from relaycheck.scan.command import helo_for
from relaycheck.scan.records import ConnectStats, Status, error_record, excluded_record, report_record, status_of
from relaycheck.scan.targets import Item, Kind

TARGET = Target("192.0.2.7", 25, Transport.PLAIN, address="192.0.2.7")
INCONCLUSIVE = Verdict(VerdictKind.INCONCLUSIVE, Confidence.UNDETERMINED, "The server could not be tested: x.")
GREETED = (ConnectionLog(0, Transport.PLAIN, False, (Exchange(None, Reply(220, ("mx ESMTP",)), 0.0),)),)


def failed(failure: RelaycheckError, connections: tuple[ConnectionLog, ...] = ()) -> TargetReport:
    return TargetReport(TARGET, INCONCLUSIVE, connections=connections, error=str(failure), error_kind=kind_of(failure))


UNREACHABLE = ConnectError("cannot connect to 192.0.2.7 port 25: Connect call failed ('192.0.2.7', 25)")


@pytest.mark.parametrize(
    ("failure", "stats", "greeted", "status"),
    [
        (UNREACHABLE, ConnectStats(3, 0, [errno.ECONNREFUSED] * 3), False, Status.REFUSED),
        (ConnectError("cannot connect: Connection refused", kind=ErrorKind.REFUSED), None, False, Status.REFUSED),
        (UNREACHABLE, ConnectStats(3, 0, [errno.EHOSTUNREACH] * 3), False, Status.ERROR),
        (ConnectError("connection timed out after 10 s", kind=ErrorKind.TIMEOUT), ConnectStats(3, 0, []), False,
         Status.TIMEOUT),
        (StepTimeout("no reply to the greeting within 30 s"), ConnectStats(3, 3, []), False, Status.TIMEOUT),
        (StepTimeout("the per-target deadline was reached"), None, True, Status.TIMEOUT),
        (TlsError("TLS handshake with 192.0.2.7:465 failed: wrong version"), None, False, Status.TLS_ERROR),
        (TlsError("STARTTLS refused: 454 4.7.0 TLS not available"), None, True, Status.TLS_ERROR),
        (MalformedReply("not an SMTP reply line: 'SSH-2.0-OpenSSH_9.6'"), None, False, Status.NOT_SMTP),
        (ReplyTooLong("reply line longer than 4096 bytes"), None, False, Status.NOT_SMTP),
        (ReplyTooLong("reply line longer than 4096 bytes"), None, True, Status.PROTOCOL_ERROR),
        (ProtocolError("server floods replies that were never asked for"), None, True, Status.PROTOCOL_ERROR),
        (PartialReplies(StepTimeout("no reply to RCPT within 30 s"), []), None, True, Status.TIMEOUT),
        (ConnectionClosed("server closed the connection"), None, False, Status.ERROR),
    ],
)  # fmt: skip
def test_status_taxonomy(failure: RelaycheckError, stats: ConnectStats | None, greeted: bool, status: Status) -> None:
    assert status_of(failed(failure, GREETED if greeted else ()), stats) is status


@pytest.mark.parametrize(
    "failure",
    [StepTimeout("no reply to STARTTLS within 30 s"), ConnectionClosed("server closed the connection: timed out")],
)
def test_status_follows_the_kind_not_the_words(failure: RelaycheckError) -> None:
    expected = Status.TIMEOUT if failure.kind is ErrorKind.TIMEOUT else Status.ERROR
    assert status_of(failed(failure, GREETED)) is expected


def test_the_kind_travels_to_the_record() -> None:
    record = report_record("192.0.2.7|25|", Item(Kind.ADDRESS, "192.0.2.7", 25, ip="192.0.2.7"),
                           failed(TlsError("TLS handshake failed")))
    assert (record["status"], record["error_kind"]) == ("tls-error", "tls")


def test_ok_when_the_engine_had_an_smtp_conversation() -> None:
    refused_greeting = TargetReport(TARGET, INCONCLUSIVE)  # 554 greeting: an answer, not a failure
    assert status_of(refused_greeting) is Status.OK


def test_report_record_embeds_check_fields() -> None:
    item = Item(Kind.ADDRESS, "192.0.2.0/24", 25, ip="192.0.2.7", tag="t")
    record = report_record(
        "192.0.2.7|25|", item, failed(StepTimeout("no reply to the greeting within 30 s")), stats=ConnectStats(3, 3, [])
    )
    assert record["key"] == "192.0.2.7|25|" and record["ip"] == "192.0.2.7" and record["host"] is None
    assert (record["status"], record["verdict"], record["confidence"]) == ("timeout", "inconclusive", "undetermined")
    assert record["result"]["verdict"]["explanation"] == INCONCLUSIVE.explanation
    assert "transcripts" not in record["result"] and "observations" not in record["result"]
    assert record["input"] == "192.0.2.0/24" and record["tag"] == "t"
    full = report_record("192.0.2.7|25|", item, failed("x"), full=True)
    assert "transcripts" in full["result"] and "observations" in full["result"]


def test_excluded_and_error_records() -> None:
    block = Item(Kind.EXCLUDED, "10.0.0.0/8", 25, reason="Private-Use (RFC 1918)", block="10.0.0.0/8")
    record = excluded_record(block, block.reason or "")
    assert (record["key"], record["ip"], record["status"], record["verdict"]) == (
        "10.0.0.0/8|25|",
        "10.0.0.0/8",
        "excluded",
        None,
    )
    mx = Item(Kind.NAME, "example.org", 25, name="example.org")
    via_dns = excluded_record(mx, "Loopback (RFC 1122)", ip="127.0.0.1", host="mx.example.org", domain="example.org")
    assert via_dns["key"] == "127.0.0.1|25|example.org" and via_dns["host"] == "mx.example.org"
    dns = error_record(mx, "dns: example.org: no such domain (NXDOMAIN)")
    assert (dns["key"], dns["status"], dns["ip"]) == ("|25|example.org", "error", None)


@pytest.mark.parametrize(
    ("helo", "contact", "expected"),
    [
        ("Scanner.Example.ORG.", None, "scanner.example.org"),
        (None, "https://scan.example.org/relay-survey", "scan.example.org"),
        ("mx.example.net", "https://scan.example.org/", "mx.example.net"),
    ],
)
def test_ehlo_name(helo: str | None, contact: str | None, expected: str) -> None:
    assert helo_for(helo, contact) == expected


def test_ehlo_name_never_an_ip_or_mailto(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("relaycheck.scan.command.default_helo", lambda: "this.host.example")
    assert helo_for(None, "http://192.0.2.1/") == "this.host.example"
    assert helo_for(None, "mailto:abuse@example.org") == "this.host.example"
