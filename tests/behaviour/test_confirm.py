"""Delivery mode (--confirm): a relay is proven by the message that arrives (aiosmtpd, loopback)."""

from __future__ import annotations

import asyncio
import smtplib
import socket
import subprocess
import sys
from dataclasses import replace
from typing import Any

import pytest

from relaycheck.api import CheckOptions, check
from relaycheck.cli import main
from relaycheck.model import Confidence, DeliveryState, Outcome, ProbeKind, TargetReport, VerdictKind
from relaycheck.sink import Sink
from relaycheck.testing.servers import read_path, relayed_address

from .conftest import BASE, ServerFactory

CONFIRM = "operator@confirm.test"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _with_sink(address: str, sink_port: int, **engine: Any) -> tuple[TargetReport, Sink]:
    async with Sink("confirm.test", "127.0.0.1", sink_port) as sink:
        options = CheckOptions(
            engine=replace(BASE, confirm_address=CONFIRM, confirm_timeout=engine.pop("confirm_timeout", 10), **engine),
            watcher=sink,
        )
        report = await check(address, options)
    return report.targets[0], sink


def run_with_sink(
    factory: ServerFactory, behaviour: str, relay: bool = True, **engine: Any
) -> tuple[TargetReport, Any]:
    sink_port = free_port()
    server = factory(behaviour, next_hop=("127.0.0.1", sink_port) if relay else None)
    report, sink = asyncio.run(_with_sink(server.address, sink_port, **engine))
    return report, (server, sink)


def test_relayed_test_message_arrives_and_confirms(smtp_server: ServerFactory) -> None:
    report, (_, sink) = run_with_sink(smtp_server, "open")
    assert report.verdict.kind is VerdictKind.OPEN
    assert report.verdict.confidence is Confidence.CONFIRMED
    confirmed = [o for o in report.observations if o.delivery and o.delivery.state is DeliveryState.CONFIRMED]
    assert confirmed
    # the report shows the path it took: the fixture's Received header
    assert any("by mx.relay.test" in line for line in confirmed[0].delivery.received)  # type: ignore[union-attr]
    assert set(sink.handler.arrivals) == {o.delivery.token for o in confirmed}  # type: ignore[union-attr]


def test_accept_then_discard_is_inconclusive_not_open(smtp_server: ServerFactory) -> None:
    """Delivery mode is the judge of last resort: accepted but never delivered is not proof."""
    report, (server, _) = run_with_sink(smtp_server, "open", relay=False, confirm_timeout=0.5)
    assert report.verdict.kind is VerdictKind.INCONCLUSIVE
    assert report.verdict.confidence is Confidence.ACCEPTED_NOT_DELIVERED
    assert "accepted, not delivered within 0.5 s" in report.verdict.explanation
    assert "discard" in report.verdict.explanation
    assert server.handler.messages  # the server did take the messages…
    states = {o.delivery.state for o in report.observations if o.delivery}
    assert states == {DeliveryState.NOT_DELIVERED}  # …and none arrived


def test_refused_at_data_sends_nothing_and_is_not_open(smtp_server: ServerFactory) -> None:
    report, (server, sink) = run_with_sink(smtp_server, "refuse-at-data")
    assert report.verdict.kind is VerdictKind.CLOSED
    assert server.handler.messages == [] and sink.handler.arrivals == {}
    assert all(
        o.delivery is None or o.delivery.state is DeliveryState.NOT_ACCEPTED
        for o in report.observations
        if o.kind is ProbeKind.RELAY
    )


def test_one_message_per_path_family_and_only_to_the_confirm_address(smtp_server: ServerFactory) -> None:
    report, (server, sink) = run_with_sink(smtp_server, "percent-only")
    relay = [o for o in report.observations if o.kind is ProbeKind.RELAY]
    assert {o.probe_id for o in relay if o.outcome is Outcome.ACCEPTED} == {"V12", "V13", "V14", "V15"}
    # the four accepted tricks are one path family: one message for them, none for the refused ones
    assert {o.probe_id for o in relay if o.delivery is not None} == {"V12"}
    assert len(server.handler.messages) == 1
    for envelope in server.handler.messages:
        assert all(relayed_address(read_path(r)) == CONFIRM for r in envelope.rcpt_tos)
    # every envelope relaycheck used for any relay probe stands for the confirm address
    for obs in report.observations:
        if obs.kind is ProbeKind.RELAY:
            assert "operator" in obs.rcpt_to and "confirm.test" in obs.rcpt_to
    assert report.verdict.confidence is Confidence.CONFIRMED
    assert len(sink.handler.arrivals) == 1


def test_refused_probes_get_no_message(smtp_server: ServerFactory) -> None:
    report, (server, _) = run_with_sink(smtp_server, "closed")
    assert report.verdict.kind is VerdictKind.CLOSED
    assert server.handler.messages == [] and server.handler.data_started == 0
    assert all(o.delivery is None for o in report.observations)
    assert all(o.outcome is not Outcome.ACCEPTED for o in report.observations if o.kind is ProbeKind.RELAY)


def test_cli_delivery_mode_with_its_own_sink(smtp_server: ServerFactory, capsys: pytest.CaptureFixture[str]) -> None:
    sink_port = free_port()
    server = smtp_server("null-sender-only", next_hop=("127.0.0.1", sink_port))
    argv = [
        "check",
        server.address,
        "--confirm",
        CONFIRM,
        "--sink",
        f"127.0.0.1:{sink_port}",
        "--confirm-timeout",
        "10",
    ]
    assert (
        main([*argv, "--local-domain", "relay.test", "--helo", "client.relaycheck.test", "--no-ptr", "--no-dnsbl"]) == 1
    )
    captured = capsys.readouterr()
    assert "OPEN RELAY" in captured.out and "(confirmed)" in captured.out
    assert "waiting up to 10 s" in captured.err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--confirm", CONFIRM], "exactly one of --sink"),
        (["--confirm", CONFIRM, "--sink", "127.0.0.1:0", "--imap", "imaps://u@h/INBOX"], "exactly one of --sink"),
        (["--sink", "127.0.0.1:2525"], "add --confirm"),
        (["--confirm", CONFIRM, "--imap", "imaps://u:secret@h/INBOX"], "RELAYCHECK_IMAP_PASSWORD"),
        (["--confirm", CONFIRM, "--imap", "http://h/"], "imap://"),
    ],
)
def test_delivery_mode_usage_errors(extra: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "127.0.0.1", *extra]) == 2
    assert message in capsys.readouterr().err


def test_imap_password_is_never_taken_from_a_pipe(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("RELAYCHECK_IMAP_PASSWORD", raising=False)
    assert main(["check", "127.0.0.1", "--confirm", CONFIRM, "--imap", "imaps://u@h/INBOX"]) == 2
    assert "RELAYCHECK_IMAP_PASSWORD" in capsys.readouterr().err


def test_standalone_sink_prints_tokens_and_refuses_other_domains() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "relaycheck", "sink", "--domain", "confirm.test", "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None and proc.stdout is not None
        assert "listening" in proc.stderr.readline()  # ready: the socket is bound
        token = "rc-" + "ab" * 12
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            with pytest.raises(smtplib.SMTPRecipientsRefused):
                client.sendmail("", ["someone@elsewhere.test"], b"Subject: x\r\n\r\nx\r\n")
            client.sendmail("", [CONFIRM], f"X-Relaycheck-Token: {token}\r\nSubject: t\r\n\r\nbody\r\n".encode())
        assert proc.stdout.readline().startswith(token)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
